"""Peak memory on every platform: /proc on Linux, ru_maxrss in the unit the platform uses, nothing needed on Windows."""

import sys
from pathlib import Path

import pytest

from graft import memory

resource = pytest.importorskip("resource", reason="ru_maxrss is a Unix figure")


def ru_maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.parametrize(("platform", "unit"), [("darwin", 1 << 20), ("linux", 1 << 10)])
def test_without_proc_ru_maxrss_is_read_in_the_platform_s_unit(
    platform: str, unit: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS gives bytes, Linux and the BSDs KiB: the same figure must come out in MiB on both."""
    monkeypatch.setattr(memory, "PROC_STATUS", tmp_path / "no-proc")
    before = ru_maxrss()
    monkeypatch.setattr(sys, "platform", platform)
    peak = memory.peak_memory_mb()
    monkeypatch.undo()
    assert before / unit <= peak <= ru_maxrss() / unit


@pytest.mark.skipif(not memory.PROC_STATUS.is_file(), reason="no /proc/self/status here")
def test_linux_reads_vmhwm_from_proc() -> None:
    kib = next(int(line.split()[1]) for line in memory.PROC_STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
    assert memory.peak_memory_mb() >= kib / 1024 > 0


def test_windows_never_imports_resource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``resource`` does not exist on Windows: the Windows path must not touch it (here: no windll either, so 0.0)."""
    monkeypatch.setattr(memory, "PROC_STATUS", tmp_path / "no-proc")
    monkeypatch.setitem(sys.modules, "resource", None)  # importing it now raises ImportError
    monkeypatch.setattr(sys, "platform", "win32")
    assert memory.peak_memory_mb() == 0.0

"""Names that look like rich markup ([bold], [/x]) print as themselves and never stop a command."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graft.console import log, warn
from tests.conftest import make_shapes

REPO = Path(__file__).resolve().parents[1]


def test_log_and_warn_print_text_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    log("[/x] closes nothing, [bold] opens nothing")
    warn("cannot read [/x].png")
    assert capsys.readouterr().err == "[/x] closes nothing, [bold] opens nothing\nwarning: cannot read [/x].png\n"


def test_fit_on_folders_named_like_markup(tmp_path: Path) -> None:
    """Class folders ``[bold]`` and ``[`` (whose image ``x]bad.png`` makes the path ``[/x]bad.png``), run and cache under ``[/x]``."""
    data = make_shapes(tmp_path / "data")
    shutil.move(data / "bar", data / "[bold]")
    shutil.move(data / "cross", data / "[")
    (data / "[" / "x]bad.png").write_bytes(b"not an image")
    (data / "[red]").mkdir()
    out, home = tmp_path / "[" / "x]run", tmp_path / "[" / "x]home"
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRAFT_HOME": str(home)}
    args = [sys.executable, "-m", "graft", "fit", str(data), "--backbone", "smallcnn", "--epochs", "1", "--out", str(out), "--json"]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("warning: skipped 1 unreadable image(s): [/x]bad.png") for line in lines), result.stderr
    assert "warning: ignored class folder(s) without images: [red]" in lines, result.stderr
    assert any("[/x]home" in line and line.startswith("backbone features:") for line in lines), result.stderr
    assert f"report: {out / 'report.html'}" in lines, result.stderr

"""A disk that fills up while graft writes: the previous checkpoint and every finished cache entry survive whole.

Tested on a real, tiny tmpfs (mounting needs root; the tests are skipped, saying so, where it fails).
"""

import errno
import gc
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from graft.atomic import write_json
from graft.backbones import SmallCNN
from graft.data.sources import load_image_set
from graft.errors import DiskFull
from graft.features import FeatureCache
from graft.features.cache import file_hash
from graft.train.checkpoint import load_checkpoint, save_checkpoint

ENTRY_PAGES = 2  # a SmallCNN entry: 1,152 float32 and a header, two 4 KiB pages of tmpfs


def mounted(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``folder``, unmounted afterwards; skipped, saying why, where mounting fails."""
    folder.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {made.stderr.strip()}")
    try:
        yield folder
    finally:
        gc.collect()  # a tensor still mapped from a file there keeps the file system busy
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system of its own."""
    yield from mounted(tmp_path / "disk", "1m")


@pytest.fixture
def run_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB file system: room for a small CNN's run and two checkpoints (about 6 MB each), not much more."""
    yield from mounted(tmp_path / "disk", "32m")


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with one file, then free ``leave`` bytes of it; the file, to free the rest later."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as fh:
        try:
            while fh.write(bytes(1 << 16)):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


def test_a_full_disk_keeps_the_previous_checkpoint(disk: Path) -> None:
    path = disk / "checkpoint.safetensors"
    first = {"epoch": 1, "weights": torch.arange(16, dtype=torch.float32)}
    save_checkpoint(path, first)
    fill(disk)
    with pytest.raises(DiskFull, match=rf"cannot write {path}: the disk is full"):
        save_checkpoint(path, {"epoch": 2, "weights": torch.randn(100_000)})
    kept = load_checkpoint(path)
    assert kept["epoch"] == 1 and torch.equal(kept["weights"], first["weights"])
    assert leftovers(disk) == []


def test_a_full_disk_keeps_the_previous_json(disk: Path) -> None:
    path = disk / "result.json"
    write_json(path, {"accuracy": 0.9})
    fill(disk)
    with pytest.raises(DiskFull, match="result.json: the disk is full"):
        write_json(path, {"rows": ["x" * 1000] * 1000})
    assert path.read_text() == '{\n  "accuracy": 0.9\n}' and leftovers(disk) == []


def test_a_full_disk_keeps_every_finished_cache_entry(disk: Path, shapes: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = SmallCNN().eval()
    samples = load_image_set(shapes).samples
    expected, _ = FeatureCache(backbone, "fp32", root=tmp_path / "roomy").features(shapes, samples, batch_size=16)
    cache = FeatureCache(backbone, "fp32", root=disk / "cache")
    filler = fill(disk, leave=5 * ENTRY_PAGES * 4096)
    with pytest.raises(DiskFull, match="the disk is full"):
        cache.fill(shapes, samples, batch_size=16)
    written = sorted(cache.folder.rglob("*.npy"))
    assert 1 <= len(written) < len(samples) and leftovers(disk) == []
    assert all(cache._complete(path.stem) for path in written)
    order = [file_hash(shapes / path) for path, _ in samples]
    for path in written:
        np.testing.assert_allclose(np.load(path, allow_pickle=False), expected[order.index(path.stem)].numpy(), rtol=1e-5, atol=1e-6)
    filler.unlink()  # space again: the next pass computes only what is missing
    again = FeatureCache(backbone, "fp32", root=disk / "cache")
    features, _ = again.features(shapes, samples, batch_size=16)
    assert (again.hits, again.misses) == (len(written), len(samples) - len(written))
    assert torch.allclose(features, expected, rtol=1e-5, atol=1e-6) and leftovers(disk) == []


def test_a_fit_that_fills_the_disk_stops_with_one_line_and_resumes(run_disk: Path, shapes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up during the second epoch: the fit stops saying so and how to resume; freed, it resumes to the end."""
    from graft import api
    from graft.train import trainer

    real, epochs, filler = trainer.train_epoch, {"n": 0}, []

    def epoch_that_fills_the_disk(*args, **kwargs):
        epochs["n"] += 1
        if epochs["n"] == 2:
            filler.append(fill(run_disk))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", epoch_that_fills_the_disk)
    out = run_disk / "run"
    with pytest.raises(DiskFull, match=f"the disk is full.*continue with: graft resume {out}"):
        api.fit(str(shapes), backbone="smallcnn", strategy="scratch", epochs=3, batch_size=16, out=out, report=False)
    assert load_checkpoint(out / "checkpoint.safetensors")["progress"]["epoch"] == 1 and not leftovers(out)
    filler[0].unlink()
    monkeypatch.setattr(trainer, "train_epoch", real)
    run = api.resume(out)
    assert [r["epoch"] for r in run.history] == [1, 2, 3] and (out / "model.safetensors").is_file()

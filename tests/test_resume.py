"""Checkpoints and resuming: a run stopped at any instant continues to the same weights and metrics."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from graft import api
from graft.errors import GraftError, Interrupted
from graft.model import GraftModel
from graft.strategies import STRATEGIES
from graft.strategies.base import Phase, Strategy, group
from graft.train import trainer
from graft.train.checkpoint import CHECKPOINT
from graft.train.settings import TrainSettings
from tests.conftest import make_shapes
from tests.test_cli import assert_user_error, graft

SETTINGS = TrainSettings(epochs=3, batch_size=16, patience=5)


class HeadThenAll(Strategy):
    """Two phases with different parameter groups: the case where resuming can lose the groups."""

    name = "head-then-all"
    summary = "head alone, then everything"

    def phases(self, model: GraftModel, settings: TrainSettings) -> list[Phase]:
        every = [group([model.backbone], settings.lr * 0.1), group([model.head], settings.lr)]
        return [Phase("head", [group([model.head], settings.lr)], 2), Phase("all", every, 2)]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def metrics(run: Path) -> list[dict]:
    """Every metrics.jsonl field except the wall-clock seconds."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(resumed: Path, reference: Path) -> None:
    a, b = weights(resumed), weights(reference)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert metrics(resumed) == metrics(reference)
    result, expected = (json.loads((run / "result.json").read_text()) for run in (resumed, reference))
    assert {k: result[k] for k in ("test_accuracy", "test_loss", "epochs")} == {
        k: expected[k] for k in ("test_accuracy", "test_loss", "epochs")
    }
    assert not (resumed / CHECKPOINT).exists()  # a finished run keeps its model, not the checkpoint


def crash_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Make the ``calls``-th training epoch raise KeyboardInterrupt halfway, as Ctrl-C would."""
    real, count = trainer.train_epoch, {"n": 0}

    def epoch(module, batches, *args):
        count["n"] += 1
        if count["n"] == calls:
            next(iter(batches))
            raise KeyboardInterrupt
        return real(module, batches, *args)

    monkeypatch.setattr(trainer, "train_epoch", epoch)


@pytest.mark.parametrize(
    ("strategy", "augment", "crash"),
    [
        ("frozen", "none", 2),  # the head trains on backbone features computed once: recomputed on resume
        ("full", "light", 3),  # augmentation draws from the global RNG, restored from the checkpoint
        ("head-then-all", "none", 3),  # stopped in the second phase: its groups and frozen layers come back
        ("head-then-all", "none", 2),  # stopped right after the first phase's last checkpoint
    ],
)
def test_interrupted_fit_resumes_to_identical_weights(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str, augment: str, crash: int
) -> None:
    monkeypatch.setitem(STRATEGIES, HeadThenAll.name, HeadThenAll)
    settings = TrainSettings(epochs=3, batch_size=16, patience=5, augment=augment, head="mlp")  # mlp: dropout draws too
    api.fit(str(shapes), strategy=strategy, settings=settings, out=tmp_path / "reference")
    with monkeypatch.context() as patch:
        crash_after(patch, crash)
        with pytest.raises(Interrupted, match=f"continue with: graft resume {tmp_path / 'run'}"):
            api.fit(str(shapes), strategy=strategy, settings=settings, out=tmp_path / "run")
    assert (tmp_path / "run" / CHECKPOINT).is_file() and len(metrics(tmp_path / "run")) == crash - 1
    api.resume(tmp_path / "run")
    assert_same_run(tmp_path / "run", tmp_path / "reference")


def test_resume_refuses_other_options_and_finished_runs(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        crash_after(patch, 2)
        with pytest.raises(Interrupted):
            api.fit(str(shapes), strategy="full", settings=SETTINGS, out=tmp_path / "run")
    with pytest.raises(GraftError, match="was started with strategy 'full', not 'scratch'"):
        api.fit(str(shapes), strategy="scratch", settings=SETTINGS, out=tmp_path / "run", resume=True)
    api.fit(str(shapes), strategy="full", settings=SETTINGS, out=tmp_path / "run", resume=True)  # same options: fine
    with pytest.raises(GraftError, match="has finished already"):
        api.resume(tmp_path / "run")
    with pytest.raises(GraftError, match="no checkpoint"):
        api.resume(tmp_path / "nowhere")


def test_interrupt_in_the_first_epoch_says_there_is_nothing_to_resume(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_after(monkeypatch, 1)
    with pytest.raises(Interrupted, match="before the first epoch finished"):
        api.fit(str(shapes), strategy="full", settings=SETTINGS, out=tmp_path / "run")


def wait_for(predicate, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never got that far"
        time.sleep(0.02)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """A real ``python -m graft fit`` killed with SIGKILL in its second epoch, then ``graft resume``."""
    data = make_shapes(tmp_path / "shapes", per_class=30)
    args = ["fit", str(data), "--strategy", "full", "--augment", "light", "--epochs", "3", "--batch-size", "8"]
    reference = graft(*args, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "graft", *args, "--out", str(run)], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: lines(run / "metrics.jsonl") >= 1, process)  # epoch 1 is checkpointed; epoch 2 has begun
    time.sleep(json.loads((run / "metrics.jsonl").read_text())["seconds"] / 2)  # about halfway through epoch 2
    process.kill()
    process.wait()
    assert not (run / "result.json").exists(), "the run finished before it could be killed; give it more data"
    resumed = graft("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming all phase after epoch" in resumed.stderr
    assert_same_run(run, tmp_path / "reference")


@pytest.mark.slow
def test_sigkill_with_workers_and_augmentation_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """Augmentation in DataLoader workers: the resumed epochs must draw what the uninterrupted run's drew."""
    data = make_shapes(tmp_path / "shapes", per_class=12)
    args = [
        "fit",
        str(data),
        "--backbone",
        "smallcnn",
        "--strategy",
        "full",
        "--augment",
        "light",
        "--workers",
        "2",
        "--epochs",
        "3",
        "--batch-size",
        "8",
    ]
    reference = graft(*args, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "graft", *args, "--out", str(run)], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: lines(run / "metrics.jsonl") >= 1, process)  # epoch 1 is checkpointed
    process.kill()
    process.wait()
    assert not (run / "result.json").exists(), "the run finished before it could be killed; give it more data"
    resumed = graft("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, tmp_path / "reference")


@pytest.mark.slow
def test_ctrl_c_writes_nothing_half_and_prints_how_to_resume(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", per_class=30)
    run = tmp_path / "run"
    args = ["fit", str(data), "--strategy", "full", "--epochs", "30", "--batch-size", "8", "--out", str(run)]
    process = subprocess.Popen([sys.executable, "-m", "graft", *args], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: lines(run / "metrics.jsonl") >= 1, process, timeout=600)  # generous: CI machines are shared
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert (
        stderr.strip().splitlines()[-1]
        == f"interrupted; every finished epoch is saved in {run / CHECKPOINT}; continue with: graft resume {run}"
    )
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]
    assert_user_error(graft("fit", str(data), "--out", str(run), "--resume"), "was started with strategy 'full', not 'frozen'")

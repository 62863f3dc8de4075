"""Several processes through torch's elastic launcher (``graft fit --nproc 2``: gloo on the loopback) against one."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import graft
from graft.errors import GraftError
from graft.interrupt import deferred_interrupts
from graft.train.checkpoint import CHECKPOINT, load_checkpoint
from tests.conftest import make_shapes
from tests.test_cli import assert_user_error
from tests.test_cli import graft as cli
from tests.test_resume import lines, wait_for

DIGITS = ["digits", "--classes", "7-9", "--backbone", "smallcnn", "--batch-size", "16", "--no-report"]


def graft_with(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m graft ARGS`` with its own feature cache under ``home``."""
    env = {**os.environ, "GRAFT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "graft", *args], capture_output=True, text=True, timeout=600, check=False, env=env)


@pytest.mark.slow
def test_two_processes_train_like_one_and_their_run_is_like_any_other(tmp_path: Path) -> None:
    """Same split, same global batch, same seed: DDP over 2 ranks lands within a point of 1 process."""
    args = ["fit", *DIGITS, "--strategy", "scratch", "--epochs", "2", "--json"]
    one = cli(*args, "--out", str(tmp_path / "one"))
    two = cli(*args, "--out", str(tmp_path / "two"), "--nproc", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0 and "Traceback" not in two.stderr, two.stderr
    assert json.loads(two.stdout)["run_dir"] == str(tmp_path / "two")  # one result printed, by rank 0
    assert two.stderr.count("scratch/all epoch 2/2") == 1  # rank 0 alone talks
    assert (tmp_path / "one" / "split.json").read_text() == (tmp_path / "two" / "split.json").read_text()
    run_one, run = graft.load(tmp_path / "one"), graft.load(tmp_path / "two")
    assert run.test_accuracy > 0.8
    assert abs(run.test_accuracy - run_one.test_accuracy) <= 0.01
    assert [r["epoch"] for r in run.history] == [1, 2]  # metrics.jsonl written once
    evaluation = run.evaluate()  # every test image counted once: the same figure from one process
    assert evaluation.scores.images == len(json.loads((run.path / "split.json").read_text())["test"])
    assert evaluation.accuracy == pytest.approx(run.test_accuracy)
    images = sorted((Path(json.loads((run.path / "split.json").read_text())["root"]) / "8").iterdir())[:4]
    assert sum(p.label == "8" for p in run.predict(images)) >= 3
    assert Path(run.export("torchscript")["model"]).is_file()
    assert not (run.path / CHECKPOINT).exists()


@pytest.mark.slow
def test_two_processes_fill_the_feature_cache_with_the_entries_one_process_makes(tmp_path: Path) -> None:
    """The images split across ranks, each writing its entries: the same files as one process, the same solved head."""
    data = make_shapes(tmp_path / "shapes", per_class=20)
    args = ["fit", str(data), "--backbone", "smallcnn", "--strategy", "features", "--no-report", "--json"]
    one = graft_with(tmp_path / "home-one", *args, "--out", str(tmp_path / "one"))
    two = graft_with(tmp_path / "home-two", *args, "--out", str(tmp_path / "two"), "--nproc", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0 and "Traceback" not in two.stderr, two.stderr
    entries = {home: sorted(p.relative_to(home) for p in home.rglob("*.npy")) for home in (tmp_path / "home-one", tmp_path / "home-two")}
    split = json.loads((tmp_path / "two" / "split.json").read_text())
    assert len(entries[tmp_path / "home-one"]) == len(split["train"]) + len(split["val"])  # test images go through the whole model
    assert entries[tmp_path / "home-one"] == entries[tmp_path / "home-two"]
    for entry in entries[tmp_path / "home-one"]:
        a, b = np.load(tmp_path / "home-one" / entry), np.load(tmp_path / "home-two" / entry)
        np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2)  # bf16 where the CPU has it: batches of another size
    assert json.loads(two.stdout)["test_accuracy"] == pytest.approx(json.loads(one.stdout)["test_accuracy"], abs=0.01)


def test_two_independent_processes_filling_the_same_cache_leave_it_whole(tmp_path: Path) -> None:
    """No process group: two extractions of the same images at once, every entry written whole (unique temporary names)."""
    data = make_shapes(tmp_path / "shapes", per_class=10)
    script = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from graft.backbones.smallcnn import SmallCNN\n"
        "from graft.features import FeatureCache\n"
        "torch.manual_seed(0)\n"
        "root = Path(sys.argv[1])\n"
        "samples = sorted((str(p.relative_to(root)), 0) for p in root.rglob('*.png'))\n"
        "features, _ = FeatureCache(SmallCNN(), 'fp32').features(root, samples, batch_size=4)\n"
        "torch.save(features, sys.argv[2])\n"
    )
    env = {**os.environ, "GRAFT_HOME": str(tmp_path / "home")}
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(data), str(tmp_path / f"{i}.pt")], env=env, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for process in runs:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    first, second = (torch.load(tmp_path / f"{i}.pt") for i in range(2))
    assert torch.equal(first, second) and len(first) == 30
    names = [p.name for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert sum(n.endswith(".npy") for n in names) == 30 and not [n for n in names if n.endswith(".tmp")]


@pytest.mark.slow
def test_ctrl_c_stops_every_process_with_one_line_and_another_process_count_resumes(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", per_class=30)
    run = tmp_path / "run"
    args = ["fit", str(data), "--backbone", "smallcnn", "--strategy", "full", "--epochs", "30", "--batch-size", "8", "--no-report"]
    process = subprocess.Popen([sys.executable, "-m", "graft", *args, "--out", str(run), "--nproc", "2"], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: lines(run / "metrics.jsonl") >= 1, process)
    process.send_signal(signal.SIGINT)  # to the launcher, as a terminal's Ctrl-C: it passes the signal on to every rank
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert (
        stderr.strip().splitlines()[-1]
        == f"interrupted; every finished epoch is saved in {run / CHECKPOINT}; continue with: graft resume {run}"
    )
    state = load_checkpoint(run / CHECKPOINT)  # no map_location: the checkpoint holds CPU tensors only
    assert {t.device.type for t in state["model"].values()} == {"cpu"}
    resumed = cli("resume", str(run))  # one process now
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming all phase after epoch" in resumed.stderr
    assert graft.load(run).test_accuracy > 0.5


def test_a_missing_accelerator_is_one_line_before_any_process_starts(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = cli("fit", *DIGITS, "--device", "cuda", "--nproc", "2", "--out", str(tmp_path / "r"))
    assert_user_error(result, "--device cuda: this machine has no CUDA device")
    assert not (tmp_path / "r").exists()
    assert_user_error(cli("fit", *DIGITS, "--nproc", "0"), "--nproc 0 is out of range")


def test_a_failure_after_ctrl_c_is_the_interrupt_but_a_user_error_stays_one() -> None:
    """A rank whose peer stopped on Ctrl-C sees its next collective fail: that is the interrupt, not a bug."""
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        raise RuntimeError("[gloo] Connection reset by peer")
    with pytest.raises(GraftError), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        raise GraftError("the disk is full")
    with pytest.raises(RuntimeError), deferred_interrupts():
        raise RuntimeError("a bug, no Ctrl-C")

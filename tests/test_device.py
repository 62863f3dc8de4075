"""--device: accelerators this machine lacks are one line before any work; runs and checkpoints are device-free.

The machine running these tests may have no GPU: the training, inference and saving code is device-generic
(every batch follows the model), so the CPU runs here go through the same lines a GPU run does, and the
cases that need an accelerator are refused the way a user without one would see it.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import graft
from graft import api
from graft.device import check_device, module_device, parse_device, resolve_device
from graft.errors import GraftError, Interrupted
from graft.inference import autocast, grad_scaler, resolve
from graft.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from graft.train.settings import TrainSettings
from tests.test_cli import assert_user_error
from tests.test_cli import graft as cli
from tests.test_resume import crash_after

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple MPS device")
FAST = {"backbone": "smallcnn", "strategy": "full", "epochs": 2, "batch_size": 16, "report": False}


def fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Make torch report ``count`` CUDA devices: the checks that depend on a GPU machine, without one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_device_names_are_checked_for_form_and_against_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_device("cpu") == torch.device("cpu")
    assert parse_device("auto") is None and parse_device("cuda:3") == torch.device("cuda", 3)  # form only: a saved run's device
    for name in ("tpu", "CPU", "cuda:", "cuda:x", "mps:0", "", 5, None):
        with pytest.raises(GraftError, match="unknown --device .*; choose auto, cpu, cuda, cuda:N, mps"):
            check_device(name)
    fake_cuda(monkeypatch, 2)
    assert check_device("auto") == torch.device("cuda") and check_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(
        GraftError, match=r"--device cuda:3: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1; use --device cpu or auto"
    ):
        check_device("cuda:3")
    with pytest.raises(GraftError, match="--precision int8 runs on the CPU only"):  # PT2E int8 is x86 oneDNN's
        TrainSettings(precision="int8", device="cuda").validate()
    with pytest.raises(GraftError, match="--precision int8 runs on the CPU only"):  # auto picks the GPU here
        TrainSettings(precision="int8").validate()
    TrainSettings(precision="int8", device="cpu").validate()


@NO_CUDA
@NO_MPS
def test_on_a_machine_without_accelerators_auto_is_the_cpu_and_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert capsys.readouterr().err == ""  # CPU output stays as it was
    with pytest.raises(GraftError, match=r"--device cuda:3: this machine has no CUDA device \(torch.cuda.is_available\(\) is False\)"):
        resolve_device("cuda:3")
    with pytest.raises(GraftError, match=r"--device mps: this machine has no Apple MPS device"):
        resolve_device("mps")


def test_each_device_has_its_precision_and_the_cpu_keeps_its_own() -> None:
    assert resolve("auto", "cpu") == resolve("auto") and resolve("int8", "cpu") == "int8"
    assert resolve("auto", "mps") == "fp16"  # MPS autocast computes fp16; bf16 only on macOS 14 and later
    assert resolve("auto", "cuda") == (
        "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    )
    assert resolve("fp32", "cuda") == "fp32" and resolve("bf16", "mps") == "bf16"
    with pytest.raises(GraftError, match="--precision int8 runs on the CPU only, not on cuda; add --device cpu"):
        resolve("int8", "cuda")
    with autocast("auto"):  # the CPU default, as every caller before devices used it
        assert torch.is_autocast_enabled("cpu") == (resolve("auto") == "bf16")
    assert not grad_scaler("auto", torch.device("cpu")).is_enabled()  # no loss scaling on the CPU: steps as before
    assert module_device(torch.nn.ReLU()) == torch.device("cpu") and module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")


@NO_CUDA
@NO_MPS
def test_an_accelerator_this_machine_lacks_is_one_line_before_any_work(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("fit", str(shapes), "--backbone", "smallcnn", "--device", "cuda", "--out", str(out))
    assert_user_error(
        result, "--device cuda: this machine has no CUDA device (torch.cuda.is_available() is False); use --device cpu or auto"
    )
    assert_user_error(cli("fit", str(shapes), "--device", "mps", "--out", str(out)), "--device mps: this machine has no Apple MPS device")
    assert_user_error(
        cli("predict", str(tmp_path / "nowhere"), str(shapes), "--device", "cuda:1"), "--device cuda:1: this machine has no CUDA device"
    )
    assert not out.exists()
    with pytest.raises(GraftError, match="unknown --device 'tpu'"):
        graft.fit(str(shapes), out=out, device="tpu")
    assert not out.exists()


def cpu_tensors(path: Path) -> dict[str, torch.device]:
    """Every tensor of a safetensors file as safetensors loads it when asked for no device."""
    with safe_open(str(path), framework="pt") as fh:
        return {name: fh.get_tensor(name).device for name in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)


@NO_CUDA
@NO_MPS
def test_a_run_made_on_a_gpu_is_loaded_continued_and_used_on_a_machine_without_one(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint and the run directory hold CPU tensors only; a saved device this machine lacks is no obstacle
    to loading, predicting, evaluating or exporting, and resuming says how to continue on the CPU."""
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        crash_after(patch, 2)
        with pytest.raises(Interrupted):
            graft.fit(str(shapes), out=run, device="cpu", **FAST)
    tensors = cpu_tensors(run / CHECKPOINT)
    assert tensors and set(tensors.values()) == {torch.device("cpu")}
    state = load_checkpoint(run / CHECKPOINT)
    assert state["config"]["settings"]["device"] == "cpu" and state["scaler"] == {}  # no loss scaling on the CPU
    state["config"]["settings"]["device"] = "cuda"  # as if started on a GPU machine
    save_checkpoint(run / CHECKPOINT, state)

    assert_user_error(cli("resume", str(run)), "--device cuda: this machine has no CUDA device")
    resumed = api.resume(run, device="cpu")
    assert resumed.config.settings.device == "cpu" and [r["epoch"] for r in resumed.history] == [1, 2]
    weights = cpu_tensors(run / "model.safetensors")
    assert weights and set(weights.values()) == {torch.device("cpu")}

    config = json.loads((run / "config.json").read_text())
    config["fit"]["settings"]["device"] = "cuda"  # a finished run made on a GPU machine
    (run / "config.json").write_text(json.dumps(config))
    loaded = graft.load(run)
    assert loaded.config.settings.device == "cuda"  # what it was made with, as it was saved
    assert loaded.evaluate(device="cpu").accuracy == pytest.approx(loaded.test_accuracy)
    assert len(loaded.predict(shapes / "ring", device="auto")) == 20
    assert Path(loaded.export("torchscript")["model"]).is_file()


@pytest.mark.slow
def test_cpu_and_auto_train_alike_on_a_machine_without_accelerators(shapes: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("auto picks an accelerator on this machine")
    outcomes, configs = {}, {}
    for device in ("cpu", "auto"):
        out = tmp_path / device
        args = ["fit", str(shapes), "--backbone", "smallcnn", "--strategy", "full", "--epochs", "2", "--batch-size", "16", "--no-report"]
        result = cli(*args, "--device", device, "--out", str(out), "--json")
        assert result.returncode == 0, result.stderr
        assert "device" not in result.stderr  # nothing said about devices on the CPU
        outcomes[device] = json.loads(result.stdout)
        configs[device] = json.loads((out / "config.json").read_text())
        assert configs[device]["fit"]["settings"].pop("device") == device
    assert outcomes["cpu"]["test_accuracy"] == outcomes["auto"]["test_accuracy"]
    assert outcomes["cpu"]["test_loss"] == outcomes["auto"]["test_loss"]
    assert configs["cpu"] == configs["auto"]

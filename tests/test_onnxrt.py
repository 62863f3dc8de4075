"""ONNX Runtime passes (graft.onnxrt) where the CPU computes in fp32: eager fp32's outputs, chosen by measurement.

Whether this machine has native bf16 or not, the tests make the runner believe it has none
(``native_bf16``), so the same lines run on every CPU the suite meets.
"""

from collections.abc import Callable

import pytest
import torch

from graft import inference, onnxrt
from graft.inference import forward_all, prepare, to_channels_last
from tests.test_inference import LONG, _drive, _odd_batches, _smallcnn
from tests.test_timm_backbones import tiny


@pytest.mark.parametrize("make", [lambda: _smallcnn((1,))[0], lambda: tiny("tf_efficientnet_lite0")], ids=["smallcnn", "lite0"])
def test_an_onnxruntime_copy_computes_what_eager_fp32_computes(make: Callable[[], torch.nn.Module]) -> None:
    """Built on one batch size, it runs any other (the batch dimension is free), to fp32's rounding."""
    torch.manual_seed(0)
    module = prepare(make()).eval()
    batches = _odd_batches(module, (4, 7, 1))
    run = onnxrt.session(module, to_channels_last(batches[0][0]))
    for inputs, _ in batches:
        with torch.inference_mode():
            expected = module(to_channels_last(inputs))
        outputs = run(to_channels_last(inputs))
        assert outputs.dtype == torch.float32 and outputs.shape == expected.shape
        torch.testing.assert_close(outputs, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture
def fp32_cpu(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A CPU without native bf16 (auto computes in fp32) and ONNX Runtime's threshold at 0 s of eager work; the
    batch sizes ONNX Runtime copies were built on (the real exporter runs), then the sizes each copy ran."""
    monkeypatch.setattr(inference, "native_bf16", lambda: False)
    monkeypatch.setattr(inference, "ONNXRUNTIME_AFTER_SECONDS", 0.0)
    monkeypatch.setenv("GRAFT_COMPILE", "auto")
    built: list[int] = []
    real = onnxrt.session

    def session(module: torch.nn.Module, example: torch.Tensor):
        built.append(example.shape[0])
        network = real(module, example)

        def run(x: torch.Tensor) -> torch.Tensor:
            built.append(x.shape[0])
            return network(x)

        return run

    monkeypatch.setattr(onnxrt, "session", session)
    return built


def test_auto_runs_a_pass_through_onnxruntime_where_the_cpu_computes_in_fp32(
    fp32_cpu: list[int], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first batch predicts the pass; the second builds the copy, whose outputs follow eager fp32."""
    backbone, batches = _smallcnn((4,) * 5 + (3,))
    eager, _ = forward_all(backbone, batches, "fp32")
    assert fp32_cpu == []  # --precision fp32 asks for plain eager torch
    outputs, fast = _drive(backbone, batches, len(batches), "auto")
    assert fp32_cpu[:2] == [4, 4] and fast[:3] == [False, True, True]  # built and run on the 2nd; judged on the 4th
    assert "this pass runs through ONNX Runtime" in capsys.readouterr().err
    torch.testing.assert_close(outputs, eager, rtol=1e-4, atol=1e-5)


def test_a_short_last_batch_runs_through_onnxruntime_unpadded(fp32_cpu: list[int]) -> None:
    """Its batch dimension is free: the last 3 images cost 3 images' work, not a padded batch of 4."""
    backbone, batches = _smallcnn((4, 4, 3))
    eager, _ = forward_all(backbone, batches, "fp32")
    outputs, fast = _drive(backbone, batches, len(batches), "auto")
    assert fast == [False, True, True] and fp32_cpu == [4, 4, 3]  # built on the 2nd batch, which it ran; then 3 images
    torch.testing.assert_close(outputs, eager, rtol=1e-4, atol=1e-5)


def test_a_long_pass_waits_for_warm_batches_and_tries_int8_first(fp32_cpu: list[int], capsys: pytest.CaptureFixture[str]) -> None:
    """Where the first batch predicts a long pass, the third decides, and int8 (faster still) goes first."""
    backbone, batches = _smallcnn((4,) * 5)
    _, fast = _drive(backbone, batches, LONG, "auto")
    assert fast[:4] == [False, False, False, True]
    assert "int8 network for this pass" in capsys.readouterr().err and fp32_cpu == []  # the small CNN's int8 agrees


def test_a_medium_pass_whose_first_batch_looked_long_tries_int8_only_where_no_onnxruntime_copy_is_the_alternative(
    fp32_cpu: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold first batch predicting a long pass, the warm ones a medium one (past INT8_AFTER_SECONDS, short of
    COMPILE_AFTER_SECONDS): where the pass computes in fp32 the ONNX Runtime copy, built in a second or two, is
    taken on the 4th batch rather than an int8 build that would not repay itself; in bf16, int8 is tried."""
    predicted = {1: 1e6, 3: 60.0}  # seconds of eager work left after the 1st and after the 3rd batch
    monkeypatch.setattr(inference._Runner, "_eager_left", lambda runner: predicted.get(runner.done, 0.0))
    monkeypatch.setattr(inference, "COMPILE_AFTER_SECONDS", 180.0)
    monkeypatch.setattr(inference, "INT8_AFTER_SECONDS", 30.0)
    monkeypatch.setattr(inference, "_INT8_REJECTED", set())
    monkeypatch.setattr(inference, "AGREEMENT", -1.0)  # whatever the random weights give, an int8 copy is kept
    calls, real = [], inference.quantized
    monkeypatch.setattr(inference, "quantized", lambda module, x: calls.append(len(x)) or real(module, x))
    backbone, batches = _smallcnn((4,) * 5)
    assert _drive(backbone, batches, len(batches), "auto")[1] == [False, False, False, True, True]
    assert calls == [] and fp32_cpu == [4, 4, 4]  # ONNX Runtime's copy, built on the 4th batch; it ran the 4th and 5th
    monkeypatch.setattr(inference, "native_bf16", lambda: True)
    assert _drive(backbone, batches, len(batches), "auto")[1] == [False, False, False, True, True]
    assert calls == [4] and fp32_cpu == [4, 4, 4]  # in bf16 the int8 copy is the one built, no ONNX Runtime one


def test_short_passes_unknown_lengths_native_bf16_and_compile_off_stay_eager(fp32_cpu: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    backbone, batches = _smallcnn((4,) * 5)
    _drive(backbone, batches, None, "auto")  # a pass of unknown length is never predicted long enough
    monkeypatch.setattr(inference, "ONNXRUNTIME_AFTER_SECONDS", 1e9)
    _drive(backbone, batches, len(batches), "auto")
    monkeypatch.setattr(inference, "ONNXRUNTIME_AFTER_SECONDS", 0.0)
    monkeypatch.setenv("GRAFT_COMPILE", "off")
    _drive(backbone, batches, LONG, "auto")
    monkeypatch.setenv("GRAFT_COMPILE", "auto")
    monkeypatch.setattr(inference, "native_bf16", lambda: True)  # auto is bf16 there: its own fast path
    _drive(backbone, batches, len(batches), "auto")
    assert fp32_cpu == []


def test_a_network_the_exporter_cannot_take_warns_once_and_runs_eagerly(fp32_cpu: list[int], capfd: pytest.CaptureFixture[str]) -> None:
    """An operator ONNX lacks (singular values): one line on stderr, nothing on stdout (it may be --json's), eager outputs."""

    class SingularValues(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.svdvals(x.flatten(2))

    torch.manual_seed(0)
    batches = [(torch.randn(4, 3, 5, 5), torch.arange(4)) for _ in range(5)]
    module = SingularValues()
    eager, _ = forward_all(module, batches, "fp32")
    outputs, fast = _drive(module, batches, len(batches), "auto")
    assert fp32_cpu == [4] and not any(fast)
    torch.testing.assert_close(outputs, eager)
    captured = capfd.readouterr()  # the file descriptors: torch's exporter logs from C++
    warnings = [line for line in captured.err.splitlines() if "ONNX Runtime failed" in line]
    assert len(warnings) == 1 and "svdvals" in warnings[0] and "--compile off" in warnings[0]
    assert captured.out == ""

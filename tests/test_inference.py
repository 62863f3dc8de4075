"""The fast path (graft.inference): bf16 and channels-last must agree with plain fp32, and stay contained."""

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from graft import inference, quantize
from graft.data.loader import make_loader
from graft.data.sources import load_image_set
from graft.data.transforms import build_transform
from graft.errors import GraftError
from graft.features import FeatureCache
from graft.inference import _Runner, autocast, forward_all, forward_batches, prepare, resolve, to_channels_last
from graft.quantize import AGREEMENT
from graft.sources import create_backbone
from tests.test_cli import assert_user_error, graft
from tests.test_timm_backbones import tiny


def test_each_precision_computes_what_it_names(shapes: Path) -> None:
    """fp32 is plain eager fp32 (its BatchNorms folded into the convolutions: equal to rounding); bf16 rounds every
    output to bf16 yet stays close; auto is one of the two."""
    torch.manual_seed(0)
    backbone = create_backbone("smallcnn")
    images = load_image_set(shapes)
    loader = make_loader(shapes, images.samples[::6], backbone.preprocessing, batch_size=4)
    outputs = {precision: forward_all(backbone, loader, precision)[0] for precision in ("fp32", "bf16", "auto")}
    backbone.eval()
    with torch.inference_mode():
        eager = torch.cat([backbone(x) for x, _ in loader])
    torch.testing.assert_close(outputs["fp32"], eager, rtol=1e-5, atol=1e-6)
    bf16 = outputs["bf16"]
    assert bf16.dtype == torch.float32 and torch.equal(bf16, bf16.bfloat16().float())  # every value is a bf16 number
    assert not torch.equal(bf16, eager) and torch.nn.functional.cosine_similarity(bf16, eager).min() > 0.99
    assert torch.equal(outputs["auto"], outputs[resolve("auto")])  # what auto computes is what it says it resolves to
    with pytest.raises(GraftError, match="unknown precision 'fp16'; choose auto, int8, bf16, fp32"):
        resolve("fp16")


def test_bf16_features_of_real_imagenet_weights_agree_with_fp32() -> None:
    """EfficientNet-Lite0 with its ImageNet weights on photos scikit-image ships: same features, same class."""
    backbone = create_backbone("tf_efficientnet_lite0")
    transform = build_transform(backbone.preprocessing)
    photos = torch.stack(
        [transform(Image.fromarray(getattr(skdata, name)()).convert("RGB")) for name in ("coffee", "chelsea", "astronaut", "rocket")]
    )
    batches = [(photos, torch.zeros(len(photos)))]
    fp32, _ = forward_all(backbone, batches, "fp32")
    bf16, _ = forward_all(backbone, batches, "bf16")
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert torch.nn.functional.cosine_similarity(fp32, bf16).min() > 0.99
    assert not torch.equal(fp32, bf16)  # bf16 really ran: the values differ in the low bits


def test_forward_passes_restore_the_mode_and_leak_no_autocast(shapes: Path) -> None:
    backbone = tiny("resnet18")
    backbone.train()
    images = load_image_set(shapes)
    loader = make_loader(shapes, images.samples[:8], backbone.preprocessing, batch_size=4)
    for outputs, _ in forward_batches(backbone, loader, "bf16"):
        assert not torch.is_autocast_enabled("cpu"), "the caller's code between batches must not run under autocast"
        assert not torch.is_inference_mode_enabled()
        assert outputs.dtype == torch.float32
    assert backbone.training
    assert all(m.training for m in backbone.modules())


def test_the_feature_cache_keeps_precisions_apart(tmp_path: Path) -> None:
    backbone = tiny("resnet18")
    folders = {p: FeatureCache(backbone, p, root=tmp_path).folder for p in ("fp32", "bf16", "int8", "auto")}
    assert len(set(folders.values())) == 4  # auto's long passes may run in int8: fp32 or bf16 never read them
    assert FeatureCache(backbone, "auto", root=tmp_path).folder == folders["auto"]


@pytest.mark.slow
def test_fit_in_fp32_and_bf16_through_the_cli(shapes: Path, tmp_path: Path) -> None:
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        done = graft(
            "fit",
            str(shapes),
            "--backbone",
            "smallcnn",
            "--strategy",
            "scratch",
            "--epochs",
            "2",
            "--precision",
            precision,
            "--out",
            str(out),
            "--json",
        )
        assert done.returncode == 0, done.stderr
        runs[precision] = out
    fp32 = graft("predict", str(runs["fp32"]), str(shapes), "--precision", "fp32", "--format", "json")
    bf16 = graft("predict", str(runs["fp32"]), str(shapes), "--precision", "bf16", "--format", "json")
    int8 = graft("predict", str(runs["fp32"]), str(shapes), "--precision", "int8", "--format", "json")
    assert fp32.returncode == bf16.returncode == int8.returncode == 0, fp32.stderr + bf16.stderr + int8.stderr
    labels = [[row["label"] for row in json.loads(done.stdout)] for done in (fp32, bf16, int8)]
    for other in labels[1:]:  # the same predictions, bar a borderline image
        assert sum(a == b for a, b in zip(labels[0], other, strict=True)) >= 0.95 * len(labels[0])
    assert_user_error(graft("fit", str(shapes), "--precision", "fp8", "--out", str(tmp_path / "bad")), "unknown --precision 'fp8'")


def _odd_batches(backbone: torch.nn.Module, sizes: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(1)
    return [(torch.randn(n, *backbone.preprocessing.input_size), torch.arange(n)) for n in sizes]


def _smallcnn(sizes: tuple[int, ...]) -> tuple[torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A seeded small CNN (random weights) and random batches of ``sizes`` images."""
    torch.manual_seed(0)
    backbone = create_backbone("smallcnn")
    return backbone, _odd_batches(backbone, sizes)


def test_a_compiled_pass_agrees_with_eager_and_never_keeps_stale_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile on: same outputs (last batch padded and cut back), and a second pass sees changed weights."""
    backbone, batches = _smallcnn((4, 4, 3))
    monkeypatch.setenv("GRAFT_COMPILE", "off")
    eager, labels = forward_all(backbone, batches, "fp32")
    monkeypatch.setenv("GRAFT_COMPILE", "on")
    compiled, compiled_labels = forward_all(backbone, batches, "fp32")
    assert compiled.shape == eager.shape == (11, backbone.num_features)
    assert torch.equal(compiled_labels, labels)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # what a training step does between two validation passes
        for parameter in backbone.parameters():
            parameter.mul_(1.5)
    changed, _ = forward_all(backbone, batches, "fp32")
    monkeypatch.setenv("GRAFT_COMPILE", "off")
    torch.testing.assert_close(changed, forward_all(backbone, batches, "fp32")[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(changed, eager)


def _drive(
    module: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], planned: int | None, precision: str = "fp32"
) -> tuple[torch.Tensor, list[bool]]:
    """``batches`` through the runner :func:`forward_batches` uses, told that the pass has ``planned`` batches in all.

    The outputs, and after each batch whether a faster copy (compiled or int8) computes the next one: the
    choice auto makes, which outputs alone cannot show (compiled fp32 computes the very same numbers).
    Telling the runner of a billion-batch pass makes it predict a long one from its real timings.
    """
    runner = _Runner(prepare(module).eval(), planned, precision)
    outputs, fast = [], []
    for inputs, _ in batches:
        with torch.inference_mode(), autocast(precision):
            outputs.append(runner(to_channels_last(inputs)).float())
        fast.append(runner.fast is not None)
    return torch.cat(outputs), fast


LONG = 10**9  # batches in a pass: whatever a batch takes, the rest of such a pass takes longer than COMPILE_AFTER_SECONDS


def test_auto_compiles_only_passes_predicted_to_be_long(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """auto times the 2nd and 3rd batch and compiles on the 4th when the batches left would take longer than the threshold."""
    backbone, batches = _smallcnn((4,) * 6)
    monkeypatch.setenv("GRAFT_COMPILE", "off")
    eager, _ = forward_all(backbone, batches, "fp32")
    monkeypatch.setenv("GRAFT_COMPILE", "auto")
    assert _drive(backbone, batches, len(batches))[1] == [False] * 6  # a few milliseconds of work: compiling would not pay
    assert _drive(backbone, batches, None)[1] == [False] * 6  # a pass of unknown length is never predicted long
    outputs, fast = _drive(backbone, batches[:4], LONG)
    assert fast == [False, False, False, True]
    torch.testing.assert_close(outputs, eager[:16], rtol=1e-4, atol=1e-4)
    assert "int8" not in capsys.readouterr().err  # a long fp32 pass is compiled, never quantized


def test_auto_keeps_the_compiled_network_only_where_it_measures_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiling does not speed up every network: auto times two compiled batches against two eager ones.

    Real timings decide, made one-sided by the batch sizes (the compiled copy is specialised to the size of
    the batch it was built on, the 4th): 512 images against 4. The faster batch of each side is compared, so
    one stalled batch does not decide (CI once saw two eager 1-image batches outlast two compiled 256-image
    ones when their sums were compared).
    """
    torch.manual_seed(0)
    backbone = create_backbone("smallcnn")
    monkeypatch.setenv("GRAFT_COMPILE", "auto")
    for sizes, kept in (((1, 512, 512, 4, 4, 4), True), ((1, 1, 1, 512, 512, 512), False)):
        batches = _odd_batches(backbone, sizes)
        outputs, fast = _drive(backbone, batches, LONG)
        assert fast == [False, False, False, True, True, kept], sizes  # judged on the 6th batch
        monkeypatch.setenv("GRAFT_COMPILE", "off")
        torch.testing.assert_close(outputs, forward_all(backbone, batches, "fp32")[0], rtol=1e-4, atol=1e-4)
        monkeypatch.setenv("GRAFT_COMPILE", "auto")


def test_a_network_whose_int8_copy_disagreed_is_not_quantized_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quantizing and compiling costs tens of seconds on a real backbone: a long pass after one whose int8 copy
    missed the agreement bar goes straight to floating point, with the same outputs."""
    backbone, batches = _smallcnn((4,) * 5)
    monkeypatch.setenv("GRAFT_COMPILE", "auto")
    monkeypatch.setattr(inference, "AGREEMENT", 1.01)  # no int8 copy agrees that well
    monkeypatch.setattr(inference, "_INT8_REJECTED", set())
    calls, real = [], inference.quantized
    monkeypatch.setattr(inference, "quantized", lambda module, x: calls.append(len(x)) or real(module, x))
    first, _ = _drive(backbone, batches, LONG, "auto")
    second, _ = _drive(backbone, batches, LONG, "auto")
    assert len(calls) == 1  # the first long pass tried int8 and rejected it; the second did not try
    torch.testing.assert_close(first, second)


def test_a_medium_pass_tries_int8_only_on_a_network_it_is_likely_to_suit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass predicting more than INT8_AFTER_SECONDS of eager work, short of a long one, tries an int8 copy on its
    4th batch, unless the network has depthwise convolutions (lite0's int8 features never agreed): there a build
    thrown away would cost more than the pass gains. Neither is compiled: that waits for a long pass."""
    monkeypatch.setenv("GRAFT_COMPILE", "auto")
    monkeypatch.setattr(inference, "INT8_AFTER_SECONDS", 0.0)  # every pass of more than three batches is past it
    monkeypatch.setattr(inference, "COMPILE_AFTER_SECONDS", 1e9)  # and none is long
    monkeypatch.setattr(inference, "_INT8_REJECTED", set())
    monkeypatch.setattr(inference, "AGREEMENT", -1.0)  # whatever the random weights give, the int8 copy is kept
    calls, real = [], inference.quantized
    monkeypatch.setattr(inference, "quantized", lambda module, x: calls.append(len(x)) or real(module, x))
    backbone, batches = _smallcnn((4,) * 5)
    assert _drive(backbone, batches, len(batches), "auto")[1] == [False, False, False, True, True] and calls == [4]
    torch.manual_seed(0)
    depthwise = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    assert _drive(depthwise, batches, len(batches), "auto")[1] == [False] * 5 and calls == [4]
    monkeypatch.setattr(inference, "COMPILE_AFTER_SECONDS", 0.0)
    assert _drive(depthwise, batches, len(batches), "auto")[1][3] and calls == [4, 4]  # a long pass still tries it


def test_a_failed_compile_warns_once_and_the_pass_goes_on_eagerly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A machine without a C++ compiler (here: inductor pointed at one that does not exist): eager outputs, one warning."""
    backbone, batches = _smallcnn((2, 2, 1))
    monkeypatch.setenv("GRAFT_COMPILE", "on")
    with torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/c++",)}):
        outputs, _ = forward_all(backbone, batches, "fp32")
    monkeypatch.setenv("GRAFT_COMPILE", "off")
    assert torch.equal(outputs, forward_all(backbone, batches, "fp32")[0])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "torch.compile failed" in line]
    assert len(warnings) == 1 and "No working C++ compiler found" in warnings[0] and "--compile off" in warnings[0]


def test_an_unknown_compile_mode_is_a_one_line_error() -> None:
    assert_user_error(graft("--compile", "sometimes", "datasets"), "unknown compile mode 'sometimes'")


def test_an_int8_pass_follows_fp32_and_the_weights_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """--precision int8: calibrated on the pass's own images, close to fp32 (not equal), rebuilt every pass."""
    backbone, batches = _smallcnn((6, 6, 5))
    monkeypatch.setenv("GRAFT_COMPILE", "auto")
    fp32, _ = forward_all(backbone, batches, "fp32")
    int8, _ = forward_all(backbone, batches, "int8")
    assert int8.shape == fp32.shape and int8.dtype == torch.float32
    torch.testing.assert_close(int8[:6], fp32[:6])  # the first batch's outputs come from calibration and the check: fp32
    assert not torch.allclose(int8[6:], fp32[6:], rtol=1e-3, atol=1e-5)  # the rest really ran in int8
    assert torch.nn.functional.cosine_similarity(fp32, int8).min() > 0.98
    with torch.no_grad():  # what a training step does between two passes
        for parameter in backbone.parameters():
            parameter.mul_(1.5)
    changed, _ = forward_all(backbone, batches, "int8")
    assert torch.nn.functional.cosine_similarity(forward_all(backbone, batches, "fp32")[0], changed).min() > 0.98
    assert not torch.allclose(changed, int8, rtol=0.1, atol=1e-5)
    monkeypatch.setenv("GRAFT_COMPILE", "off")
    with pytest.raises(GraftError, match="--precision int8 runs through torch.compile; drop --compile off"):
        forward_all(backbone, batches, "int8")


def test_an_int8_copy_calibrates_and_checks_on_a_few_images_and_computes_the_rest_in_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch larger than twice CALIBRATION: fp32 outputs for the calibrated and the checked images, the int8 copy's
    for the rest (computed once, while compiling), and the copy runs further batches of that size."""
    monkeypatch.setattr(quantize, "CALIBRATION", 3)
    backbone, batches = _smallcnn((12, 12))
    model = prepare(backbone).eval()
    (first, _), (second, _) = batches
    first, second = to_channels_last(first), to_channels_last(second)
    with torch.inference_mode():
        fp32 = model(first), model(second)
        network, outputs, agreement = quantize.quantized(model, first)
        again = network(second).float()
    assert outputs.shape == fp32[0].shape and AGREEMENT <= agreement <= 1.0
    torch.testing.assert_close(outputs[:6], fp32[0][:6])  # 3 calibrated, 3 checked: fp32
    assert not torch.allclose(outputs[6:], fp32[0][6:], rtol=1e-3, atol=1e-5)  # the other 6: int8
    for ours, theirs in ((outputs, fp32[0]), (again, fp32[1])):
        assert torch.nn.functional.cosine_similarity(ours, theirs).min() > 0.98


def test_auto_keeps_int8_only_where_it_agrees_with_fp32(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A long pass in auto tries int8 on its fourth batch, and compiles floating point where int8 strays."""
    monkeypatch.setenv("GRAFT_COMPILE", "auto")
    backbone, batches = _smallcnn((4,) * 6)
    fp32, _ = forward_all(backbone, batches, "fp32")
    auto, fast = _drive(backbone, batches, LONG, "auto")
    assert fast[:4] == [False, False, False, True]
    agreement = re.search(r"int8 network for this pass: its outputs agree with fp32 to a cosine of ([0-9.]+)", capsys.readouterr().err)
    assert agreement and float(agreement[1]) >= AGREEMENT
    torch.testing.assert_close(auto[12:16], fp32[12:16])  # the fourth batch: calibration and check, in fp32
    assert torch.nn.functional.cosine_similarity(fp32, auto).min() > 0.98

    # One image a thousand times brighter than the rest in the calibration half: int8's one scale for the
    # whole tensor then rounds every other image to nothing.
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3), torch.nn.Flatten())
    torch.manual_seed(1)
    batches = [(torch.randn(8, 1, 12, 12), torch.arange(8)) for _ in range(6)]
    batches[3][0][0] *= 1000
    fp32, _ = forward_all(network, batches, "fp32")
    auto, fast = _drive(network, batches, LONG, "auto")
    message = r"int8 features agree with fp32 to a cosine of ([-0-9.]+) only \(below 0.99\): staying in floating point"
    stayed = re.search(message, capsys.readouterr().err)
    assert stayed and float(stayed[1]) < AGREEMENT
    assert fast[:4] == [False, False, False, True]  # a floating-point copy instead (compiled, or ONNX Runtime where auto is fp32)
    assert torch.nn.functional.cosine_similarity(fp32, auto).min() > 0.99

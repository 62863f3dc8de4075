"""The fast depthwise backward (graft.train.depthwise) gives aten's gradients, and only where it is meant to run."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graft.inference import native_bf16
from graft.model import GraftModel
from graft.sources import create_backbone
from graft.train.depthwise import _FastDepthwise, fast_depthwise, has_depthwise


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize(
    "shape, kernel, stride, padding, bias",
    [
        ((2, 8, 12, 12), 3, 1, 1, False),
        ((2, 8, 13, 13), 3, 2, 0, False),  # lite0's explicitly padded stride-2 3x3
        ((2, 8, 12, 12), 5, 1, 2, False),
        ((2, 8, 10, 11), 5, 2, 1, False),
        ((2, 8, 12, 13), 3, 2, 0, False),  # the stride leaves a row no window reaches: its gradient is zero
        ((2, 8, 112, 112), 3, 2, 1, False),  # MobileNet's stride-2 3x3 at full size
        ((2, 8, 9, 9), 7, 1, 3, True),  # ConvNeXt's 7x7 with a bias
        ((1, 4, 11, 9), (5, 3), (2, 1), (2, 1), True),  # uneven filter, stride and padding
        ((2, 8, 15, 15), 7, 2, 3, False),
        ((2, 8, 16, 16), 3, 3, 1, False),  # stride 3: nine phases
    ],
)
def test_gradients_match_fp64(shape, kernel, stride, padding, bias) -> None:
    """Each gradient is as close to the exact (fp64) one as aten's own bf16 backward is, and the mode did route it."""
    torch.manual_seed(0)
    channels = shape[1]
    conv = nn.Conv2d(channels, channels, kernel, stride, padding, groups=channels, bias=bias)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    params = [x, conv.weight] + ([conv.bias] if bias else [])

    exact_conv = nn.Conv2d(channels, channels, kernel, stride, padding, groups=channels, bias=bias).double()
    exact_conv.load_state_dict(conv.state_dict())
    x64 = x.detach().double().requires_grad_()
    exact_out = exact_conv(x64)
    upstream = torch.randn_like(exact_out)
    exact = torch.autograd.grad(exact_out, [x64, *exact_conv.parameters()], upstream)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference_out = conv(x)
    reference = torch.autograd.grad(reference_out, params, upstream.to(reference_out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16), _FastDepthwise():
        out = conv(x)
    assert type(out.grad_fn).__name__ == "_DepthwiseBackward"
    assert out.shape == reference_out.shape and out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), reference_out.float())  # the forward pass is aten's own
    fast = torch.autograd.grad(out, params, upstream.to(out.dtype))
    for mine, theirs, truth in zip(fast, reference, exact):
        assert mine.shape == truth.shape and mine.dtype == theirs.dtype
        assert _relative(mine, truth) <= 2 * _relative(theirs, truth) + 2e-3


@pytest.mark.parametrize(
    "case",
    ["fp32", "no_grad", "dense", "dilated", "pointwise_depthwise", "multiplier"],
)
def test_other_convolutions_keep_aten(case: str) -> None:
    """Outside bf16 autocast training, and for convolutions it does not cover, the mode changes nothing."""
    channels = 8
    conv = {
        "dense": nn.Conv2d(channels, channels, 3, padding=1),
        "dilated": nn.Conv2d(channels, channels, 3, padding=2, dilation=2, groups=channels),
        "pointwise_depthwise": nn.Conv2d(channels, channels, 1, groups=channels),
        "multiplier": nn.Conv2d(channels, 2 * channels, 3, padding=1, groups=channels),
    }.get(case, nn.Conv2d(channels, channels, 3, padding=1, groups=channels))
    x = torch.randn(2, channels, 10, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case != "fp32"), _FastDepthwise():
        if case == "no_grad":
            with torch.no_grad():
                out = conv(x)
        else:
            out = conv(x)
    assert out.grad_fn is None if case == "no_grad" else type(out.grad_fn).__name__ == "ConvolutionBackward0"


def test_fast_depthwise_only_for_bf16_steps_of_depthwise_networks() -> None:
    """The context is the mode exactly where the CPU trains in bf16 natively and the network has depthwise filters."""
    cpu = torch.device("cpu")
    lite0 = GraftModel(create_backbone("tf_efficientnet_lite0"), 3)
    dense = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten())
    assert has_depthwise(lite0) and not has_depthwise(dense)
    assert isinstance(fast_depthwise("bf16", cpu, lite0), _FastDepthwise) == native_bf16()
    assert not isinstance(fast_depthwise("fp32", cpu, lite0), _FastDepthwise)
    assert not isinstance(fast_depthwise("bf16", cpu, dense), _FastDepthwise)


def _count(node, name: str) -> int:
    """How many nodes called ``name`` the autograd graph below ``node`` holds."""
    seen, stack = set(), [node]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return sum(type(node).__name__ == name for node in seen)


def test_whole_network_gradients_agree() -> None:
    """One lite0 training step's gradients through the mode match aten's bf16 backward's (both against fp32)."""
    torch.manual_seed(0)
    model = GraftModel(create_backbone("tf_efficientnet_lite0"), 3).to(memory_format=torch.channels_last)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.eval()  # graft's frozen statistics: the step does not change them, so the three passes see the same network
    images = torch.randn(4, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 1, 2, 0])

    routed = 0

    def gradient(bf16: bool, fast: bool) -> torch.Tensor:
        nonlocal routed
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if fast:
                with _FastDepthwise():
                    logits = model(images)
                routed = _count(logits.grad_fn, "_DepthwiseBackward")
            else:
                logits = model(images)
        F.cross_entropy(logits.float(), labels).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    fp32, aten, fast = gradient(False, False), gradient(True, False), gradient(True, True)
    cosine = F.cosine_similarity
    assert routed == 16  # every block of lite0 has one: 3x3 and 5x5, stride 1 and 2
    assert cosine(fast, aten, dim=0) > 0.999  # the same sums in another order
    assert cosine(fast, fp32, dim=0) >= cosine(aten, fp32, dim=0) - 0.005  # bf16 alone moves both from fp32

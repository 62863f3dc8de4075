"""A faster backward for depthwise convolutions in bf16 training steps on the CPU.

EfficientNets, MobileNets, ConvNeXts and most small timm backbones are built of depthwise convolutions
(one filter per channel). On an x86 CPU with native bf16, PyTorch hands their backward to oneDNN, whose
fast depthwise kernels cover only part of it: the weight gradient of a 3x3 filter, and the input gradient
at stride 1. A 5x5 or 7x7 filter's weight gradient, and any strided input gradient, fall to oneDNN's
generic grouped kernels, which pad every one-channel group to sixteen and run 3-25x slower than the
forward pass (``benchmarks/depthwise.py``). In a `full` step of tf_efficientnet_lite0 they took 55% of
the time.

:func:`fast_depthwise` routes the training step's depthwise convolutions through :class:`_Depthwise`, whose
backward is made of the fast kernels alone, with the same sums:

- the weight gradient of a k x k filter (k >= 3) as 3x3 weight gradients over shifted windows of the
  padded input, which tile the filter (two by two tiles for 5x5, three by three for 7x7, overlapping);
- the input gradient at stride s as s x s stride-1 depthwise convolutions of the output gradient, one for
  each phase of the input's rows and columns, with the filter taps that reach that phase (the polyphase
  form of a transposed convolution).

The forward pass is PyTorch's own. Everything else (fp32, fp16, GPUs, inference, filters below 3x3,
dilation, a channel multiplier) runs as before: measured, the same rewrite is slower in fp32.
"""

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from graft.inference import floating, native_bf16
from graft.layers import is_depthwise

_CONV2D_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV2D_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _grad(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int], want: list[bool]):
    """aten's depthwise convolution backward (input, weight) for the parts ``want`` names."""
    grads = torch.ops.aten.convolution_backward(g, x, w, None, stride, padding, (1, 1), False, (0, 0), x.shape[1], want + [False])
    return grads[0], grads[1]


def _tile_starts(k: int) -> list[int]:
    """Where 3-wide windows start so that they cover 0..k-1 (overlapping where 3 does not divide k)."""
    return sorted({*range(0, k - 2, 3), k - 3})


def _weight_grad(
    g: torch.Tensor, x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> torch.Tensor:
    """The filter's gradient, 3x3 tile by tile: tile (a, b) is a 3x3 filter's gradient over the padded input shifted by (a, b)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if (kh, kw) == (3, 3):
        return _grad(g, x, x.new_empty(x.shape[1], 1, 3, 3), stride, padding, [False, True])[1]
    padded = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    span_h, span_w = (g.shape[2] - 1) * sh + 3, (g.shape[3] - 1) * sw + 3
    tile = x.new_empty(x.shape[1], 1, 3, 3)
    grad = x.new_empty(x.shape[1], 1, kh, kw)
    for a in _tile_starts(kh):
        for b in _tile_starts(kw):
            window = padded[:, :, a : a + span_h, b : b + span_w]
            grad[:, :, a : a + 3, b : b + 3] = _grad(g, window, tile, stride, (0, 0), [False, True])[1]
    return grad


def _phase(size: int, pad: int, stride: int, residue: int, length: int) -> tuple[int, int, int]:
    """Where phase ``residue`` of one dimension lands in the unpadded input: (its first value kept, that value's
    position in the input, how many are kept). The phase's values sit at padded positions ``stride * m + residue``."""
    first_kept = max(0, -((residue - pad) // stride))  # the first m whose position is past the padding
    position = stride * first_kept + residue - pad
    return first_kept, position, max(0, min(length - first_kept, -(-(size - position) // stride)))


def _input_grad(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """The input's gradient: at stride 1 aten's (fast); at stride s, phase by phase.

    Input position ``s * m + r`` (padded) receives only the filter taps ``r, r + s, ...``, so each of the
    s x s phases is a stride-1 depthwise convolution of the output gradient with that slice of the filter
    (turned half a circle, padded to a full convolution), written into every s-th row and column.
    """
    if stride == (1, 1):
        return _grad(g, x, w, stride, padding, [True, False])[0]
    (sh, sw), (ph, pw) = stride, padding
    height, width = x.shape[2:]
    kh, kw = w.shape[2:]
    if kh >= sh and kw >= sw:  # every phase has a tap: each position up to the last window's reach gets a value
        grad = torch.empty_like(x, memory_format=torch.channels_last)
        reach_h, reach_w = sh * (g.shape[2] - 1) + kh - ph, sw * (g.shape[3] - 1) + kw - pw
        grad[:, :, reach_h:].zero_()  # the rows and columns past it (the stride's remainder) get none
        grad[:, :, :, reach_w:].zero_()
    else:
        grad = _channels_last(x.new_zeros(x.shape))
    for rh in range(min(sh, kh)):
        for rw in range(min(sw, kw)):
            taps = _channels_last(w[:, :, rh::sh, rw::sw].flip(2, 3))
            phase = F.conv2d(g, taps, None, 1, (taps.shape[2] - 1, taps.shape[3] - 1), 1, x.shape[1])
            (mh, at_h, count_h), (mw, at_w, count_w) = (
                _phase(height, ph, sh, rh, phase.shape[2]),
                _phase(width, pw, sw, rw, phase.shape[3]),
            )
            if count_h and count_w:
                rows, columns = slice(at_h, at_h + sh * (count_h - 1) + 1, sh), slice(at_w, at_w + sw * (count_w - 1) + 1, sw)
                grad[:, :, rows, columns] = phase[:, :, mh : mh + count_h, mw : mw + count_w]
    return grad


class _Depthwise(torch.autograd.Function):
    """A depthwise convolution (bf16, dilation 1) whose backward runs on oneDNN's fast kernels (see the module)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int], padding: tuple[int, int]):
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, w, bias, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, w = ctx.saved_tensors
        g = _channels_last(g)
        want_x, want_w, want_bias = ctx.needs_input_grad[:3]
        grad_x = _input_grad(g, x, w, ctx.stride, ctx.padding) if want_x else None
        grad_w = _weight_grad(g, x, tuple(w.shape[2:]), ctx.stride, ctx.padding) if want_w else None
        grad_bias = g.sum((0, 2, 3)) if ctx.has_bias and want_bias else None
        return grad_x, grad_w, grad_bias, None, None


class _FastDepthwise(TorchFunctionMode):
    """Sends the depthwise ``conv2d`` calls of a bf16 training forward pass to :class:`_Depthwise`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu"):
            call = {**_CONV2D_DEFAULTS, **dict(zip(_CONV2D_ARGS, args)), **kwargs}
            x, w, groups, padding = call["input"], call["weight"], call["groups"], call["padding"]
            if (
                x.ndim == 4
                and x.device.type == "cpu"
                and groups > 1
                and tuple(w.shape[:2]) == (groups, 1)
                and x.shape[1] == groups
                and min(w.shape[2:]) >= 3
                and not isinstance(padding, str)
                and _pair(call["dilation"]) == (1, 1)
                and (x.requires_grad or w.requires_grad)
            ):
                dtype, bias = torch.get_autocast_dtype("cpu"), call["bias"]
                with torch.autocast("cpu", enabled=False):
                    return _Depthwise.apply(
                        x.to(dtype), w.to(dtype), None if bias is None else bias.to(dtype), _pair(call["stride"]), _pair(padding)
                    )
        return func(*args, **kwargs)


def has_depthwise(module: nn.Module) -> bool:
    """Whether ``module`` holds a depthwise convolution :func:`fast_depthwise` would route (filter at least 3x3)."""
    return any(is_depthwise(layer) and layer.out_channels == layer.groups and min(layer.kernel_size) >= 3 for layer in module.modules())


def fast_depthwise(precision: str, device: torch.device, module: nn.Module) -> AbstractContextManager:
    """The context a training forward pass of ``module`` runs in, beside autocast: :class:`_FastDepthwise` where
    the step computes in bf16 on a CPU that does so natively and ``module`` has depthwise convolutions, else
    nothing. Entered around the forward pass only (the backward needs no mode), so data loading never runs in it."""
    if device.type == "cpu" and floating(precision, device) == "bf16" and native_bf16() and has_depthwise(module):
        return _FastDepthwise()
    return nullcontext()

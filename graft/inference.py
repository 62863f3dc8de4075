"""The fast path of every forward pass: bf16 where the CPU computes it natively, channels-last layout.

Every strategy inherits it: feature extraction (``features``, ``frozen``, ``lpft``'s probe, ``advise``),
validation, ``predict`` and ``evaluate`` run through :func:`forward_all`, and training steps through
:func:`autocast`. ``make bench`` measures each choice against plain eager fp32 timm (the code a user
writes by hand) and ONNX Runtime; see the README's "Speed" section for the figures behind the default.

Why these two and not more: on AVX512-BF16 (and AMX) CPUs oneDNN's bf16 convolutions and matrix
products run at two to three times the fp32 rate, and channels-last is the layout they want, so the
weights are not reordered on every call. bf16 keeps fp32's exponent range, so features stay within a
cosine similarity of 0.99+ of fp32 and no loss scaling is needed in training. Where the CPU has no native
bf16 (oneDNN would emulate it, slower than fp32), ``auto`` means fp32.
"""

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from functools import cache

import torch
from torch import nn

from graft.errors import GraftError
from graft.interrupt import check

PRECISIONS = ("auto", "bf16", "fp32")


@cache  # the CPU does not change, and autocast() asks before every batch
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles): the only case where it pays."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve(precision: str) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` (auto, bf16 or fp32) means on this machine."""
    if precision not in PRECISIONS:
        raise GraftError(f"unknown precision '{precision}'; choose {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision


def autocast(precision: str) -> AbstractContextManager:
    """bf16 autocast on the CPU for ``precision`` (weights stay fp32; the optimizer steps in fp32)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=resolve(precision) == "bf16")


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in channels-last layout; anything else (cached feature vectors) as it is."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def prepare(module: nn.Module) -> nn.Module:
    """``module`` with its convolution weights in channels-last layout (in place; values unchanged).

    Saved weights are unaffected: the run directory and the checkpoints store values, not strides.
    """
    return module.to(memory_format=torch.channels_last)


def forward_batches(
    module: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], precision: str = "auto"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(outputs, labels)`` of ``module`` batch by batch, in ``eval()`` mode, outputs in fp32.

    ``eval()`` matters: BatchNorm must use its running statistics, or outputs differ between feature
    extraction and prediction (the classic "93% in training, 25% at prediction"). The module's own mode
    is restored afterwards. Batch by batch, so a caller that stores each one (the feature cache) holds one
    batch in memory, however many images there are.
    """
    was_training = module.training
    prepare(module).eval()  # outside inference mode: the parameters must stay ordinary, trainable tensors
    try:
        for inputs, targets in batches:
            check()  # Ctrl-C during training lands here or in the training loop (graft.interrupt)
            # Entered per batch, so neither leaks into the caller's code between batches.
            with torch.inference_mode(), autocast(precision):
                outputs = module(to_channels_last(inputs)).float()
            yield outputs, torch.as_tensor(targets)
    finally:
        module.train(was_training)


def forward_all(module: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`forward_batches` concatenated: ``(outputs, labels)`` over every batch."""
    outputs, labels = zip(*forward_batches(module, batches, precision), strict=True)
    return torch.cat(outputs), torch.cat(labels)

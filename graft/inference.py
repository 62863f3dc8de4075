"""The fast path of every forward pass: bf16 where the CPU computes it natively, channels-last layout,
and a compiled network for passes long enough to pay for compiling it.

Every strategy inherits it: feature extraction (``features``, ``frozen``, ``lpft``'s probe, ``advise``),
validation, ``predict`` and ``evaluate`` run through :func:`forward_all`, and training steps through
:func:`autocast`. ``make bench`` measures each choice against plain eager fp32 timm (the code a user
writes by hand) and ONNX Runtime; see the README's "Speed" section for the figures behind the default.

Why these two and not more: on AVX512-BF16 (and AMX) CPUs oneDNN's bf16 convolutions and matrix
products run at two to three times the fp32 rate, and channels-last is the layout they want, so the
weights are not reordered on every call. bf16 keeps fp32's exponent range, so features stay within a
cosine similarity of 0.99+ of fp32 and no loss scaling is needed in training. Where the CPU has no native
bf16 (oneDNN would emulate it, slower than fp32), ``auto`` means fp32.

``torch.compile`` (inductor, weights frozen into the graph: BatchNorm folded into the convolutions,
activations fused, weights pre-packed) made vgg16 1.2x and resnet50 1.1x faster again in ``make bench``
(lite0 not at all), but compiling costs 10-60 s on two cores. So a pass compiles only when its first
batches predict more than :data:`COMPILE_AFTER_SECONDS` of eager work (a feature cache of a large data
set, evaluating tens of thousands of images), and keeps the compiled network only if it measures faster;
``graft --compile on|off`` (``GRAFT_COMPILE``) forces either. Each pass
compiles afresh: frozen weights must never outlive a training step that changed them.
"""

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from functools import cache

import torch
from rich.markup import escape
from torch import nn

from graft.console import log
from graft.errors import GraftError
from graft.interrupt import check

PRECISIONS = ("auto", "bf16", "fp32")
COMPILE_MODES = ("auto", "on", "off")
COMPILE_AFTER_SECONDS = 180.0  # make bench: compiling vgg16 (13 s) repaid itself after 80 s, resnet50 (25 s) after 290 s


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


def compile_mode() -> str:
    """``auto``, ``on`` or ``off`` from ``GRAFT_COMPILE`` (an environment variable, so spawned workers see it)."""
    mode = os.environ.get("GRAFT_COMPILE", "auto")
    if mode not in COMPILE_MODES:
        raise GraftError(f"unknown compile mode '{mode}' (--compile or GRAFT_COMPILE); choose {', '.join(COMPILE_MODES)}")
    return mode


class _Runner:
    """Calls a module eagerly, and a compiled copy of it from the batch on which compiling starts to pay.

    The eager time of the second and third batch (the first warms oneDNN up) times the batches left is
    the pass's predicted eager work. Compiling does not speed every network up (on two cores lite0 gained
    nothing in ``make bench``, vgg16 1.2x), so ``auto`` times two compiled batches too and keeps whichever
    ran faster. The compiled copy is specialised to one batch size; a shorter last batch is padded with
    zeros (the module is in eval mode: images do not affect each other).
    """

    def __init__(self, module: nn.Module, batches: int | None) -> None:
        self.module, self.batches, self.mode = module, batches, compile_mode()
        self.done, self.eager_seconds, self.compiled_seconds = 0, 0.0, 0.0
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.size = 0  # the compiled batch size; set on the first attempt, so a failed compile is not retried

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is None and self._pays():
            self._compile(x)
        start = time.perf_counter()
        if self.compiled is not None and x.shape[0] <= self.size:
            padded = torch.cat([x, x.new_zeros((self.size - x.shape[0], *x.shape[1:]))]) if x.shape[0] < self.size else x
            out = self.compiled(to_channels_last(padded))[: x.shape[0]]
            self._judge(time.perf_counter() - start)
        else:
            out = self.module(x)
            if self.done in (1, 2):
                self.eager_seconds += time.perf_counter() - start
        self.done += 1
        return out

    def _judge(self, seconds: float) -> None:
        """In ``auto``, after two compiled batches: back to eager for the pass unless they beat the eager two."""
        if self.mode != "auto" or self.done > 4:
            return
        self.compiled_seconds += seconds
        if self.done == 4 and self.compiled_seconds >= self.eager_seconds:
            self.compiled = None  # the compile time is spent, but no further batch pays for a slower network

    def _pays(self) -> bool:
        if self.mode != "auto":
            return self.mode == "on" and self.size == 0
        if self.done != 3 or not self.batches:
            return False
        return self.eager_seconds / 2 * (self.batches - self.done) > COMPILE_AFTER_SECONDS

    def _compile(self, x: torch.Tensor) -> None:
        self.size = x.shape[0]
        torch._dynamo.reset()  # frozen weights of an earlier pass must not be reused: training may have changed them
        compiled = torch.compile(self.module, dynamic=False, options={"freezing": True})
        try:
            compiled(to_channels_last(x))  # compiles now, inside the caller's inference mode and autocast
        except Exception as exc:  # noqa: BLE001 (no C++ compiler, an operator inductor lacks: eager is still right, only slower)
            first = (str(exc).splitlines() or [""])[0][:120]
            log(f"[yellow]warning:[/] torch.compile failed ({type(exc).__name__}: {escape(first)}); going on without it (--compile off skips the attempt)")
            return
        self.compiled = compiled


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
    runner = _Runner(module, len(batches) if hasattr(batches, "__len__") else None)
    try:
        for inputs, targets in batches:
            check()  # Ctrl-C during training lands here or in the training loop (graft.interrupt)
            # Entered per batch, so neither leaks into the caller's code between batches.
            with torch.inference_mode(), autocast(precision):
                outputs = runner(to_channels_last(inputs)).float()
            yield outputs, torch.as_tensor(targets)
    finally:
        module.train(was_training)


def forward_all(module: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`forward_batches` concatenated: ``(outputs, labels)`` over every batch."""
    outputs, labels = zip(*forward_batches(module, batches, precision), strict=True)
    return torch.cat(outputs), torch.cat(labels)

"""The fast path of every forward pass: bf16 where the CPU computes it natively, channels-last layout,
and, for passes long enough to pay for it, an int8 or a compiled copy of the network.

Every strategy inherits it: feature extraction (``features``, ``frozen``, ``lpft``'s probe, ``advise``),
validation, ``predict`` and ``evaluate`` run through :func:`forward_all`, and training steps through
:func:`autocast`. ``make bench`` measures each choice against plain eager fp32 timm (the code a user
writes by hand) and ONNX Runtime; see docs/speed.md for the figures behind the default.

Why these two: on AVX512-BF16 (and AMX) CPUs oneDNN's bf16 convolutions and matrix
products run at two to three times the fp32 rate, and channels-last is the layout they want, so the
weights are not reordered on every call. bf16 keeps fp32's exponent range, so features stay within a
cosine similarity of 0.99+ of fp32 and no loss scaling is needed in training. Where the CPU has no native
bf16 (oneDNN would emulate it, slower than fp32), ``auto`` means fp32.

A pass of more than one batch also runs with each BatchNorm folded into the convolution before it
(:mod:`graft.folding`: an inference copy traced before the pass starts, checked on its first batch), in
any precision: eager PyTorch normalises in a separate pass over the activations, which cost lite0 a third
of each batch (0.25 -> 0.16 s for 32 images in bf16).

``torch.compile`` (inductor, weights frozen into the graph: BatchNorm folded into the convolutions,
activations fused, weights pre-packed) made vgg16 1.0-1.2x and resnet50 1.1-1.2x faster again in
``make bench`` runs (lite0 not at all), but compiling costs 10-60 s on two cores. So a pass compiles
only when its first batches predict more than :data:`COMPILE_AFTER_SECONDS` of eager work (a feature
cache of a large data set, evaluating tens of thousands of images), and keeps the compiled network only
if it measures faster; ``graft --compile on|off`` (``GRAFT_COMPILE``) forces either. Each pass compiles
afresh: frozen weights must never outlive a training step that changed them.

A pass predicting more than :data:`INT8_AFTER_SECONDS` (30 s) of eager work goes further where the network
allows: an int8 copy (:mod:`graft.quantize`) ran vgg16 2.3x and resnet50 2.1x faster than compiled bf16 in
``make bench`` and builds in 9-19 s, but it is kept only where its outputs measure as close to fp32 as
bf16's (a cosine of 0.99; EfficientNet-Lite0 stays in bf16). A network with depthwise convolutions, which
int8 rarely suits, is tried on long passes only.
``--precision int8`` uses it on every pass; ``--precision bf16`` or ``fp32`` never.

Where the CPU has no native bf16 (AVX2-only: passes run in fp32), eager PyTorch is far from the best the
CPU can do: ONNX Runtime ran lite0 3.8x and resnet50 2.3x faster in fp32 on a 2-core AVX2 machine, and
compiling gains much less there (2.2x and 1.7x). So under ``auto`` a pass predicted past
:data:`ONNXRUNTIME_AFTER_SECONDS` of eager work runs through an ONNX Runtime copy (:mod:`graft.onnxrt`; fp32, outputs equal to eager's to
rounding) in place of a compiled one, kept only if it measures faster; a long pass still tries int8 first.

On an accelerator (``--device``, :mod:`graft.device`) the same passes run under that device's autocast:
bf16 on CUDA GPUs that compute it natively, else fp16 (training then scales the loss:
:func:`grad_scaler`), fp16 on Apple MPS. int8 is the CPU's alone: its quantizer lowers to x86 oneDNN kernels.
"""

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from functools import cache

import torch
from torch import nn
from torch.utils.data import DataLoader

from graft import onnxrt
from graft.console import log, quiet_torch_notices, warn
from graft.device import module_device
from graft.errors import GraftError
from graft.folding import agrees, folded_batchnorm
from graft.heap import freed_memory_kept
from graft.interrupt import check
from graft.prefetch import prefetched
from graft.quantize import AGREEMENT, likely_to_agree, quantized

PRECISIONS = ("auto", "int8", "bf16", "fp32")
COMPILE_MODES = ("auto", "on", "off")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the precisions autocast computes in; fp32 runs without it
COMPILE_AFTER_SECONDS = 180.0  # make bench: compiling vgg16 (13 s) repaid itself after 80 s, resnet50 (25 s) after 290 s
# benchmarks/int8_threshold.py (AVX-512, 2 cores, whole passes with int8 tried or not): resnet50's copy lost 0.7 s at
# 21 s of predicted eager work and saved 6.7 s at 32, vgg16's lost 1.4 s at 29 and saved 7.2 s at 39; from 30 s both
# roughly break even or gain, and a copy thrown away (it disagreed with fp32, or failed) costs about a third more.
# Networks int8 rarely suits wait for a long pass.
INT8_AFTER_SECONDS = 30.0
# make bench, an AVX2 EPYC, 2 cores: exporting and loading lite0 takes 1.2 s, resnet50 2 s; ONNX Runtime repaid
# them after 2 and 4 s of eager work (the first batch's prediction overestimates: it includes the kernels' set-up)
ONNXRUNTIME_AFTER_SECONDS = 5.0


@cache  # the CPU does not change, and autocast() asks before every batch
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles): the only case where it pays."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve(precision: str, device: str | torch.device = "cpu") -> str:
    """``"int8"``, ``"bf16"``, ``"fp16"`` or ``"fp32"``: what ``precision`` means on ``device``.

    On the CPU ``auto`` is bf16 or fp32; its long passes may still run in int8 where that measures as close
    to fp32 as bf16 is (:class:`_Runner`). On CUDA ``auto`` is bf16 where the GPU computes it natively
    (Ampere and later), else fp16, which training pairs with loss scaling (:func:`grad_scaler`); on Apple
    MPS it is fp16. int8 (PT2E quantization, x86 oneDNN kernels) is the CPU's alone.
    """
    if precision not in PRECISIONS:
        raise GraftError(f"unknown precision '{precision}'; choose {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if kind == "cpu":
        return ("bf16" if native_bf16() else "fp32") if precision == "auto" else precision
    if precision == "int8":
        raise GraftError(
            f"--precision int8 runs on the CPU only, not on {device}; add --device cpu, or choose --precision auto, bf16 or fp32"
        )
    if precision == "auto":
        return "bf16" if kind == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return precision


def floating(precision: str, device: str | torch.device = "cpu") -> str:
    """The floating-point precision ``precision`` trains in: ``int8`` quantizes forward passes of whole networks
    only, so training steps, and the layers an int8 network keeps in floating point, run as ``auto`` would."""
    return resolve("auto" if precision == "int8" else precision, torch.device(device).type)


def autocast(precision: str, device: str | torch.device = "cpu") -> AbstractContextManager:
    """Autocast on ``device`` for ``precision``'s floating point (:func:`floating`; weights stay fp32, the optimizer steps in fp32)."""
    kind = floating(precision, device)
    return torch.autocast(torch.device(device).type, dtype=_AUTOCAST.get(kind, torch.bfloat16), enabled=kind in _AUTOCAST)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for a training phase: on for fp16 only, whose narrow exponent range lets small gradients
    vanish; bf16 keeps fp32's range and needs none. Disabled, it is a plain ``backward()`` and ``step()``."""
    return torch.amp.GradScaler(device.type, enabled=resolve(precision, device) == "fp16")


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
    """Calls a module eagerly, and a faster copy of it (int8, ONNX Runtime or compiled) from the batch where one pays.

    Eagerly means through ``folded`` (the module with its BatchNorms folded, :mod:`graft.folding`) where one is
    given and it computes the module's outputs on the first batch, else the module itself; the copies are built
    from the module (they fold on their own).

    The eager time of the second and third batch (the first warms oneDNN up) times the batches left is
    the pass's predicted eager work. Past :data:`COMPILE_AFTER_SECONDS` ``auto`` builds, on the fourth
    batch, an int8 copy (:mod:`graft.quantize`, under ``--precision auto`` on the CPU only), kept if its outputs follow
    fp32 to :data:`~graft.quantize.AGREEMENT`, else a compiled one; past :data:`INT8_AFTER_SECONDS` only the int8
    copy, and only for a network :func:`~graft.quantize.likely_to_agree` in a pass that computes in bf16. Where the
    pass computes in fp32 on the CPU, an ONNX Runtime copy replaces the compiled one, and as it costs a second or two to build, a pass
    whose first batch predicts more than :data:`ONNXRUNTIME_AFTER_SECONDS` of eager work (and not a long
    one) builds it on the second batch. No copy speeds up every network (on two
    cores compiling lite0 gained nothing in ``make bench``), so ``auto`` times the copy's next two batches
    too and goes back to eager unless the faster of them beats the faster eager one (the first, where it was
    built on the second): a batch stalled by something else (a garbage collection, another process) on one side
    does not decide.
    ``--compile on`` and ``--precision int8`` build on the first batch and keep the copy. The copy is
    specialised to one batch size; a shorter last batch is padded with zeros (the module is in eval mode:
    images do not affect each other), except for ONNX Runtime's, whose batch dimension is free.
    """

    def __init__(
        self, module: nn.Module, batches: int | None, precision: str, quantize: bool = True, folded: nn.Module | None = None
    ) -> None:
        self.module, self.batches, self.mode = module, batches, compile_mode()
        # what runs where no faster copy does: module, or its copy with BatchNorms folded (graft.folding), once it agrees
        self.eager, self.folded = module, folded
        device = module_device(module)
        if precision == "int8" and self.mode == "off":
            raise GraftError("--precision int8 runs through torch.compile; drop --compile off, or choose --precision auto")
        floating = resolve(precision, device)  # int8 on an accelerator is an error, not a silent float pass
        cpu_int8 = {"int8": "on", "auto": "off" if self.mode == "off" else "auto"}.get(precision, "off")
        self.int8 = cpu_int8 if device.type == "cpu" and quantize else "off"
        # where the CPU computes in fp32, auto's copy is ONNX Runtime's rather than a compiled one (graft.onnxrt)
        self.ort = precision == "auto" and self.mode == "auto" and device.type == "cpu" and floating == "fp32" and onnxrt.available()
        self.done, self.first_seconds = 0, 0.0
        self.eager_times: list[float] = []  # the 2nd and 3rd batch's eager seconds
        self.fast_times: list[float] = []  # the copy's first two batches' seconds (auto judges it on them)
        self.reference = 0.0  # the eager seconds the copy's faster batch must beat (auto): set when it is built
        self.fast: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.size = 0  # the copy's batch size; set on the one attempt to build it, so a failure is not retried
        self.any_size = False  # ONNX Runtime's copy has a free batch dimension: a short last batch runs unpadded

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded is not None:
            self.eager = self.folded if agrees(self.module, self.folded, x) else self.module
            self.folded = None
        copies = self._due() if self.size == 0 else ()
        built = self._build(x, copies) if copies else None
        start = time.perf_counter()
        if built is not None:
            out = built
        elif self.fast is not None and (self.any_size or x.shape[0] <= self.size):
            short = not self.any_size and x.shape[0] < self.size
            padded = torch.cat([x, x.new_zeros((self.size - x.shape[0], *x.shape[1:]))]) if short else x
            out = self.fast(to_channels_last(padded))[: x.shape[0]]
            self._judge(time.perf_counter() - start)
        else:
            out = self.eager(x)
            seconds = time.perf_counter() - start
            if self.done == 0:
                self.first_seconds = seconds
            elif self.done in (1, 2):
                self.eager_times.append(seconds)
        self.done += 1
        return out

    def _judge(self, seconds: float) -> None:
        """In ``auto``, after two batches of the copy: back to eager for the pass unless the faster beat the reference."""
        if self.mode != "auto" or self.int8 == "on" or len(self.fast_times) >= 2:
            return
        self.fast_times.append(seconds)
        if len(self.fast_times) == 2 and min(self.fast_times) >= self.reference:
            self.fast = None  # the build time is spent, but no further batch pays for a slower network

    def _due(self) -> tuple[str, ...]:
        """The faster copies to try on this batch, in order, the first that builds kept: ``"int8"``,
        ``"onnxruntime"``, ``"compiled"``; none while the pass stays eager."""
        int8 = self.int8 == "on" or self._int8_due()
        compiled = self.mode == "on" or (self.mode == "auto" and self._long())
        left = self._eager_left()
        # ONNX Runtime's copy costs a second or two, so it need not wait for the warm batches, unless the cold
        # first batch predicts a long pass: that one waits for them, to try int8 first. Where another copy is
        # due it comes before a compiled one, which it replaces on such CPUs.
        early = self.done == 1 and left <= COMPILE_AFTER_SECONDS
        ort = self.ort and (int8 or compiled or ((early or self.done == 3) and left > ONNXRUNTIME_AFTER_SECONDS))
        return tuple(name for name, due in (("int8", int8), ("onnxruntime", ort), ("compiled", compiled)) if due)

    def _eager_left(self) -> float:
        """Seconds of eager work the pass's remaining batches predict: after the first batch from its time (an
        overestimate: the first calls pick and build kernels), after the third from the second and third; else 0."""
        if not self.batches or self.done not in (1, 3):
            return 0.0
        per_batch = self.first_seconds if self.done == 1 else sum(self.eager_times) / 2
        return per_batch * (self.batches - self.done)

    def _long(self) -> bool:
        return self.done == 3 and self._eager_left() > COMPILE_AFTER_SECONDS

    def _int8_due(self) -> bool:
        """Whether ``auto`` tries an int8 copy on this batch: a long pass, or one predicting more than
        :data:`INT8_AFTER_SECONDS` of eager work on a network int8 is likely to suit, unless an ONNX Runtime copy
        is the alternative; not one that already disagreed.

        Where the pass computes in fp32 the ONNX Runtime copy builds in a second or two, and on the AVX2 machine of
        ``make bench`` resnet50's int8 copy, 2.2x faster than it, took 34 s to build: it repaid that after about 800
        images, 140 s of eager fp32 work, so there int8 waits for a long pass as compiling does."""
        if self.int8 != "auto" or self.done != 3 or _signature(self.module) in _INT8_REJECTED:
            return False
        medium = not self.ort and self._eager_left() > INT8_AFTER_SECONDS and likely_to_agree(self.module)
        return self._long() or medium

    def _build(self, x: torch.Tensor, copies: tuple[str, ...]) -> torch.Tensor | None:
        """This batch's outputs, computed while building the first of ``copies`` that builds; ``None`` if none did."""
        self.size = x.shape[0]
        self.reference = min(self.eager_times) if self.done == 3 else self.first_seconds
        torch._dynamo.reset()  # frozen weights of an earlier pass must not be reused: training may have changed them
        if "int8" in copies and x.shape[0] > 1:
            try:
                network, outputs, agreement = quantized(self.module, x)
            except Exception as exc:  # noqa: BLE001 (an operator export or the quantizer lacks: float is still right)
                _warn("int8 quantization", exc, "--precision bf16")
            else:
                if self.int8 == "on" or agreement >= AGREEMENT:
                    log(f"int8 network for this pass: its outputs agree with fp32 to a cosine of {agreement:.4f}", style="dim")
                    self.fast = network
                    return outputs
                _INT8_REJECTED.add(_signature(self.module))
                log(
                    f"int8 features agree with fp32 to a cosine of {agreement:.3f} only (below {AGREEMENT}): staying in floating point "
                    "(not tried again on this network in this process)"
                )
        if "onnxruntime" in copies:
            try:
                network = onnxrt.session(self.module, x)
                outputs = network(x)
            except Exception as exc:  # noqa: BLE001 (an operator the exporter lacks: eager is still right, only slower)
                _warn("ONNX Runtime", exc, "--compile off")
            else:
                log("this pass runs through ONNX Runtime (fp32: this CPU has no native bf16)", style="dim")
                self.fast, self.any_size = network, True
                return outputs
        if "compiled" in copies:
            compiled = torch.compile(self.module, dynamic=False, options={"freezing": True})
            try:
                with quiet_torch_notices():
                    outputs = compiled(to_channels_last(x))  # compiles now, inside the caller's inference mode and autocast
            except Exception as exc:  # noqa: BLE001 (no C++ compiler, an operator inductor lacks: eager is still right, only slower)
                _warn("torch.compile", exc, "--compile off")
                return None
            self.fast = compiled
            return outputs
        return None


# Networks whose int8 copy missed AGREEMENT in this process. Quantizing and compiling one costs tens of seconds,
# and whether it agrees is a matter of its architecture (lite0's depthwise convolutions and ReLU6 never have),
# so a later long pass (auto's and compare's come one after another) does not try again.
_INT8_REJECTED: set[tuple[str, tuple[tuple[int, ...], ...]]] = set()


def _signature(module: nn.Module) -> tuple[str, tuple[tuple[int, ...], ...]]:
    """A network's architecture, as far as int8 agreement goes: its class and its parameters' shapes."""
    return type(module).__qualname__, tuple(tuple(p.shape) for p in module.parameters())


class FrozenForward:
    """The forward pass of a training phase's frozen first blocks (:mod:`graft.backbones.prefix`) while its
    images are augmented, so they must run every step: without autograd, and through a faster copy where the
    phase's steps predict enough eager work to pay for one, chosen and judged as a long pass chooses its copy
    (:class:`_Runner`: compiled, or ONNX Runtime where the CPU computes in fp32). Their weights and BatchNorm
    statistics do not change during the phase, so one copy serves every epoch at the same input side; under
    progressive resizing (:mod:`graft.train.resolution`) each side gets its own runner, judged on the steps
    the phase runs at that side (``steps``: side -> steps, in the order the phase reaches them). Never int8:
    training sees what the frozen blocks compute in floating point. Where no copy runs, their BatchNorms run
    folded into their convolutions (:mod:`graft.folding`), traced once here, before the phase's loaders start
    threads. With gradients off (a validation pass, which has its own fast path) the blocks run as they are.
    """

    def __init__(self, module: nn.Module, steps: Mapping[int, int], precision: str) -> None:
        self.module, self.steps = module, steps
        self.precision = "auto" if precision == "int8" else precision
        self.folded = folded_batchnorm(module)
        self.side = next(iter(steps))
        self.runner = self._runner(self.side)

    def _runner(self, side: int) -> _Runner:
        return _Runner(self.module, self.steps.get(side), self.precision, quantize=False, folded=self.folded)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.module(x)
        if x.shape[-1] != self.side:  # progressive resizing moved on: the copy built for the last side does not fit
            self.side, self.runner = x.shape[-1], self._runner(x.shape[-1])
        with torch.no_grad():
            return self.runner(x)


def _warn(what: str, exc: Exception, skip: str) -> None:
    """One line for a faster path that failed: the pass goes on without it."""
    first = (str(exc).splitlines() or [""])[0][:120]
    warn(f"{what} failed ({type(exc).__name__}: {first}); going on without it ({skip} skips the attempt)")


def forward_batches(
    module: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], precision: str = "auto"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(outputs, labels)`` of ``module`` batch by batch, in ``eval()`` mode, outputs in fp32 on the CPU.

    ``eval()`` matters: BatchNorm must use its running statistics, or outputs differ between feature
    extraction and prediction (the classic "93% in training, 25% at prediction"). The module's own mode
    is restored afterwards. Batch by batch, so a caller that stores each one (the feature cache) holds one
    batch in memory, however many images there are.

    The batches go to wherever ``module`` is (:func:`graft.device.module_device`) and the outputs come back
    to the CPU, which is where every caller keeps them (the feature cache's files, metrics, NumPy). A
    DataLoader without worker processes is read one batch ahead in a background thread
    (:func:`graft.prefetch.prefetched`), so decoding overlaps the network (docs/speed.md).
    """
    was_training = module.training
    prepare(module).eval()  # outside inference mode: the parameters must stay ordinary, trainable tensors
    device = module_device(module)
    count = len(batches) if hasattr(batches, "__len__") else None
    # traced here, before the prefetching thread calls the loader's transforms (graft.folding); a single batch
    # (a prediction on one image) is not worth the tenth of a second
    runner = _Runner(module, count, precision, folded=folded_batchnorm(module) if count != 1 else None)
    # the next batch decodes while the network runs on this one
    ahead = prefetched(batches) if isinstance(batches, DataLoader) and batches.num_workers == 0 else None
    try:
        with freed_memory_kept():  # each batch reuses the last one's memory (graft.heap)
            for inputs, targets in batches if ahead is None else ahead:
                check()  # Ctrl-C during training lands here or in the training loop (graft.interrupt)
                # Entered per batch, so neither leaks into the caller's code between batches.
                with torch.inference_mode(), autocast(precision, device):
                    outputs = runner(to_channels_last(inputs.to(device, non_blocking=True))).float()
                yield outputs.cpu(), torch.as_tensor(targets)
    finally:
        if ahead is not None:  # an error or Ctrl-C mid-pass: the producer stops now, not whenever the generator is collected
            ahead.close()
        module.train(was_training)


def forward_all(
    module: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], precision: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`forward_batches` concatenated: ``(outputs, labels)`` over every batch."""
    outputs, labels = zip(*forward_batches(module, batches, precision), strict=True)
    return torch.cat(outputs), torch.cat(labels)

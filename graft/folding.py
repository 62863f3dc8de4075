"""An inference copy of a network with each BatchNorm folded into the convolution before it.

Why: in inference mode a BatchNorm is a fixed per-channel scale and shift, which the convolution feeding
it can absorb into its weights and bias (as ONNX Runtime, TensorRT and ``torch.compile``'s freezing do).
Eager PyTorch does not: each BatchNorm is one more pass over the activations, in fp32 under bf16 autocast.
On lite0, whose depthwise convolutions do little arithmetic per activation, that was a third of a batch:
32 images took 0.25 s in eager bf16 and 0.16 s folded (resnet50 0.87 -> 0.82 s; docs/speed.md). Folding
costs a tenth of a second, so every inference pass of more than one batch does it, where compiling pays
only on long passes.

How: the network is traced with :mod:`torch.fx`, treating BatchNorms and timm's untraceable layers
(:func:`timm.layers.get_notrace_modules`) as single calls; a BatchNorm whose input is a plain convolution's
output, used nowhere else, is folded (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`) and replaced by
what it did after normalising (timm's ``BatchNormAct2d``: its activation). The copy shares every other
module with the original, so its memory is the folded convolutions' weights only, and the original keeps
training untouched. A network that fx cannot trace, with nothing to fold, or whose folded copy does not
compute what it computes (checked on an image of the pass, in fp32) is used as it is.

Under autocast (bf16 on native-bf16 CPUs, bf16 or fp16 on GPUs) a folded depthwise convolution uses weights
rounded to that precision so that each filter keeps its sum (:func:`sum_keeping_round`), not rounded to
nearest tap by tap as autocast would. Why: a depthwise filter has 9 or 25 taps and sees one channel; on a
smooth patch of an image its output is the patch's level times the filter's sum, and for an edge-detecting
filter that sum is a small difference of large taps, so rounding each tap moved it by far more than it moved
the taps. lite0's first depthwise layer (folded scales up to 18) was the whole of it: bf16 features of 2,000
photo crops fell to a cosine of 0.953 with fp32 on the worst image (mean 0.998); with its filters in fp32 0.993,
with sum-keeping rounding 0.995 (mean 0.9994), at no cost: the weights are rounded once, when folding.
"""

from copy import copy as shallow_copy

import torch
from timm.layers import BatchNormAct2d, Conv2dSame, get_notrace_functions, get_notrace_modules
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from graft.layers import is_depthwise

# Exactly these types: a subclass may transform its weights in forward (timm's StdConv2d standardises them)
# or do more than normalise, and folding would change what it computes.
_CONVOLUTIONS = (nn.Conv2d, Conv2dSame)
_NORMS = (nn.BatchNorm2d, BatchNormAct2d)
_LOW_PRECISIONS = (torch.bfloat16, torch.float16)  # what autocast computes in (graft.inference)


class _Tracer(fx.Tracer):
    """Traces down to BatchNorms, torch's own layers and the layers timm marks untraceable."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=tuple(f for f in get_notrace_functions() if callable(f)))
        self.leaves = (nn.modules.batchnorm._BatchNorm, *get_notrace_modules())

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, module_qualified_name)


def folded_batchnorm(module: nn.Module) -> fx.GraphModule | None:
    """An inference copy of ``module`` with its BatchNorms folded into their convolutions; ``None`` where
    fx cannot trace it or nothing folds.

    Only a network wholly in inference mode (``eval()``: a BatchNorm in training mode normalises with the
    batch's statistics) and without forward hooks (the copy calls the layers it traced through no more, so
    their hooks would not fire: ``advise`` collects its stage features with hooks) gets one. Check the copy with
    :func:`agrees` on a batch before using it. Not while another thread calls modules (a prefetching data
    loader's transforms): fx patches ``nn.Module.__call__`` for every thread while it traces.
    """
    if any(m.training or m._forward_hooks or m._forward_pre_hooks for m in module.modules()):
        return None
    try:
        graph = _Tracer().trace(module)
    except Exception:  # noqa: BLE001 (data-dependent control flow, an operation fx cannot record: run as it is)
        return None
    copy = fx.GraphModule(module, graph)  # the same layers: module itself is never changed
    layers = dict(module.named_modules())
    count = 0
    for node in copy.graph.nodes:
        norm = layers.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if norm is not None and node.args else None
        conv = layers.get(source.target) if isinstance(source, fx.Node) and source.op == "call_module" else None
        if not _foldable(conv, norm) or len(source.users) != 1:
            continue
        folded = fuse_conv_bn_eval(conv, norm).to(memory_format=torch.channels_last)
        _retarget(copy, source, f"graft_folded_{count}", _RoundedDepthwise(folded) if is_depthwise(folded) else folded)
        _retarget(
            copy, node, f"graft_folded_{count}_after", nn.Sequential(norm.drop, norm.act) if type(norm) is BatchNormAct2d else nn.Identity()
        )
        count += 1
    if count == 0:
        return None
    copy.recompile()
    return copy


def agrees(module: nn.Module, copy: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``copy`` computes ``module``'s outputs on the first image of ``x``, in fp32, to the rounding folding changes."""
    try:
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            want, got = module(x[:1].float()), copy(x[:1].float())
        return bool(torch.allclose(got, want, rtol=1e-3, atol=1e-3 * want.abs().max().item()))
    except Exception:  # noqa: BLE001 (a traced graph that does not run: not used)
        return False


def sum_keeping_round(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` (out, in, kh, kw) in ``dtype``, each output channel's filter rounded so that its sum stays what
    it was to within half a unit in the last place of its smallest tap.

    Error diffusion: the taps in decreasing magnitude, each rounded to nearest with the rounding error so far
    added in. The largest taps are rounded as to nearest; the smallest absorb what is left.
    """
    flat = weight.detach().flatten(1).to("cpu", torch.float64)
    order = flat.abs().argsort(dim=1, descending=True)
    taps = flat.gather(1, order)
    carry = torch.zeros(len(taps), dtype=torch.float64)
    for column in range(taps.shape[1]):
        wanted = taps[:, column] + carry
        taps[:, column] = wanted.to(dtype).double()
        carry = wanted - taps[:, column]
    rounded = torch.empty_like(flat).scatter_(1, order, taps).to(dtype).view_as(weight)
    return rounded.to(weight.device, memory_format=torch.channels_last)


class _RoundedDepthwise(nn.Module):
    """A folded depthwise convolution: as it is in fp32, with :func:`sum_keeping_round` weights under autocast."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        # one shallow copy of the layer a precision, holding that precision's weights: a plain call, where swapping
        # the weight in at each call (torch.func.functional_call) cost 1-2 ms a batch of 32
        self.rounded = {dtype: _with_weight(conv, sum_keeping_round(conv.weight, dtype)) for dtype in _LOW_PRECISIONS}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = x.device.type
        layer = self.rounded.get(torch.get_autocast_dtype(kind), self.conv) if torch.is_autocast_enabled(kind) else self.conv
        return layer(x)


def _with_weight(conv: nn.Conv2d, weight: torch.Tensor) -> nn.Conv2d:
    """``conv`` with ``weight`` in place of its own, sharing everything else (bias, settings)."""
    layer = shallow_copy(conv)
    layer._parameters = {**conv._parameters, "weight": nn.Parameter(weight, requires_grad=False)}
    return layer


def _foldable(conv: nn.Module | None, norm: nn.Module | None) -> bool:
    return (
        type(conv) in _CONVOLUTIONS
        and type(norm) in _NORMS
        and norm.running_mean is not None
        and norm.running_var is not None
        and conv.out_channels == norm.num_features
    )


def _retarget(copy: fx.GraphModule, node: fx.Node, name: str, layer: nn.Module) -> None:
    """Make ``node`` call ``layer``, a new attribute of the copy itself: a container the copy holds may be the
    original's own (fx shares a module the graph calls whole), where setting a layer would change the original."""
    copy.add_module(name, layer)
    node.target = name

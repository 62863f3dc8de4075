"""An int8 copy of a frozen network for one long forward pass: static post-training quantization.

Why: on CPUs with AVX512-VNNI (or AMX) oneDNN's int8 convolutions do twice the multiply-adds of bf16 per
instruction. ``make bench`` measured vgg16 at 25 images/s in int8 against 11 in compiled bf16 and 4.3 in
eager fp32, resnet50 at 83 against 40 and 11. But int8 does not suit every network: EfficientNet-Lite0's
depthwise convolutions with one scale a tensor kept its ImageNet features only to a cosine of 0.95 of
fp32. So :func:`quantized` measures, on images of the pass it quantizes, how closely the int8 network
follows fp32, and the caller (:mod:`graft.inference`) keeps it only where that reaches
:data:`AGREEMENT`, the bar ``make bench`` holds the bf16 path to.

How: the network is exported (``torch.export``), observed in fp32 on :data:`CALIBRATION` images of the
batch (activation ranges, per-channel weight scales), converted with torchao's PT2E flow and the x86
Inductor quantizer (the maintained successor of ``torch.ao`` quantization), and compiled by Inductor with
its weights frozen, which is what lowers the quantize/dequantize pairs to oneDNN's int8 kernels;
uncompiled, the converted graph would run slower than fp32. As many other images of the batch, unseen by
calibration, are the agreement check.

The build is what a pass of a few thousand images pays before int8 gains anything (resnet50: about 10 s on two
cores, 12 before the two cuts below, against 0.75 s a batch in bf16 and 0.39 in int8), so it does no more than
it must: the exported
graph goes to Inductor directly (:func:`torch._inductor.compile`), not through ``torch.compile``, whose
Dynamo would trace the already-traced graph again (2 s of resnet50's build); and calibration and check
take 8 images each, not half the batch (1.5 s less), which still gives the activation ranges hundreds of
thousands of values a channel.
"""

from collections.abc import Callable

import torch
from torch import nn

from graft.console import quiet_torch_notices
from graft.layers import is_depthwise

AGREEMENT = 0.99  # the lowest feature cosine with fp32 an int8 network may have to be used in auto
CALIBRATION = 8  # images observed for the activation ranges, and as many others for the agreement check


def likely_to_agree(module: nn.Module) -> bool:
    """Whether an int8 copy of ``module`` can be expected to reach :data:`AGREEMENT`: not where it has depthwise
    convolutions, whose filters see one channel each while an activation gets one scale for all channels
    (lite0's ImageNet features fell to a cosine of 0.967 on an AVX-512 CPU, 0.835 on an AVX2 one). Only a guess,
    for passes too short to risk a build that would be thrown away; the agreement is still measured."""
    return not any(is_depthwise(m) for m in module.modules())


def quantized(module: nn.Module, x: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, float]:
    """``(int8 network, outputs of x, agreement)`` for a pass whose batches have ``len(x)`` images.

    The returned network is compiled for that batch's shape and memory layout, and has no guards: the caller
    gives it nothing else (:class:`graft.inference._Runner` pads a short last batch). The outputs of ``x``
    are fp32's on the images calibrated on and checked (at most :data:`CALIBRATION` each, at most half the
    batch each), int8's on the rest, so the batch is not computed again. The agreement is the lowest cosine
    similarity between int8 and fp32 outputs over the checked images, which calibration has not seen. Needs
    at least two images. Runs in the caller's inference mode; calibration in fp32 whatever the caller's
    autocast, the compiled network under it (the layers left in floating point run in bf16).
    """
    with quiet_torch_notices():
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    seen = min(CALIBRATION, x.shape[0] // 2)
    with torch.autocast("cpu", enabled=False):
        batch = torch.export.Dim("batch", min=1)
        graph = torch.export.export(module, (x[:seen],), dynamic_shapes=({0: batch},)).module()
        quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
        observed = prepare_pt2e(graph, quantizer)
        reference = torch.cat([observed(x[:seen]), module(x[seen : 2 * seen])])
        converted = convert_pt2e(observed)
    with torch._inductor.config.patch(freezing=True), quiet_torch_notices():  # freezing lowers int8 to oneDNN
        network = torch._inductor.compile(converted, [x])
    int8 = network(x).float()
    agreement = torch.nn.functional.cosine_similarity(int8[seen : 2 * seen], reference[seen:]).min().item()
    return network, torch.cat([reference, int8[2 * seen :]]), agreement

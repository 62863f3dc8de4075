"""What graft asks of a network's layers, in one place for the modules that ask it (folding, int8, training)."""

from torch import nn


def is_depthwise(layer: nn.Module) -> bool:
    """Whether ``layer`` is a depthwise convolution: each filter sees one input channel (``groups == in_channels``),
    so it has few taps (9 or 25) and does little arithmetic per activation; int8's per-tensor activation scales
    and bf16's rounding of its taps affect it most, and oneDNN covers only some of its shapes with fast kernels."""
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels

"""Progressive resizing: the early epochs of a phase train on smaller images, the last ones at the full size.

A convolutional network's cost grows with its input's area, and in the first epochs of a long schedule, while
the learning rate is high, a network learns much of what the full image teaches from a smaller picture of it
(fastai's progressive resizing; FFCV trains ResNet-50 at 160 to 192 pixels and tests it at 224 or more). So
the first half of a phase's epochs trains at 0.7 of the side (rounded to 32 pixels, the stride of a
classifier's last feature map; lite0: 160 for 224, about half an epoch's time), the side
then grows to the full size by 80% of the epochs, and the last epochs, where the learning rate anneals,
train at the size every validation pass, prediction and export see. Validation always runs at the full size,
so the epoch kept is chosen on what the model will be used at.

Off by default (``TrainSettings.progressive``): in ten epochs of fine-tuning it saved under a fifth of the fit and
lost accuracy on both recipe cases (docs/results.md); it is for long schedules.

Images are shrunk batch by batch, after decoding and augmentation (:func:`shrunk`), so the decoded images
held for the run, the augmentation and the seeds are the same as without it: only the network's input size
changes.
"""

import math
from collections.abc import Iterable, Iterator

import torch
from torch.nn import functional as F

from graft.device import module_device

SCALE = 0.7  # the early epochs' side, as a share of the full one
STEP = 32  # sides are multiples of this
SMALLEST = 64  # no side is shrunk below this (a stride-32 network's last feature map: 2x2)
START, END = 0.5, 0.8  # the share of the phase's epochs trained at the small side, and by which the full side is reached


def epoch_sides(side: int, epochs: int) -> list[int]:
    """The input side of each of a phase's epochs, growing from the small side to ``side``; every one ``side``
    where the phase has a single epoch or the small side would not be smaller."""
    small = max(SMALLEST, round(side * SCALE / STEP) * STEP)
    if epochs < 2 or small >= side:
        return [side] * epochs
    start, end = math.ceil(START * epochs), max(math.ceil(END * epochs), math.ceil(START * epochs) + 1)
    sides = []
    for epoch in range(1, epochs + 1):
        share = min(max((epoch - start) / (end - start), 0.0), 1.0)
        sides.append(side if share == 1 else min(side, round((small + share * (side - small)) / STEP) * STEP))
    return sides


def shrunk(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], side: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` with their images resized to ``side`` (bilinear with antialiasing, as torchvision resizes) where
    they are larger; labels unchanged."""
    for inputs, targets in batches:
        if inputs.shape[-1] > side or inputs.shape[-2] > side:
            inputs = F.interpolate(inputs, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        yield inputs, targets


def accepts(module: torch.nn.Module, channels: int, side: int) -> bool:
    """Whether ``module`` runs on ``side``-pixel images: a network with a fixed grid (a ViT's position embeddings, a
    dense layer on a flattened feature map) does not, and then trains at its own size. Tried on one blank image in
    inference mode; every layer's mode is put back as it was."""
    modes = [(layer, layer.training) for layer in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, channels, side, side, device=module_device(module)))
        return True
    except Exception:  # noqa: BLE001 (any failure at another size means: train at the full size)
        return False
    finally:
        for layer, training in modes:
            layer.training = training

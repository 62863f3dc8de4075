"""A small CNN for small grayscale images: the "pretrain on digits, reuse the convolutions" classic."""

from itertools import pairwise
from typing import Any

import torch
from torch import nn

from graft.backbones.base import Backbone
from graft.data.transforms import Preprocessing
from graft.errors import GraftError

# MNIST statistics: the usual normalisation for 28x28 handwriting.
DEFAULT_PREPROCESSING = Preprocessing(input_size=(1, 28, 28), mean=(0.1307,), std=(0.3081,))


def _stage(in_chans: int, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chans, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(Backbone):
    """Three stages of two 3x3 convolutions + BatchNorm + max-pool, then a 3x3 grid flattened.

    Keeping a coarse spatial grid (rather than global pooling) keeps stroke positions, which is what
    tells handwritten characters apart; the 1,152 features then transfer to new classes under a new head.
    """

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128), grid: int = 3):
        super().__init__()
        chans = (in_chans, *widths)
        self.stages = nn.Sequential(*(_stage(a, b) for a, b in pairwise(chans)))
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.num_features = widths[-1] * grid * grid
        pre = DEFAULT_PREPROCESSING
        self.preprocessing = Preprocessing((in_chans, *pre.input_size[1:]), pre.mean * in_chans, pre.std * in_chans)
        self.spec: dict[str, Any] = {"kind": "smallcnn", "name": "smallcnn", "in_chans": in_chans, "widths": list(widths), "grid": grid}

    def blocks(self) -> list[nn.Module]:
        return list(self.stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.stages(x)), 1)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "SmallCNN":
        """The architecture ``spec`` describes; a damaged or crafted spec is refused before allocating."""
        in_chans, widths, grid = int(spec["in_chans"]), tuple(int(w) for w in spec["widths"]), int(spec["grid"])
        if not (in_chans in (1, 3) and 1 <= len(widths) <= 6 and all(1 <= w <= 1024 for w in widths) and 1 <= grid <= 8):
            raise GraftError(f"smallcnn spec {spec} is out of range (1 or 3 channels, 1-6 widths of 1-1024, grid 1-8); the run is damaged")
        return cls(in_chans=in_chans, widths=widths, grid=grid)

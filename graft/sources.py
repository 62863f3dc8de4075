"""Where a backbone comes from: a timm model name, graft's small CNN, a weights file, or an earlier graft run.

This sits above both :mod:`graft.backbones` (architectures) and :mod:`graft.rundir` (saved runs), because
an earlier run is one of the sources: a run's trained backbone transfers like any pretrained model.
"""

from pathlib import Path

from graft.backbones import RANDOM, Backbone, SmallCNN, TimmBackbone, pretrained_timm
from graft.backbones.weights import load_state, read_state_file
from graft.errors import GraftError
from graft.rundir import is_run_dir, load_run


def create_backbone(name: str, weights: str | None = None, layer: int | None = None) -> Backbone:
    """Resolve ``--backbone`` (and ``--weights``, ``--layer``) into a backbone with its weights.

    ``name`` is a graft run directory (its trained backbone), ``smallcnn`` (random unless ``weights``), or
    a timm model name. A timm model's weights come from ``weights`` (a file, or ``random``), else an
    installed package, else timm's hub; with none of them the error lists the options.
    """
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
        raise GraftError(
            f"--backbone {name} is a path but not a graft run directory (no config.json); give a run made by 'graft fit' or 'graft pretrain'"
        )
    if weights == RANDOM:
        backbone = TimmBackbone(name, layer=layer)
        backbone.spec["weights"] = RANDOM
        return backbone
    if weights is not None:
        backbone = TimmBackbone(name, layer=layer, weights=Path(weights))
        backbone.spec["weights"] = f"file:{Path(weights).resolve()}"
        return backbone
    return pretrained_timm(name, layer)

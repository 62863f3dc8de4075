"""The run directory: everything needed to predict again, in formats that cannot execute code on load.

Weights are safetensors, settings and metrics are JSON: loading a run never unpickles anything. Weights
are written from the CPU and load onto it, whatever device trained them; whoever uses the model moves it.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from graft.atomic import replacing, write_json
from graft.backbones import build_backbone
from graft.data.transforms import Preprocessing
from graft.errors import GraftError
from graft.model import HEADS, GraftModel
from graft.tta import TTAS
from graft.version import __version__

CONFIG, WEIGHTS, METRICS, RESULT = "config.json", "model.safetensors", "metrics.jsonl", "result.json"
FORMAT_VERSION = 2  # 2: the run description (graft.config.FitConfig) under "fit"


@dataclass
class SavedRun:
    """A run loaded from its folder: the saved config (a dict, as written) and the model, ready to predict."""

    path: Path
    config: dict[str, Any]
    model: GraftModel

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.config["preprocessing"])

    @property
    def tta(self) -> str:
        """The test-time augmentation the run predicts with (:mod:`graft.tta`); runs made before it had none."""
        return str(self.config.get("tta", "none"))


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG).is_file()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically: a temporary file, flushed to disk, then renamed over ``path``.

    A crash (even SIGKILL or a power cut) at any instant leaves either the old file or the new one,
    never half of one; a full disk is a :class:`graft.errors.DiskFull`, with the previous file intact.
    Tensors on a GPU are copied to the CPU first: the file is the same whichever device held them.
    """
    with replacing(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())


def save_run(path: Path, model: GraftModel, config: dict[str, Any]) -> None:
    """Write the model's weights and its config (with the format version) into ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    save_tensors(path / WEIGHTS, model.state_dict())
    write_json(path / CONFIG, {"format_version": FORMAT_VERSION, "graft_version": __version__, **config})


def read_config(path: Path) -> dict[str, Any]:
    """The run's config, checked for what loading needs, with a one-line error for anything amiss."""
    file = Path(path) / CONFIG
    if not Path(path).exists():
        raise GraftError(f"run directory {path} does not exist")
    try:
        config = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise GraftError(f"{path} is not a graft run directory: {CONFIG} is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GraftError(f"cannot read {file}: {exc}; the run directory is damaged, train it again") from exc
    if not isinstance(config, dict):
        raise GraftError(f"{file} is not a graft run config (expected a JSON object)")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise GraftError(
            f"{file} has run format {version!r}, this graft ({__version__}) reads format {FORMAT_VERSION}; "
            "use the graft version that made it, or train the run again"
        )
    for key in ("classes", "backbone", "head", "preprocessing"):
        if key not in config:
            raise GraftError(f"{file} lacks '{key}'; the run directory is damaged, train it again")
    _check_config(file, config)
    return config


MAX_HIDDEN = 8192  # far above any head graft makes; bounds what a crafted config can make us allocate


def _check_config(file: Path, config: dict[str, Any]) -> None:
    """Refuse a config whose values would not build a model, before anything is allocated."""
    classes, head = config["classes"], config["head"]
    if not (
        isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes) and len(set(classes)) == len(classes)
    ):
        raise GraftError(f"{file}: 'classes' must list two or more distinct class names; the run directory is damaged, train it again")
    if not (
        isinstance(head, dict)
        and head.get("kind") in HEADS
        and type(head.get("num_classes")) is int
        and head["num_classes"] == len(classes)
        and type(head.get("hidden")) is int
        and 1 <= head["hidden"] <= MAX_HIDDEN
    ):
        raise GraftError(
            f"{file}: 'head' {head!r} does not describe a head for {len(classes)} classes; the run directory is damaged, train it again"
        )
    if not isinstance(config["backbone"], dict):
        raise GraftError(f"{file}: 'backbone' must be a JSON object; the run directory is damaged, train it again")
    if config.get("tta", "none") not in TTAS:
        raise GraftError(f"{file}: 'tta' {config['tta']!r} is not one of {', '.join(TTAS)}; the run directory is damaged, train it again")
    try:
        Preprocessing.from_dict(config["preprocessing"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GraftError(f"{file}: 'preprocessing' is unusable ({exc}); the run directory is damaged, train it again") from exc


def load_run(path: Path) -> SavedRun:
    """Rebuild the architecture from the config and fill in the safetensors weights."""
    path = Path(path)
    config = read_config(path)
    try:
        head = config["head"]
        model = GraftModel(build_backbone(config["backbone"]), int(head["num_classes"]), head["kind"], int(head["hidden"]))
        state = load_file(str(path / WEIGHTS), device="cpu")
    except FileNotFoundError as exc:
        raise GraftError(f"{path / WEIGHTS} is missing; the run did not finish, train it again") from exc
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
        raise GraftError(f"cannot load the model in {path}: {exc}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise GraftError(f"weights in {path / WEIGHTS} do not fit the architecture in {CONFIG}: {first}") from exc
    model.eval()
    return SavedRun(path=path, config=config, model=model)

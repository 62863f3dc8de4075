"""An augmented ``finetune``'s frozen blocks run apart from the trained ones, and through a faster copy on a long phase.

With augmentation the images change every step, so the frozen first blocks cannot be computed once; they
still run without autograd, and where the phase's steps predict more than ``COMPILE_AFTER_SECONDS`` of their
eager work, through a copy built once for the phase (:class:`graft.inference.FrozenForward`). The rows,
one process, side by side (``finetune --unfreeze 2``, lite0 with ImageNet weights, ``strong`` augmentation,
480 training, 120 validation and 300 test 300x300 photo crops, batch 32, 3 epochs):

- ``whole``: every step through the whole backbone (the frozen blocks under autograd, recording nothing), as before;
- ``apart``: the frozen blocks apart, eager (what a short phase like this one gets), and their outputs on the
  validation images computed once for the phase (graft's default since 2026-12-07);
- ``apart-val-whole``: ``apart``, but each validation pass through the whole network, as before that;
- ``apart-copy``: apart, through the copy a long phase builds, forced from the first step here (its build
  time lands in epoch 1);
- ``plain-fp32``: the hand-written fp32 loop of ``benchmarks/speed.py`` on the same images (2 epochs).

    flock /work/cpu.lock env PYTHONPATH=. python benchmarks/frozen_forward.py

Raw figures: ``benchmarks/frozen_forward.json`` (each epoch's seconds as the trainer records them, the whole fit's
seconds with its set-up, the validation images' frozen-block pass included, test accuracy and its interval).
"""

import importlib
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import BATCH, photo_split, plain_run

from graft import inference
from graft.evaluation import logits_of
from graft.metrics import wilson_interval
from graft.model import GraftModel
from graft.sources import create_backbone
from graft.strategies import get_strategy
from graft.train.settings import TrainSettings
from graft.train.trainer import seed_everything, train_model

OUT = Path(__file__).with_suffix(".json")
trainer = importlib.import_module("graft.train.trainer")


class Forced(inference.FrozenForward):
    """The copy a long phase builds, built on the first step of this short one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runner.mode = "on"


def graft_run(variant: str, split: Any, settings: TrainSettings) -> dict[str, Any]:
    real_split, real_forward, real_val = trainer.split_frozen_prefix, trainer.FrozenForward, trainer.Trainer._fed_val
    if variant == "apart-val-whole":
        trainer.Trainer._fed_val = lambda *args: None
    if variant == "whole":
        trainer.split_frozen_prefix = lambda backbone, frozen: None
    if variant == "apart-copy":
        trainer.FrozenForward = Forced
    try:
        seed_everything(0)
        model = GraftModel(create_backbone("tf_efficientnet_lite0"), len(split.classes))
        fitted = train_model(model, get_strategy("finetune", unfreeze=2), split, settings)
    finally:
        trainer.split_frozen_prefix, trainer.FrozenForward, trainer.Trainer._fed_val = real_split, real_forward, real_val
    logits, labels = logits_of(model, Path(split.root), split.test, model.backbone.preprocessing)
    correct = int((logits.argmax(1) == labels).sum())
    epochs = [round(r["seconds"], 2) for r in fitted.history]
    return {"epoch_seconds": epochs, "fit_seconds": round(fitted.train_seconds, 2), "correct": correct, "total": len(labels)}


def main() -> None:
    settings = TrainSettings(epochs=3, batch_size=BATCH, patience=3, augment="strong")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        split = photo_split(Path(folder), 80)
        os.environ["GRAFT_HOME"] = str(Path(folder) / "home")
        for variant in ("whole", "apart-val-whole", "apart", "apart-copy"):
            rows.append({"variant": variant, **graft_run(variant, split, settings)})
            print(rows[-1], flush=True)
        seconds, correct, total = plain_run(get_strategy("finetune", unfreeze=2), replace(settings, epochs=2), split, len(split.classes))
        rows.append({"variant": "plain-fp32", "epoch_seconds": [round(seconds, 2)] * 2, "correct": correct, "total": total})
    for row in rows:
        interval = wilson_interval(row["correct"], row["total"])
        row["test_accuracy"], row["test_interval"] = row["correct"] / row["total"], [round(interval.low, 4), round(interval.high, 4)]
    plain = rows[-1]["epoch_seconds"][0]
    for row in rows:
        row["last_epoch_vs_plain_fp32"] = round(plain / row["epoch_seconds"][-1], 2)
    OUT.write_text(json.dumps({"cpu": torch.backends.cpu.get_cpu_capability(), "rows": rows}, indent=1) + "\n")
    for row in rows:
        print(
            f"{row['variant']:>12}: epochs {row['epoch_seconds']} s, last {row['last_epoch_vs_plain_fp32']}x plain fp32, test {row['test_accuracy']:.1%}"
        )


if __name__ == "__main__":
    main()

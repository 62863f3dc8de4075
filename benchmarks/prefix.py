"""The frozen prefix computed once: a ``finetune`` epoch with it against the same epoch through the whole backbone.

``finetune --unfreeze 2`` (lite0, the last two blocks, no augmentation) on fashion 5-9 at 100 training
images a class (validation capped at 50 a class), fitted twice per round in one process: once as graft
does now (the frozen stem and first five stages run once per image, :mod:`graft.backbones.prefix`) and
once with the split refused, so every epoch runs the whole backbone, as before. Rounds alternate the order,
so a neighbour's load on a shared machine falls on both. Reported: the seconds of each epoch (the first
epoch of the prefix run includes computing the prefix), the whole fit's train seconds, and the validation
and test accuracy of each, which must agree.

    PYTHONPATH=. python benchmarks/prefix.py [--rounds 2] [--epochs 3]
"""

import argparse
import json
import platform
from pathlib import Path
from statistics import median
from typing import Any

import torch

from benchmarks.recipe import capped_split
from graft import api
from graft.train import trainer

OUT = Path(__file__).with_suffix(".json")


def fit(split: Any, epochs: int, prefix: bool, out: Path) -> dict[str, Any]:
    real = trainer.split_frozen_prefix
    if not prefix:
        trainer.split_frozen_prefix = lambda backbone, frozen: None  # type: ignore[assignment]
    try:
        run = api.fit(
            "fashion", classes="5-9", strategy="finetune", unfreeze=2, split=split, epochs=epochs, out=out, overwrite=True, report=False
        )
    finally:
        trainer.split_frozen_prefix = real  # type: ignore[assignment]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "prefix": prefix,
        "epoch_seconds": [r["seconds"] for r in records],
        "train_seconds": run.result.train_seconds,
        "val_accuracy": records[-1]["val_accuracy"],
        "test_accuracy": run.result.test_accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/prefix-bench"))
    args = parser.parse_args()
    split = capped_split("fashion", "5-9", 100, 50, 200)
    runs = []
    for round_ in range(args.rounds):
        for prefix in (True, False) if round_ % 2 == 0 else (False, True):
            runs.append(fit(split, args.epochs, prefix, args.out / f"{round_}-{prefix}"))
            print(json.dumps(runs[-1]), flush=True)

    def later(prefix: bool) -> float:  # epochs after the first: the steady cost of an epoch
        return median(s for r in runs if r["prefix"] is prefix for s in r["epoch_seconds"][1:])

    summary = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "train_images": len(split.train),
        "val_images": len(split.val),
        "epochs": args.epochs,
        "later_epoch_seconds": {"whole": later(False), "prefix": later(True)},
        "later_epoch_speedup": round(later(False) / later(True), 2),
        "train_seconds_speedup": round(
            median(r["train_seconds"] for r in runs if not r["prefix"]) / median(r["train_seconds"] for r in runs if r["prefix"]), 2
        ),
        "runs": runs,
    }
    OUT.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))


if __name__ == "__main__":
    main()

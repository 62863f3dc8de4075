"""Class imbalance: does the default (``class_weight="auto"``) beat unweighted training on balanced accuracy?

The data set is built from a built-in one: Fashion-MNIST classes 5-9 with one class (7, sneakers,
confusable with sandals and ankle boots) rare in every part, as a class is rare in a real data set:
graft's seeded split of the five classes, then 100 training images a class but 10 of the rare one, and
the validation and test parts cut the same way (the rare class at a tenth of the others' count). Each
strategy is fitted with the default backbone and settings, once with ``class_weight="auto"`` (on these
uneven classes: the logit adjustment chosen on validation, graft.train.adjustment), once with ``"none"``
and, with ``--weights auto,none,balanced``, once with a class-weighted loss, on that same split. Balanced
accuracy comes with its 95% interval (stratified bootstrap), and the rare class's recall is reported beside it.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/imbalance.py [--strategies features,finetune] [--weights auto,none]

Rows are merged into the output by (strategy, class_weight), so strategies can run as separate invocations.
Where a strategy ran with both ``auto`` and ``none``, the two models are also compared on the same test
images: the difference of their balanced accuracies bootstrapped with the same resample of each class's
images for both, so the interval is that of the difference itself, not two overlapping ones.
"""

import argparse
import json
import os
import platform
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import graft
from graft.data.dataset import load_data
from graft.data.split import Split, make_split, subsample
from graft.metrics import CONFIDENCE, RESAMPLES, balanced_accuracy_interval

DATA, CLASSES, RARE = "fashion", "5-9", "7"
SIZES = {"train": (100, 10), "val": (200, 20), "test": (1000, 100)}  # per part: (images of each common class, of the rare one)


def imbalanced_split(seed: int = 0) -> Split:
    """graft's seeded split of fashion 5-9, each part cut to :data:`SIZES` (a subset of what a balanced fit would see)."""
    split = make_split(load_data(DATA, CLASSES), seed=seed)
    rare = split.classes.index(RARE)

    def cut(samples: list[tuple[str, int]], common: int, few: int) -> list[tuple[str, int]]:
        kept = subsample(samples, common, seed)
        return [s for s in kept if s[1] != rare] + subsample([s for s in kept if s[1] == rare], few, seed)

    return replace(split, **{part: cut(getattr(split, part), *sizes) for part, sizes in SIZES.items()})


def balanced_interval(result: graft.RunResult, support: dict[str, int]) -> list[float]:
    """The 95% interval of balanced accuracy from per-class recall and counts (all the bootstrap needs)."""
    labels = np.concatenate([np.full(n, i) for i, n in enumerate(support.values())])
    correct = np.concatenate([np.arange(n) < round(result.per_class_recall[c] * n) for c, n in support.items()])
    interval = balanced_accuracy_interval(labels, correct)
    return [round(interval.low, 4), round(interval.high, 4)]


def run(strategy: str, weight: str, split: Split, folder: Path) -> tuple[graft.Run, dict[str, Any]]:
    fitted = graft.fit(
        DATA, classes=CLASSES, strategy=strategy, class_weight=weight, split=split, out=folder / f"{strategy}-{weight}", report=False
    )
    r = fitted.result
    support = {c: sum(1 for _, y in split.test if split.classes[y] == c) for c in split.classes}
    row = {
        "strategy": strategy,
        "class_weight": weight,
        "test_accuracy": r.test_accuracy,
        "test_accuracy_interval": r.test_accuracy_interval,
        "balanced_accuracy": r.balanced_accuracy,
        "balanced_accuracy_interval": balanced_interval(r, support),
        "macro_f1": r.macro_f1,
        "rare_recall": r.per_class_recall[RARE],
        "per_class_recall": r.per_class_recall,
        "train_seconds": r.train_seconds,
        "epochs": r.epochs,
        "logit_adjustment": r.logit_adjustment,
    }
    print(
        f"   {strategy} {weight}: balanced {r.balanced_accuracy:.4f} {row['balanced_accuracy_interval']}, rare recall {row['rare_recall']:.3f}"
    )
    return fitted, row


def paired(runs: dict[str, graft.Run], seed: int = 0) -> dict[str, Any]:
    """Balanced accuracy of the ``auto`` and the ``none`` run on the same test images, and their difference's 95% interval."""
    right = {}
    for weight, run in runs.items():
        images = run.evaluate(per_image=True).per_image or []
        right[weight] = np.array([row["true"] == row["predicted"] for row in images])
        labels = np.array([row["true"] for row in images])
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    rng = np.random.default_rng(seed)

    def balanced(correct: np.ndarray, draw: list[np.ndarray]) -> float:
        return float(np.mean([correct[index].mean() for index in draw]))

    draws = [[rng.choice(m, len(m)) for m in members] for _ in range(RESAMPLES)]
    gains = np.array([balanced(right["auto"], d) - balanced(right["none"], d) for d in draws])
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(gains, [tail, 1 - tail])
    figures = {k: balanced(v, members) for k, v in right.items()}
    print(f"   paired: auto {figures['auto']:.4f}, none {figures['none']:.4f}, gain 95% [{low:.4f}, {high:.4f}]")
    return {"balanced_accuracy": figures, "gain": figures["auto"] - figures["none"], "gain_interval": [float(low), float(high)]}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| strategy | class_weight | balanced accuracy (95%) | accuracy (95%) | rare class recall | macro F1 | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, a = r["balanced_accuracy_interval"], r["test_accuracy_interval"]
        lines.append(
            f"| {r['strategy']} | {r['class_weight']} | {r['balanced_accuracy']:.2%} ({b[0]:.1%}-{b[1]:.1%}) | "
            f"{r['test_accuracy']:.2%} ({a[0]:.1%}-{a[1]:.1%}) | {r['rare_recall']:.1%} | {r['macro_f1']:.2%} | {r['train_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="features,finetune")
    parser.add_argument("--weights", default="auto,none")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    saved = json.loads(args.output.read_text()) if args.output.is_file() else {}
    split = imbalanced_split()
    old, pairs = saved.get("rows", []), saved.get("paired", {})
    sizes = {part: len(getattr(split, part)) for part in SIZES}
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    summary = {"data": DATA, "classes": CLASSES, "rare": RARE, "sizes": SIZES, "images": sizes, "machine": machine}
    with tempfile.TemporaryDirectory(prefix="graft-imbalance-") as folder:
        for strategy in args.strategies.split(","):
            runs = {}
            for weight in args.weights.split(","):
                runs[weight], row = run(strategy, weight, split, Path(folder))
                old = [r for r in old if (r["strategy"], r["class_weight"]) != (strategy, weight)] + [row]
                args.output.write_text(json.dumps({**summary, "rows": old, "paired": pairs}, indent=1) + "\n")
            if {"auto", "none"} <= runs.keys():
                pairs[strategy] = paired({w: runs[w] for w in ("auto", "none")})
                args.output.write_text(json.dumps({**summary, "rows": old, "paired": pairs}, indent=1) + "\n")
    print(table(old))


if __name__ == "__main__":
    main()

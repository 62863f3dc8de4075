"""The fine-tuning recipe by ablation: today's recipe, the new default, and the new default with one element off.

Each row is one ``graft.fit`` on a fixed, seeded split of a case; rows are appended to
``benchmarks/recipe.json`` as they finish (a partial run still counts; a row already there is skipped
unless ``--again``). Defaults are chosen on the VALIDATION figures (the kept model's validation accuracy,
what the trainer itself selects on); the test figures are reported beside them, never used to choose.

    PYTHONPATH=. python benchmarks/recipe.py --cases fashion-100 --variants before,select-metric,no-ema

To fit a 2-core CPU, the validation part is capped at ``val`` images a class and the test part at ``test``
images a class, each a seeded stratified subset (the same images for every variant of a case).
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from graft import api
from graft.advice import stratified_sample
from graft.data.dataset import load_data
from graft.data.split import Split, make_split
from graft.experiments import PRETRAIN
from graft.inference import resolve
from graft.train import recipe, trainer

OUT = Path(__file__).with_suffix(".json")

# case -> data, classes, training images a class, validation cap a class, test cap a class, extra settings.
# src:fashion-0to4 is graft's small CNN pretrained on Fashion-MNIST classes 0-4 (27,000 images, 2 epochs, as
# benchmarks/advise_vs_finetune.py does), made on first use under OUT/sources.
# Devanagari's 46 classes run at 96x96 (its images are 32x32): at 224 one run at 100 a class takes half an
# hour on two shared cores; the size ablation (size-*) is measured on fashion and devanagari-30.
CASES: dict[str, tuple[str, str | None, int, int, int, dict[str, Any]]] = {
    "fashion-100": ("fashion", "5-9", 100, 50, 200, {}),
    "fashion-100-src": ("fashion", "5-9", 100, 50, 200, {"backbone": "src:fashion-0to4"}),
    "devanagari-30": ("devanagari", None, 30, 10, 20, {"image_size": 96}),
    "devanagari-100": ("devanagari", None, 100, 10, 20, {"image_size": 96}),
}

# variant -> strategy, settings, and whether the epoch kept is chosen on the validation loss (today's rule).
# Every variant spells out the settings it measures, so a default changed later cannot change a row.
# The recipe before this ablation: BatchNorm statistics from each batch in layers that train, every backbone at a
# tenth of the head's rate, finetune's last block (run() adds unfreeze 1 where a finetune variant names none).
BEFORE: dict[str, Any] = {"ema": False, "augment": "none", "batchnorm": "train", "backbone_lr_scale": 0.1, "progressive": False}
NEW: dict[str, Any] = {**BEFORE, "ema": True}
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "before": ("finetune", BEFORE, True),  # the recipe before the ablation: lowest validation loss kept, no weight average
    "select-metric": ("finetune", NEW, False),  # best epoch on the validation metric, weight average competing
    "no-ema": ("finetune", {**NEW, "ema": False}, False),
    "select-loss": ("finetune", NEW, True),
    "trivial": ("finetune", {**NEW, "augment": "trivial"}, False),
    "trivial-flip": ("finetune", {**NEW, "augment": "trivial-flip"}, False),
    "light": ("finetune", {**NEW, "augment": "light"}, False),
    "size-224": ("finetune", {**NEW, "image_size": 224}, False),
    "size-128": ("finetune", {**NEW, "image_size": 128}, False),
    "size-96": ("finetune", {**NEW, "image_size": 96}, False),
    "size-64": ("finetune", {**NEW, "image_size": 64}, False),
    "smoothing-0.1": ("finetune", {**NEW, "label_smoothing": 0.1}, False),
    "unfreeze-2": ("finetune", {**NEW, "unfreeze": 2}, False),
    "unfreeze-3": ("finetune", {**NEW, "unfreeze": 3}, False),
    "unfreeze-2-lr-0.3": ("finetune", {**NEW, "unfreeze": 2, "backbone_lr_scale": 0.3}, False),
    "unfreeze-2-trivial": ("finetune", {**NEW, "unfreeze": 2, "augment": "trivial"}, False),
    "unfreeze-2-smoothing-0.1": ("finetune", {**NEW, "unfreeze": 2, "label_smoothing": 0.1}, False),
    "unfreeze-2-lr-1": ("finetune", {**NEW, "unfreeze": 2, "backbone_lr_scale": 1.0}, False),
    "unfreeze-2-bn-frozen": ("finetune", {**NEW, "unfreeze": 2, "batchnorm": "frozen"}, False),
    "unfreeze-2-lr-1-bn-frozen": ("finetune", {**NEW, "unfreeze": 2, "backbone_lr_scale": 1.0, "batchnorm": "frozen"}, False),
    "unfreeze-2-lr-1-bn-frozen-no-ema": (
        "finetune",
        {**NEW, "unfreeze": 2, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False},
        False,
    ),
    "unfreeze-3-lr-1-bn-frozen-no-ema": (
        "finetune",
        {**NEW, "unfreeze": 3, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False},
        False,
    ),
    # graft's finetune default now on lite0: the last half of its 8 blocks at the head's rate, pretrained BatchNorm statistics
    "unfreeze-4-lr-1-bn-frozen-no-ema": (
        "finetune",
        {**NEW, "unfreeze": 4, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False},
        False,
    ),
    # today's finetune default fed NxN images (devanagari's cases default to 96, fashion's to lite0's 224)
    **{
        f"unfreeze-4-lr-1-bn-frozen-no-ema-size-{n}": (
            "finetune",
            {**NEW, "unfreeze": 4, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False, "image_size": n},
            False,
        )
        for n in (96, 128, 224)
    },
    "full-lr-1-bn-frozen-no-ema": ("full", {**NEW, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False}, False),
    # progressive resizing (graft.train.resolution) on today's full default: the first half of the epochs at 0.7 of the side
    "full-lr-1-bn-frozen-no-ema-progressive": (
        "full",
        {**NEW, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False, "progressive": True},
        False,
    ),
    "full-lr-0.3-bn-frozen-no-ema": ("full", {**NEW, "backbone_lr_scale": 0.3, "batchnorm": "frozen", "ema": False}, False),
    # layer-wise learning-rate decay (timm's --layer-decay) on today's defaults: each block 0.7x the next one's rate
    "full-lr-1-bn-frozen-no-ema-layer-decay-0.7": (
        "full",
        {**NEW, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False, "layer_decay": 0.7},
        False,
    ),
    "unfreeze-4-lr-1-bn-frozen-no-ema-layer-decay-0.7": (
        "finetune",
        {**NEW, "unfreeze": 4, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False, "layer_decay": 0.7},
        False,
    ),
    # batch mixing (graft.train.mixing) on today's finetune default: mixup or CutMix, one of the two each batch
    "unfreeze-4-lr-1-bn-frozen-no-ema-mixup-cutmix": (
        "finetune",
        {**NEW, "unfreeze": 4, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False, "mix": "mixup-cutmix"},
        False,
    ),
    # stochastic depth (graft.backbones.droppath) on today's finetune default: up to 0.2 in the last block, timm's rate for
    # training EfficientNet-B0
    "unfreeze-4-lr-1-bn-frozen-no-ema-drop-path-0.2": (
        "finetune",
        {**NEW, "unfreeze": 4, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False, "drop_path": 0.2},
        False,
    ),
    # the head's learning rate (every trained layer's, at backbone_lr_scale 1) a third and three times the default 1e-3:
    # whether a learning-rate finder has anything to find
    **{
        f"unfreeze-4-lr-1-bn-frozen-no-ema-lr-{lr:g}": (
            "finetune",
            {**NEW, "unfreeze": 4, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False, "lr": lr},
            False,
        )
        for lr in (3e-4, 3e-3)
    },
    "unfreeze-2-lr-1-bn-frozen-no-ema-size-128": (
        "finetune",
        {**NEW, "unfreeze": 2, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "ema": False, "image_size": 128},
        False,
    ),
    "unfreeze-1-lr-1-bn-frozen": ("finetune", {**NEW, "unfreeze": 1, "backbone_lr_scale": 1.0, "batchnorm": "frozen"}, False),
    "unfreeze-2-lr-1-bn-frozen-trivial": (
        "finetune",
        {**NEW, "unfreeze": 2, "backbone_lr_scale": 1.0, "batchnorm": "frozen", "augment": "trivial"},
        False,
    ),
    "unfreeze-2-lr-0.3-bn-frozen": ("finetune", {**NEW, "unfreeze": 2, "backbone_lr_scale": 0.3, "batchnorm": "frozen"}, False),
    "full-before": ("full", BEFORE, True),
    "full": ("full", NEW, False),
    "full-trivial": ("full", {**NEW, "augment": "trivial"}, False),
    "full-size-64": ("full", {**NEW, "image_size": 64}, False),
    "lpft": ("lpft", NEW, False),
    "lpft-bn-frozen": ("lpft", {**NEW, "batchnorm": "frozen"}, False),
    "full-bn-frozen": ("full", {**NEW, "batchnorm": "frozen"}, False),
    "full-lr-0.3-bn-frozen": ("full", {**NEW, "backbone_lr_scale": 0.3, "batchnorm": "frozen"}, False),
    "scratch": ("scratch", NEW, False),  # lite0's architecture from random weights
    "scratch-smallcnn": ("scratch", {**NEW, "backbone": "smallcnn", "image_size": None}, False),  # graft's small CNN at 28x28
    "frozen": ("frozen", NEW, False),
    **{f"frozen-size-{n}": ("frozen", {**NEW, "image_size": n}, False) for n in (96, 128, 224)},  # the solved probe fed NxN images
}


def capped_split(data: str, classes: str | None, per_class: int, val: int, test: int) -> Split:
    split = make_split(load_data(data, classes), seed=0)
    k = len(split.classes)
    return replace(
        split,
        train=stratified_sample(split.train, per_class * k, 0),
        val=stratified_sample(split.val, val * k, 0),
        test=stratified_sample(split.test, test * k, 0),
    )


def by_loss(logits: Any, labels: Any, loss: float, metric: str) -> recipe.Score:
    """Today's rule, for the ablation: the lowest validation loss is the best score."""
    return recipe.Score(-loss, loss)


def kept_validation(run: Path) -> dict[str, Any]:
    """The validation accuracy (and balanced accuracy where recorded) of the epoch, or average, the run kept."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    if "solver" in last:
        return {"val_accuracy": last["val_accuracy"], "kept": "solved"}
    best = last["best"]
    record = next(r for r in records if r["epoch"] == best["epoch"] and r["phase"] == last["phase"])
    prefix = "ema_val" if best["of"] == "ema" else "val"
    return {
        "val_accuracy": record[f"{prefix}_accuracy"],
        "val_loss": record[f"{prefix}_loss"],
        "kept": f"{best['of']} of epoch {best['epoch']}",
        "epochs_run": len(records),
    }


def source(out: Path) -> str:
    """The Fashion 0-4 source run, pretrained on first use."""
    run = out / "sources" / "fashion-0to4"
    if not (run / "model.safetensors").is_file():
        api.fit(
            "fashion", classes="0-4", backbone="smallcnn", strategy="scratch", out=run, settings=replace(PRETRAIN, epochs=2), overwrite=True
        )
    return str(run)


def run(case: str, variant: str, out: Path) -> dict[str, Any]:
    data, classes, per_class, val, test, extra = CASES[case]
    strategy, settings, loss_rule = VARIANTS[variant]
    options = {**extra, **settings}
    if options.get("backbone") == "src:fashion-0to4":
        options["backbone"] = source(out)
        options.pop("image_size", None)  # the small CNN's own 28x28
    if strategy == "finetune":
        options.setdefault("unfreeze", 1)
    split = capped_split(data, classes, per_class, val, test)
    trainer.score = by_loss if loss_rule else recipe.score  # type: ignore[assignment]
    try:
        result = api.fit(
            data, classes=classes, strategy=strategy, split=split, out=out / case / variant, overwrite=True, report=False, **options
        ).result
    finally:
        trainer.score = recipe.score  # type: ignore[assignment]
    return {
        "case": case,
        "variant": variant,
        "strategy": strategy,
        "settings": options,
        "select": "val_loss" if loss_rule else "val_metric",
        "precision": resolve("auto"),
        "train_images": len(split.train),
        "val_images": len(split.val),
        "test_images": len(split.test),
        **kept_validation(out / case / variant),
        "test_accuracy": round(result.test_accuracy, 4),
        "test_accuracy_interval": result.test_accuracy_interval,
        "balanced_accuracy": round(result.balanced_accuracy, 4),
        "train_seconds": result.train_seconds,
        "epochs": result.epochs,
    }


def same(row: dict[str, Any], case: str, variant: str, precision: str) -> bool:
    """Whether ``row`` measured ``variant`` on ``case`` in ``precision`` (rows before the field was kept: bf16)."""
    return (row["case"], row["variant"], row.get("precision", "bf16")) == (case, variant, precision)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as the markdown table docs/results.md shows, case by case in the order measured."""
    lines = [
        "| case | variant | precision | kept | val acc | test acc | 95% interval | balanced acc | epochs | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (list(CASES).index(r["case"]), list(VARIANTS).index(r["variant"]))):
        low, high = r["test_accuracy_interval"]
        lines.append(
            f"| {r['case']} | {r['variant']} | {r.get('precision', 'bf16')} | {r['kept']} | {r['val_accuracy']:.2%} | {r['test_accuracy']:.2%} | "
            f"{low:.1%}-{high:.1%} | {r['balanced_accuracy']:.2%} | {r['epochs']} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument(
        "--variants", default="before,unfreeze-4-lr-1-bn-frozen-no-ema", help="default: the old recipe and graft's default now"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/recipe-bench"))
    parser.add_argument("--again", action="store_true", help="run rows already in recipe.json again (replacing them)")
    parser.add_argument("--table", action="store_true", help="print recipe.json as a markdown table and stop")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = json.loads(OUT.read_text()) if OUT.is_file() else []
    if args.table:
        print(table(rows))
        return
    precision = resolve("auto")  # rows made in bf16 (an AVX-512 CPU) and in fp32 (AVX2) are measured apart
    for case in args.cases.split(","):
        for variant in args.variants.split(","):
            if not args.again and any(same(r, case, variant, precision) for r in rows):
                print(f"== {case} {variant} ({precision}): already measured")
                continue
            print(f"== {case} {variant} ({precision})", flush=True)
            row = run(case, variant, args.out)
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if not same(r, case, variant, precision)] + [row]
            OUT.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

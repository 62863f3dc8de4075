"""The reference experiments, each one command: ``graft experiment NAME``; each runs on one ``device`` (:mod:`graft.device`)."""

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from graft import api
from graft.comparison import compare, write_table
from graft.console import log
from graft.results import COLUMNS
from graft.train.settings import TrainSettings

# Source pretraining recipe: augmentation and a hidden dense layer make features that transfer.
PRETRAIN = TrainSettings(epochs=15, head="mlp", augment="light", patience=4)


def split_digits(out: Path, overwrite: bool = False, device: str = "auto") -> dict[str, Any]:
    """Pretrain the small CNN on digits 0-6, then compare frozen, full and scratch on digits 7-9."""
    log("split-digits: pretraining the small CNN on digits 0-6", style="bold")
    settings = replace(PRETRAIN, device=device)
    source = api.fit(
        "digits", classes="0-6", backbone="smallcnn", strategy="scratch", out=out / "source", settings=settings, overwrite=overwrite
    )
    log(f"source model: {source.test_accuracy:.2%} test accuracy on 0-6 in {source.result.train_seconds:.0f}s; transferring to 7-9")
    target = out / "target"
    rows = compare(
        "digits", ["frozen", "full", "scratch"], classes="7-9", backbone=str(out / "source"), out=target, overwrite=overwrite, device=device
    )
    return {"source": source.to_dict(), "target": [row.to_dict() for row in rows]}


# Learning-curve experiments: one comparison per number of training images a class (None: all of them).
# Fewer images get smaller batches and more epochs, so that every size takes a sensible number of steps;
# validation and test images are the same at every size. The head is a dense layer of 128 units.
SWEEP_COLUMNS = ("per_class", "backbone", *COLUMNS)
FEW = TrainSettings(epochs=15, batch_size=16, patience=5, head="mlp")  # ~10 a class
SOME = TrainSettings(epochs=10, batch_size=32, patience=4, head="mlp")  # ~100 a class
MANY = TrainSettings(epochs=5, head="mlp")  # ~1,000 a class


def sweep(
    data: str,
    arms: list[tuple[str, str, list[str], dict[str, Any] | None]],
    sizes: dict[int | None, TrainSettings],
    out: Path,
    classes: str | None = None,
    overwrite: bool = False,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """For each training size, each arm ``(label, backbone, strategies, strategy options)`` on one split.

    All comparisons at a size share the split exactly (same data, classes, seed and ``per_class``), so
    their accuracies are measured on the same test images. ``experiment.csv`` grows after each arm.
    """
    rows: list[dict[str, Any]] = []
    for per_class, base in sizes.items():
        size = "all" if per_class is None else str(per_class)
        settings = replace(base, per_class=per_class, device=device)
        for label, backbone, strategies, options in arms:
            log(f"{size} training images a class: {label} {', '.join(strategies)}", style="bold")
            target = out / f"per-class-{size}" / label.replace("/", "-")
            compared = compare(
                data, strategies, classes=classes, backbone=backbone, out=target, settings=settings, overwrite=overwrite, **(options or {})
            )
            rows += [{"per_class": size, "backbone": label, **row.to_dict()} for row in compared]
            write_table(out, rows, SWEEP_COLUMNS, name="experiment")
    return rows


def split_fashion(out: Path, overwrite: bool = False, device: str = "auto") -> dict[str, Any]:
    """Pretrain the small CNN on Fashion-MNIST 0-4 (T-shirt .. coat), transfer to 5-9 (sandal .. ankle boot).

    frozen, full and scratch with 10, 100, 1000 and all (about 5,400) target training images a class:
    where transfer beats training from scratch, and where the gap closes.
    """
    start = time.perf_counter()
    log("split-fashion: pretraining the small CNN on Fashion-MNIST classes 0-4 (27,000 training images)", style="bold")
    settings = replace(PRETRAIN, epochs=2, device=device)  # 2 x 27,000 images: a CPU budget of a few minutes
    source = api.fit(
        "fashion", classes="0-4", backbone="smallcnn", strategy="scratch", out=out / "source", settings=settings, overwrite=overwrite
    )
    log(f"source model: {source.test_accuracy:.2%} test accuracy on 0-4 in {source.result.train_seconds:.0f}s; transferring to 5-9")
    arms = [("smallcnn/fashion0-4", str(out / "source"), ["frozen", "full", "scratch"], None)]
    # All (about 5,400 a class) gets 2 epochs: a CPU budget, enough for the end of the curve.
    sizes = {10: FEW, 100: SOME, 1000: MANY, None: replace(MANY, epochs=2)}
    rows = sweep("fashion", arms, sizes, out, classes="5-9", overwrite=overwrite, device=device)
    return {"source": source.to_dict(), "target": rows, "columns": list(SWEEP_COLUMNS), "seconds": round(time.perf_counter() - start, 1)}


IMAGENET, IMAGENET_UNFREEZE = "tf_efficientnet_lite0", 2  # the last 2 of its 8 blocks: 2.7M of 3.4M parameters


def devanagari(out: Path, overwrite: bool = False, device: str = "auto") -> dict[str, Any]:
    """The 46 Devanagari classes with 10, 100 and all training images a class, every approach on one split.

    (1) the ImageNet backbone (tf_efficientnet_lite0, offline weights) fully frozen under a new dense head,
    on its cached bottleneck features; (2) the same backbone with its last ``IMAGENET_UNFREEZE`` blocks
    fine-tuned; (3) the small CNN pretrained on all ten MNIST digits, convolutions frozen under a new dense
    head; (4) the small CNN trained from scratch.
    """
    start = time.perf_counter()
    log("devanagari: pretraining the small CNN on the ten digits", style="bold")
    settings = replace(PRETRAIN, epochs=5, device=device)  # 4,000 training digits: a CPU budget
    source = api.fit("digits", backbone="smallcnn", strategy="scratch", out=out / "source", settings=settings, overwrite=overwrite)
    log(f"source model: {source.test_accuracy:.2%} test accuracy on digits in {source.result.train_seconds:.0f}s")
    arms = [
        (IMAGENET, IMAGENET, ["features", "finetune"], {"unfreeze": IMAGENET_UNFREEZE}),
        ("smallcnn/digits", str(out / "source"), ["frozen", "scratch"], None),
    ]
    sizes = {10: FEW, 100: SOME, None: replace(SOME, epochs=5)}  # all: 180 a class
    rows = sweep("devanagari", arms, sizes, out, overwrite=overwrite, device=device)
    return {"source": source.to_dict(), "target": rows, "columns": list(SWEEP_COLUMNS), "seconds": round(time.perf_counter() - start, 1)}


EXPERIMENTS: dict[str, Callable[[Path, bool, str], dict[str, Any]]] = {
    "split-digits": split_digits,
    "split-fashion": split_fashion,
    "devanagari": devanagari,
}

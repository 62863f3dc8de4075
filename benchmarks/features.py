"""Feature extraction speed, and what caching bottleneck features saves.

    PYTHONPATH=. .venv/bin/python benchmarks/features.py [--images 64] [--epochs 5]

1. Images per second of feature extraction (inference mode, batch 32, 224x224, random weights: speed does
   not depend on the values) for resnet50 and tf_efficientnet_lite0: the network alone on ready tensors,
   and end to end through graft's loader (JPEG decode, resize, crop, normalise) and ``forward_all``.
2. Training a head for ``--epochs`` epochs on the ``photos`` crops: on cached features (one backbone pass,
   then epochs over tensors) against recomputing the frozen backbone every epoch (the ``frozen`` strategy
   with augmentation, which has to). Both in this one process, one after the other, same split.
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table


def throughput(backbone: torch.nn.Module, images: int, batch: int) -> float:
    backbone.eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        backbone(x[:2])  # warm-up: first-call allocations
        start = time.perf_counter()
        for _ in range(max(images // batch, 1)):
            backbone(x)
    return max(images // batch, 1) * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images per throughput measurement")
    parser.add_argument("--epochs", type=int, default=5, help="head-training epochs in the cache comparison")
    parser.add_argument("--per-class", type=int, default=12, help="photos crops per class in the cache comparison")
    args = parser.parse_args()
    os.environ["GRAFT_HOME"] = tempfile.mkdtemp(prefix="graft-bench-")  # a cold feature cache, removed at the end

    from graft.backbones import TimmBackbone
    from graft.data.builtin import dataset_root
    from graft.data.loader import make_loader
    from graft.data.sources import load_image_set
    from graft.data.split import make_split
    from graft.inference import forward_all
    from graft.model import GraftModel
    from graft.strategies import get_strategy
    from graft.train.settings import TrainSettings
    from graft.train.trainer import Trainer

    console = Console()
    photos = dataset_root("photos")
    subset = Path(os.environ["GRAFT_HOME"]) / "subset"
    for folder in sorted(photos.iterdir()):
        (subset / folder.name).mkdir(parents=True)
        for file in sorted(folder.iterdir())[: args.per_class]:
            shutil.copy(file, subset / folder.name / file.name)
    images = load_image_set(subset)

    speed = Table(title=f"feature extraction, 224x224, batch 32, {torch.get_num_threads()} torch threads")
    for column in ("backbone", "network only (img/s)", "decode + network (img/s)"):
        speed.add_column(column, justify="right")
    for name in ("resnet50", "tf_efficientnet_lite0"):
        backbone = TimmBackbone(name)
        net = throughput(backbone, args.images, 32)
        loader = make_loader(subset, images.samples, backbone.preprocessing, batch_size=32)
        start = time.perf_counter()
        forward_all(backbone, loader)
        end_to_end = len(images.samples) / (time.perf_counter() - start)
        speed.add_row(name, f"{net:.1f}", f"{end_to_end:.1f}")
    console.print(speed)

    split = make_split(images, seed=0)
    backbone = TimmBackbone("tf_efficientnet_lite0")
    settings = TrainSettings(epochs=args.epochs, batch_size=32, patience=args.epochs, augment="light")
    timings = {}
    for label, strategy in (
        ("cached features, cold cache", "features"),
        ("cached features, warm cache", "features"),
        ("backbone every epoch", "frozen"),
    ):
        start = time.perf_counter()
        Trainer(settings).fit(GraftModel(backbone, len(split.classes)), get_strategy(strategy), split)
        timings[label] = time.perf_counter() - start
    recompute = timings["backbone every epoch"]
    cache = Table(
        title=f"head training, tf_efficientnet_lite0, {len(split.train)} train + {len(split.val)} val images, {args.epochs} epochs"
    )
    for column in ("how", "seconds", "recompute / this"):
        cache.add_column(column, justify="right")
    for label, seconds in timings.items():
        cache.add_row(label, f"{seconds:.1f}", f"{recompute / seconds:.1f}x")
    console.print(cache)
    shutil.rmtree(os.environ["GRAFT_HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()

"""One process with 2 threads against 2 processes with 1 thread each (torch.distributed, gloo), measured in one run.

    python benchmarks/distributed.py      # writes benchmarks/distributed.json
    python benchmarks/bench.py --only distributed   # the same, and its rows into results.json beside the others

Both sides run the same worker under torch's launcher (``torch.distributed.run --standalone``), with the
same cores: ``--nproc-per-node 1`` and ``OMP_NUM_THREADS=2`` against ``--nproc-per-node 2`` and
``OMP_NUM_THREADS=1``. Each worker measures, between two barriers so that the slowest rank counts:

1. ``extract``: filling an empty feature cache (:class:`graft.features.FeatureCache`) with
   tf_efficientnet_lite0 (ImageNet weights, 224x224, graft's default precision) for ``--images`` Fashion-MNIST
   images from their files: hash, decode, resize, network, write. Two processes split the images.
2. ``finetune``: seconds per epoch of ``finetune --unfreeze 2`` (lite0) over ``--per-class`` images a class
   at global batch 32, as the trainer reports it (training steps and validation): two processes run
   DDP at 16 images a step each.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).parent
RESULTS = HERE / "distributed.json"
BATCH = 32
SIDES = ((1, 2), (2, 1))  # (processes, threads each): the same two cores


def worker(images: int, per_class: int, epochs: int, cache: Path, out: Path) -> None:
    """One rank's share of both measurements; rank 0 writes them to ``out``."""
    from bench import real_images  # benchmarks/ is this script's folder, so on sys.path

    from graft import distributed
    from graft.data.sources import load_image_set
    from graft.data.split import make_split, subsample
    from graft.features import FeatureCache
    from graft.inference import forward_all
    from graft.model import GraftModel
    from graft.sources import create_backbone
    from graft.strategies import get_strategy
    from graft.train.settings import TrainSettings
    from graft.train.trainer import seed_everything, train_model

    with distributed.process_group("cpu"):
        root, samples = real_images(images // 10 + 1)
        samples = samples[:images]
        backbone = create_backbone("tf_efficientnet_lite0")
        forward_all(backbone, [(torch.randn(BATCH, 3, 224, 224), torch.zeros(BATCH))])  # oneDNN's kernels made before the clock starts
        distributed.barrier()
        start = time.perf_counter()
        FeatureCache(backbone, root=cache).fill(root, samples, batch_size=BATCH)
        distributed.barrier()
        extract = time.perf_counter() - start

        split = make_split(load_image_set(root), seed=0, per_class=per_class)
        split = replace(split, val=subsample(split.val, max(per_class // 4, 1)), test=[])
        seed_everything(0)
        model = GraftModel(create_backbone("tf_efficientnet_lite0"), len(split.classes))
        settings = TrainSettings(epochs=epochs, batch_size=BATCH, patience=epochs, device="cpu")
        fitted = train_model(model, get_strategy("finetune", unfreeze=2), split, settings)
        if distributed.is_main():
            record = {
                "processes": distributed.world_size(),
                "threads": torch.get_num_threads(),
                "extract_images": len(samples),
                "extract_seconds": extract,
                "train_images": len(split.train),
                "epoch_seconds": [r["seconds"] for r in fitted.history],
                "val_accuracy": fitted.history[-1]["val_accuracy"],
            }
            out.write_text(json.dumps(record))


def measure(images: int, per_class: int, epochs: int) -> list[dict[str, Any]]:
    """Both sides, one after the other, each in fresh processes with an empty cache; their records."""
    records = []
    for processes, threads in SIDES:
        with tempfile.TemporaryDirectory() as home:
            out = Path(home) / "record.json"
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GRAFT_HOME": home}
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
            args = [str(Path(__file__).resolve()), "worker", str(images), str(per_class), str(epochs), str(Path(home) / "cache"), str(out)]
            subprocess.run([*launcher, *args], env=env, check=True)
            records.append(json.loads(out.read_text()))
    return records


def rows(records: list[dict[str, Any]]) -> list[tuple[str, float, str, float | None]]:
    """``(name, value, unit, baseline)``: 2 processes x 1 thread as the value, 1 process x 2 threads as the baseline."""
    one, two = records
    rate = [r["extract_images"] / r["extract_seconds"] for r in records]
    epoch = [min(r["epoch_seconds"]) for r in records]  # the best epoch: the first also warms oneDNN's kernels up
    return [
        ("distributed/extract_lite0/images_per_s_1proc_2threads", rate[0], "images/s", None),
        ("distributed/extract_lite0/2proc_1thread_vs_1proc_2threads", rate[1], "images/s", rate[0]),
        ("distributed/finetune_lite0/epoch_seconds_1proc_2threads", epoch[0], "s", None),
        ("distributed/finetune_lite0/epochs_per_hour_2proc_1thread_vs_1proc_2threads", 3600 / epoch[1], "epochs/h", 3600 / epoch[0]),
        ("distributed/finetune_lite0/val_accuracy_difference", (two["val_accuracy"] - one["val_accuracy"]) * 100, "points", None),
    ]


def run(images: int = 300, per_class: int = 16, epochs: int = 2, output: Path = RESULTS) -> list[dict[str, Any]]:
    """Measure both sides, write ``output`` (the raw records and the rows), return the rows."""
    records = measure(images, per_class, epochs)
    table = [
        {"name": n, "value": round(v, 4), "unit": u, **({"baseline": round(b, 4), "ratio": round(v / b, 3)} if b else {})}
        for n, v, u, b in rows(records)
    ]
    output.write_text(json.dumps({"records": records, "rows": table}, indent=1) + "\n")
    return table


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        images, per_class, epochs = map(int, sys.argv[2:5])
        worker(images, per_class, epochs, Path(sys.argv[5]), Path(sys.argv[6]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="images to extract features of")
    parser.add_argument("--per-class", type=int, default=16, help="training images a class for the fine-tuning epochs")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    for row in run(args.images, args.per_class, args.epochs, args.output):
        print(row)


if __name__ == "__main__":
    main()

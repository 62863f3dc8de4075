"""graft's decoding threads (kept, one OpenMP thread each) against threads that start OpenMP teams.

Each measurement in a fresh process (OpenMP teams live as long as their threads), the three variants
alternating for ``--rounds`` rounds; raw figures in ``benchmarks/threads.json``.

- ``one_openmp``: graft's :func:`graft.data.decoded.threaded_map` since late 2026-12-07: threads kept for the
  process, each running torch's kernels on one OpenMP thread, so they start no teams;
- ``per_call``: graft's for a few hours (2026-12-07, commit ea2e347): a batch's threads, and the OpenMP teams they start, are gone
  when the batch is done;
- ``kept``: one pool of threads for the whole process, as graft had it until 2026-12-07: their OpenMP teams
  live on, and GNU OpenMP stops letting any team spin between parallel regions.

What is measured, in each process:

- ``jitter``: ``ColorJitter(0.3, 0.3, 0.3)`` on a batch of 32 224x224 uint8 crops in the main thread, as
  ``strong`` augmentation runs it, after the threads have normalised one batch: median of 5 (ms);
- ``finetune`` and ``full``: a lite0 training run of two epochs on ``make bench``'s photo split (480 training,
  120 validation images, ``strong`` augmentation): each epoch's seconds as the trainer records them;
- ``files``: lite0's cold feature cache over 2,000 300x300 photo files (the pass graft runs most): images a
  second.

    flock /work/cpu.lock env PYTHONPATH=. python benchmarks/threads.py
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).with_suffix(".json")
VARIANTS = ("kept", "per_call", "one_openmp")
MEASURES = ("jitter", "finetune", "full", "files")
FILES = 2000


def child(variant: str, measure: str, folder: Path) -> dict[str, object]:
    """One measurement of one variant, in this (fresh) process."""
    import torch
    from torchvision.transforms import v2

    from benchmarks.measure import median_seconds
    from benchmarks.speed import BATCH, photo_split
    from graft.data import decoded

    if variant != "one_openmp":  # graft's own threaded_map replaced by the variant's, where the loaders call it
        from concurrent.futures import ThreadPoolExecutor

        from graft.data import loader

        if variant == "kept":
            pool = ThreadPoolExecutor(max_workers=torch.get_num_threads(), thread_name_prefix="kept")
            decoded.threaded_map = loader.threaded_map = lambda function, items: list(pool.map(function, items))
        else:

            def per_call(function, items):  # graft's threaded_map of commit fcbb41b
                with ThreadPoolExecutor(max_workers=min(torch.get_num_threads(), len(items)), thread_name_prefix="per-call") as pool:
                    return list(pool.map(function, items))

            decoded.threaded_map = loader.threaded_map = per_call
    os.environ["GRAFT_HOME"] = str(folder / f"home-{variant}-{measure}-{os.getpid()}")  # a cold feature cache
    if measure == "jitter":
        from graft.data.transforms import Preprocessing, normalize_transform

        torch.manual_seed(0)
        crops = [torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8) for _ in range(BATCH)]
        pre = Preprocessing(input_size=(3, 224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875)
        decoded.threaded_map(normalize_transform(pre), crops)
        jitter = v2.ColorJitter(0.3, 0.3, 0.3)
        return {"ms": round(1000 * median_seconds(lambda: [jitter(c) for c in crops], 5), 1)}
    if measure == "files":
        from graft.features import cached_features
        from graft.sources import create_backbone

        root = folder / "files"
        samples = [(str(p.relative_to(root)), 0) for p in sorted(root.rglob("*.*"))]
        backbone = create_backbone("tf_efficientnet_lite0")
        tick = time.perf_counter()
        cached_features(backbone, root, samples, batch_size=BATCH)
        return {"images_per_s": round(len(samples) / (time.perf_counter() - tick), 1)}
    from graft.model import GraftModel
    from graft.sources import create_backbone
    from graft.strategies import get_strategy
    from graft.train.settings import TrainSettings
    from graft.train.trainer import seed_everything, train_model

    split = photo_split(folder / "split", 80)
    strategy = get_strategy("finetune", unfreeze=2) if measure == "finetune" else get_strategy(measure)
    seed_everything(0)
    model = GraftModel(create_backbone("tf_efficientnet_lite0"), len(split.classes))
    fitted = train_model(model, strategy, split, TrainSettings(epochs=2, batch_size=BATCH, patience=2, augment="strong"))
    return {"epoch_seconds": [record["seconds"] for record in fitted.history], "val_accuracy": fitted.history[-1]["val_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default=",".join(MEASURES), help=f"comma-separated: {','.join(MEASURES)}")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, measure, folder = args.child
        print(json.dumps(child(variant, measure, Path(folder))))
        return
    from benchmarks.measure import machine
    from benchmarks.speed import make_photos

    measures = args.only.split(",")
    rows: dict[str, dict[str, list[dict[str, object]]]] = {m: {v: [] for v in VARIANTS} for m in measures}
    with tempfile.TemporaryDirectory() as folder:
        make_photos(Path(folder) / "files", FILES)
        for measure in measures:
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    command = [sys.executable, __file__, "--child", variant, measure, folder]
                    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                    rows[measure][variant].append(json.loads(output.strip().splitlines()[-1]))
                    print(measure, variant, rows[measure][variant][-1], flush=True)
    old = json.loads(OUT.read_text()) if OUT.is_file() else {}
    OUT.write_text(json.dumps({**old, "machine": machine(), **rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

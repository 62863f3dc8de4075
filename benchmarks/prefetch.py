"""An inference pass from image files with and without the next batch decoded in a background thread.

``graft.inference.forward_batches`` reads a loader without worker processes through
``graft.prefetch.prefetched``; this measures what that buys against the same pass reading the loader
directly, alternating the two (``reps`` pairs) on the same 300x300 photo files, each with a cold feature
cache, beside eager fp32 timm as a user writes it. Raw figures in ``benchmarks/prefetch.json``:

    flock /work/cpu.lock env PYTHONPATH=. python benchmarks/prefetch.py --count 2000 --reps 3
"""

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import graft.inference
from graft.features import cached_features
from graft.sources import create_backbone

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import eager_features, make_photos

OUT = Path(__file__).with_suffix(".json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    args = parser.parse_args()
    with_prefetch = graft.inference.prefetched
    rows: dict[str, list[float]] = {"prefetch": [], "no prefetch": []}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        samples = make_photos(root, args.count)
        torch.manual_seed(0)
        backbone = create_backbone(args.backbone, weights=None if args.backbone == "tf_efficientnet_lite0" else "random")
        tick = time.perf_counter()
        eager_features(copy.deepcopy(backbone.model).eval(), root, samples)
        eager = args.count / (time.perf_counter() - tick)
        for rep in range(args.reps):
            for label, wrap in (("no prefetch", lambda batches: batches), ("prefetch", with_prefetch)):
                graft.inference.prefetched = wrap  # type: ignore[assignment]
                os.environ["GRAFT_HOME"] = str(Path(folder) / f"home-{label}-{rep}")  # a cold feature cache each time
                tick = time.perf_counter()
                cached_features(backbone, root, samples, batch_size=32)
                rows[label].append(args.count / (time.perf_counter() - tick))
                print(f"{label} {rep}: {rows[label][-1]:.1f} images/s ({rows[label][-1] / eager:.2f}x eager fp32)", flush=True)
    graft.inference.prefetched = with_prefetch
    mean = {label: sum(v) / len(v) for label, v in rows.items()}
    record = {
        "backbone": args.backbone,
        "images": args.count,
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "eager_timm_fp32": eager,
        "images_per_second": rows,
        "mean": mean,
        "prefetch_vs_none": mean["prefetch"] / mean["no prefetch"],
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()

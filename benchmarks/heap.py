"""graft.heap (freed memory kept while graft computes) against glibc's defaults and PyTorch's huge pages.

Each variant in a fresh process (glibc's settings and ``THP_MEM_ALLOC_ENABLE`` are per process; the latter is
read before torch's first allocation), alternating for ``--rounds`` rounds: ``graft.inference.forward_all``
over ``--batches`` batches of 32 random 224x224 images through ``--network`` (lite0's ImageNet weights or
random ones: the time does not depend on them), at graft's default precision, two passes, the second timed:
images a second and the process's minor page faults over both passes. Raw figures in ``benchmarks/heap.json``.

- ``defaults``: glibc as it comes (graft.heap switched off in that process);
- ``kept``: graft's default (:func:`graft.heap.freed_memory_kept` around each pass);
- ``huge_pages``: glibc's defaults with ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's own allocator option).

    flock /work/cpu.lock env PYTHONPATH=. python benchmarks/heap.py
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).with_suffix(".json")
VARIANTS = ("defaults", "kept", "huge_pages")


def child(variant: str, network: str, batches: int) -> dict[str, float]:
    """One variant's measurement, in this (fresh) process."""
    if variant == "huge_pages":
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"  # before torch allocates anything
    import resource
    import time

    import torch

    from graft import heap
    from graft.inference import forward_all
    from graft.sources import create_backbone

    if variant != "kept":
        heap._glibc = lambda: None  # graft.heap leaves glibc as it is
    torch.manual_seed(0)
    backbone = create_backbone(network, None if network == "tf_efficientnet_lite0" else "random")
    data = [(torch.randn(32, 3, 224, 224), torch.zeros(32, dtype=torch.long)) for _ in range(batches)]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    forward_all(backbone, data)
    tick = time.perf_counter()
    forward_all(backbone, data)
    seconds = time.perf_counter() - tick
    return {"images_per_s": round(32 * batches / seconds, 1), "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="tf_efficientnet_lite0")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.network, args.batches)))
        return
    from benchmarks.measure import machine

    rows: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--child", variant, "--network", args.network, "--batches", str(args.batches)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows[variant].append(json.loads(output.strip().splitlines()[-1]))
            print(variant, rows[variant][-1], flush=True)
    best = {variant: max(r["images_per_s"] for r in runs) for variant, runs in rows.items()}
    record = {
        "machine": machine(),
        "network": args.network,
        "batches": args.batches,
        "rounds": rows,
        "best_images_per_s": best,
        "kept_vs_defaults": round(best["kept"] / best["defaults"], 3),
        "kept_vs_huge_pages": round(best["kept"] / best["huge_pages"], 3),
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("best_images_per_s", "kept_vs_defaults", "kept_vs_huge_pages")}))


if __name__ == "__main__":
    main()

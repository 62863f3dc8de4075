"""BatchNorm folded into the convolutions (graft.folding) against the network as it is, in an inference pass.

Two parts, one process, raw figures in ``benchmarks/folding.json``:

- speed: batches of 32 random 224x224 images, channels-last, inference mode, each network (random weights
  but lite0's) eager and folded alternating for ``--rounds`` rounds (median seconds a batch each round), in
  bf16 autocast where the CPU has native bf16 and in fp32 (what an AVX2-only CPU runs), with the folded
  copy's outputs against the network's in fp32 (lowest cosine) and the seconds folding took;
- accuracy: folding changes bf16's rounding (the folded weights are rounded to bf16 instead of the
  convolution's output being normalised in fp32; depthwise filters so that each keeps its sum, see
  ``graft.folding.sum_keeping_round``), so the ``features`` strategy on lite0 in bf16, on the
  ``--cases`` of ``benchmarks/recipe.py`` (a cold feature cache each), with nothing folded, only dense
  convolutions' BatchNorms folded, and all (graft's choice): test accuracy with its 95% interval.

    flock /work/cpu.lock env PYTHONPATH=. python benchmarks/folding.py
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.measure import machine, median_seconds
from benchmarks.recipe import CASES, capped_split
from graft import api, folding
from graft.folding import folded_batchnorm
from graft.inference import autocast, native_bf16, prepare, to_channels_last
from graft.sources import create_backbone

OUT = Path(__file__).with_suffix(".json")
NETWORKS = ("tf_efficientnet_lite0", "resnet50", "mobilenetv3_large_100", "efficientnet_b0")
PRETRAINED = {"tf_efficientnet_lite0"}  # weights that ship offline; the others random (same arithmetic, same time)


def batch_seconds(module: torch.nn.Module, x: torch.Tensor, precision: str, repeats: int) -> float:
    """Median seconds of one batch over ``repeats`` after a warm-up batch."""
    with torch.inference_mode(), autocast(precision):
        return median_seconds(lambda: module(x), repeats)


def measure(name: str, precisions: list[str], rounds: int, repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    backbone = prepare(create_backbone(name, None if name in PRETRAINED else "random")).eval()
    x = to_channels_last(torch.randn(32, 3, 224, 224))
    tick = time.perf_counter()
    folded = folded_batchnorm(backbone)
    fold_seconds = time.perf_counter() - tick
    assert folded is not None, name
    with torch.inference_mode():
        cosine = torch.nn.functional.cosine_similarity(folded(x), backbone(x)).min().item()
    row: dict[str, object] = {"network": name, "fold_seconds": round(fold_seconds, 3), "fp32_cosine_min": round(cosine, 6)}
    for precision in precisions:
        pairs = [(batch_seconds(backbone, x, precision, repeats), batch_seconds(folded, x, precision, repeats)) for _ in range(rounds)]
        eager, fast = min(p[0] for p in pairs), min(p[1] for p in pairs)
        row[precision] = {"eager_s": round(eager, 4), "folded_s": round(fast, 4), "speedup": round(eager / fast, 3), "rounds": pairs}
        print(name, precision, row[precision]["speedup"], f"{eager:.3f} -> {fast:.3f} s a batch", flush=True)
    return row


def accuracy(case: str, out: Path) -> list[dict[str, Any]]:
    """The features strategy's test accuracy on ``case`` with nothing, dense convolutions' or every BatchNorm folded."""
    data, classes, per_class, val, test, extra = CASES[case]
    split = capped_split(data, classes, per_class, val, test)
    every = folding._foldable
    choices = {"none": lambda conv, norm: False, "dense": lambda conv, norm: every(conv, norm) and conv.groups == 1, "all": every}
    rows = []
    try:
        for choice, rule in choices.items():
            os.environ["GRAFT_HOME"] = str(out / f"home-{case}-{choice}")  # a cold feature cache: the features are computed
            folding._foldable = rule
            result = api.fit(
                data, classes=classes, strategy="features", split=split, out=out / case / choice, report=False, precision="bf16", **extra
            ).result
            rows.append(
                {"case": case, "folded": choice, "test_accuracy": round(result.test_accuracy, 4), "interval": result.test_accuracy_interval}
            )
            print(rows[-1], flush=True)
    finally:
        folding._foldable = every
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed batches a round (median)")
    parser.add_argument(
        "--cases", default="fashion-100,devanagari-100", help="benchmarks/recipe.py cases for the accuracy part ('' skips it)"
    )
    args = parser.parse_args()
    precisions = (["bf16"] if native_bf16() else []) + ["fp32"]
    with tempfile.TemporaryDirectory() as folder:
        accuracies = [row for case in filter(None, args.cases.split(",")) for row in accuracy(case, Path(folder))]
    record = {
        "machine": machine(),
        "networks": [measure(name, precisions, args.rounds, args.repeats) for name in NETWORKS],
        "features_accuracy_bf16": accuracies,
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()

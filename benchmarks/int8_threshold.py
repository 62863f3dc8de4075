"""Where an int8 copy starts to pay: graft's ``--precision auto`` pass with int8 tried from any length or never.

``graft.inference`` builds an int8 copy on a pass's fourth batch once the second and third batches predict more
than ``INT8_AFTER_SECONDS`` of eager work for the rest. The build (export, calibration, Inductor) costs about
10 s for resnet50 on two cores, so below some predicted work it loses. This measures where: one
``graft.inference.forward_all`` pass over each of ``LENGTHS``' numbers of batches of 32 random 224x224 images (the
time does not depend on them) through each network, once with int8 tried whatever the prediction (threshold 0) and once never
(the pass stays in bf16, or fp32 where the CPU lacks native bf16), each in a fresh process, alternating. Each
row has the pass's seconds both ways and the eager work the runner predicted on its fourth batch, which is
what the threshold is compared with. Passes stay under ``COMPILE_AFTER_SECONDS`` (three minutes). Raw figures
in ``benchmarks/int8_threshold.json``.

    flock /work/cpu.lock .venv/bin/python benchmarks/int8_threshold.py
"""

import argparse
import json
from pathlib import Path

from speed import in_own_process

OUT = Path(__file__).with_suffix(".json")
LENGTHS = {"resnet50": (15, 30, 45, 60), "vgg16": (5, 10, 15, 20)}  # batches of 32 a pass

CHILD = """
import json, sys, time
import torch
from graft import inference
from speed import seeded_backbone

name, batches, threshold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
inference.INT8_AFTER_SECONDS = threshold
predicted = []
due = inference._Runner._int8_due
def observed(runner):  # the prediction the runner decides on, as it decides
    if runner.done == 3 and not predicted:
        predicted.append(runner._eager_left())
    return due(runner)
inference._Runner._int8_due = observed
model = seeded_backbone(name)
g = torch.Generator().manual_seed(0)
data = [(torch.randn(32, 3, 224, 224, generator=g), torch.zeros(32)) for _ in range(batches)]
start = time.perf_counter()
inference.forward_all(model, data)
print(json.dumps({"seconds": time.perf_counter() - start, "predicted_eager_seconds": predicted[0]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(LENGTHS), help="comma-separated timm names (default: %(default)s)")
    args = parser.parse_args()
    rows = []
    for name in args.networks.split(","):
        for batches in LENGTHS.get(name, LENGTHS["resnet50"]):
            never = in_own_process(CHILD, name, str(batches), "inf")
            always = in_own_process(CHILD, name, str(batches), "0")
            row = {
                "network": name,
                "images": 32 * batches,
                "predicted_eager_seconds": round(never["predicted_eager_seconds"], 1),
                "floating_seconds": round(never["seconds"], 2),
                "int8_seconds": round(always["seconds"], 2),
                "int8_saves_seconds": round(never["seconds"] - always["seconds"], 2),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    OUT.write_text(json.dumps({"batch": 32, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

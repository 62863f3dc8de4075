"""One `full` training step of tf_efficientnet_lite0 (batch 32, 224x224), eager against torch.compile, fp32 against bf16.

What a compiled forward and backward would buy graft's fine-tuning epochs on this CPU: each variant runs two
warm-up steps (the compiled ones compile there), then ``steps`` timed steps, AdamW, BatchNorm statistics
frozen as graft's default recipe keeps them, channels-last as graft lays out its networks. The steps run one
after another in one process. Raw figures in ``benchmarks/train_step.json``:

    flock /work/cpu.lock env PYTHONPATH=. python benchmarks/train_step.py
"""

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.measure import machine
from graft.inference import prepare, to_channels_last
from graft.model import GraftModel
from graft.sources import create_backbone

OUT = Path(__file__).with_suffix(".json")


def model() -> nn.Module:
    torch.manual_seed(0)
    net = GraftModel(create_backbone("tf_efficientnet_lite0"), 10)
    prepare(net).train()
    for layer in net.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.eval()  # graft's --batchnorm frozen
    return net


def seconds_a_step(net: nn.Module, bf16: bool, steps: int) -> tuple[float, float]:
    """(seconds of the first two steps, seconds a step after them)."""
    inputs, labels = to_channels_last(torch.randn(32, 3, 224, 224)), torch.randint(0, 10, (32,))
    optimizer = torch.optim.AdamW(net.parameters(), 1e-4, foreach=True)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(net(inputs).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    tick = time.perf_counter()
    step()
    step()
    warm = time.perf_counter() - tick
    tick = time.perf_counter()
    for _ in range(steps):
        step()
    return warm, (time.perf_counter() - tick) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    rows = {}
    for name, compiled, bf16 in (
        ("eager fp32", False, False),
        ("eager bf16", False, True),
        ("compiled bf16", True, True),
        ("compiled fp32", True, False),
    ):
        net = model()
        warm, step = seconds_a_step(torch.compile(net) if compiled else net, bf16, args.steps)
        rows[name] = {"first_two_steps_s": round(warm, 2), "step_s": round(step, 3)}
        print(name, rows[name], flush=True)
    base = rows["eager fp32"]["step_s"]
    record = {
        "machine": machine(),
        "steps": rows,
        "vs_eager_fp32": {name: round(base / row["step_s"], 3) for name, row in rows.items()},
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()

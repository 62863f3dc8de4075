"""Depthwise convolutions' backward in bf16 training steps: aten's (oneDNN) against graft.train.depthwise.

Two parts, one process, raw figures in ``benchmarks/depthwise.json``:

- each of tf_efficientnet_lite0's 16 depthwise convolutions alone (batch 32, 224x224 images, channels-last,
  bf16): forward and backward (input and weight gradients), aten's against the fast backward;
- whole training steps of lite0 (batch 32, 224x224, bf16 autocast, fused AdamW, BatchNorm statistics frozen
  as graft's recipe keeps them): `full`, and the last two of its eight stages with the head (`finetune
  --unfreeze 2`, the frozen stages under no_grad as graft runs them), the two backwards alternating for
  ``--rounds`` rounds.

    flock /work/cpu.lock env PYTHONPATH=. python benchmarks/depthwise.py
"""

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from benchmarks.measure import machine, median_seconds
from graft.inference import prepare, to_channels_last
from graft.model import GraftModel
from graft.sources import create_backbone
from graft.train.depthwise import _FastDepthwise

OUT = Path(__file__).with_suffix(".json")
BATCH, SIDE = 32, 224


def network(trained_stages: int | None) -> nn.Module:
    """lite0 with a 10-class head as graft trains it: every stage (None, `full`) or the last ``trained_stages``."""
    torch.manual_seed(0)
    model = prepare(GraftModel(create_backbone("tf_efficientnet_lite0"), 10))
    model.train()
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.eval()  # --batchnorm frozen, graft's default recipe
    if trained_stages is not None:
        stages = model.backbone.blocks()
        for parameter in nn.Sequential(*stages[: len(stages) - trained_stages]).parameters():
            parameter.requires_grad_(False)
    return model


def step_seconds(trained_stages: int | None, rounds: int, steps: int) -> dict[str, float]:
    model = network(trained_stages)
    images, labels = to_channels_last(torch.randn(BATCH, 3, SIDE, SIDE)), torch.randint(0, 10, (BATCH,))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4, fused=True)

    def step(fast: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if fast:
                with _FastDepthwise():
                    logits = model(images)
            else:
                logits = model(images)
            loss = nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = {"aten": [], "fast": []}
    for _ in range(rounds):
        for name in ("aten", "fast"):
            times[name].append(median_seconds(lambda fast=name == "fast": step(fast), steps))
    return {name: round(min(values), 4) for name, values in times.items()}


def layers(repeats: int) -> list[dict]:
    """Each depthwise convolution of lite0, at the input it sees in a batch of 32 224x224 images."""
    model = prepare(GraftModel(create_backbone("tf_efficientnet_lite0"), 10)).eval()
    seen = []
    hooks = [
        layer.register_forward_hook(lambda layer, inputs, _: seen.append((layer, inputs[0].shape)))
        for layer in model.modules()
        if isinstance(layer, nn.Conv2d) and layer.groups > 1
    ]
    with torch.no_grad():
        model(to_channels_last(torch.randn(BATCH, 3, SIDE, SIDE)))
    for hook in hooks:
        hook.remove()
    rows = []
    for layer, shape in seen:
        x = to_channels_last(torch.randn(shape)).requires_grad_()

        def forward_backward(fast: bool, layer: nn.Module = layer, x: torch.Tensor = x) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                if fast:
                    with _FastDepthwise():
                        out = layer(x)
                else:
                    out = layer(x)
            out.float().sum().backward()

        aten, fast = (median_seconds(lambda fast=fast: forward_backward(fast), repeats) for fast in (False, True))
        row = {
            "input": list(shape),
            "kernel": list(layer.kernel_size),
            "stride": list(layer.stride),
            "padding": list(layer.padding),
            "aten_ms": round(1000 * aten, 2),
            "fast_ms": round(1000 * fast, 2),
        }
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps a round (median)")
    args = parser.parse_args()
    per_layer = layers(repeats=5)
    steps = {
        "full": step_seconds(None, args.rounds, args.steps),
        "finetune_unfreeze_2": step_seconds(2, args.rounds, args.steps),
    }
    for name, row in steps.items():
        row["speedup"] = round(row["aten"] / row["fast"], 3)
        print(name, row, flush=True)
    aten_ms, fast_ms = sum(r["aten_ms"] for r in per_layer), sum(r["fast_ms"] for r in per_layer)
    record = {
        "machine": machine(),
        "layers": per_layer,
        "layers_total_ms": {"aten": round(aten_ms, 1), "fast": round(fast_ms, 1), "speedup": round(aten_ms / fast_ms, 3)},
        "step_seconds": steps,
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["layers_total_ms"]), json.dumps(steps))


if __name__ == "__main__":
    main()

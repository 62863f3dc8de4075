"""What the micro-benchmarks share: the machine a run measured, and the median time of repeated work."""

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from graft.inference import native_bf16


def machine() -> dict[str, object]:
    """The record's ``machine`` entry: figures only compare with figures from the same kind of CPU and torch."""
    return {
        "cpu": platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "native_bf16": native_bf16(),
    }


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``work()`` over ``repeats`` calls after one warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        work()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)

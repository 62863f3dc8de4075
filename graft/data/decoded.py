"""Decode once: a run's images decoded and resized to the training resolution once, kept as uint8 tensors.

Decoding a PNG or JPEG and resizing it costs as much as a lite0 training step on two cores, and an epoch
used to repeat it for every image. :class:`DecodedImages` keeps the output of
:func:`graft.data.transforms.decode_transform` (the deterministic half of the transform) in memory, so
every epoch after the first only augments and normalises uint8 tensors. The store is bounded: it holds at
most ``GRAFT_DECODE_CACHE_MB`` megabytes (default a quarter of the machine's memory, 224x224 RGB images are
147 KB each); images beyond the bound are decoded from their files every epoch, as before, so memory stays
flat however many images there are. The pixels are the same either way: a stored image is exactly what
decoding the file again gives, so a run (and a resumed run) sees the same batches with or without it.

Decoding runs in threads (Pillow and torchvision release the GIL), in the order the caller gives;
augmentation, which draws from the global random generators, stays in the calling thread, in order.
"""

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import get_worker_info

from graft.errors import GraftError

ENV = "GRAFT_DECODE_CACHE_MB"
MEMORY_FRACTION = 0.25  # of the machine's physical memory, when GRAFT_DECODE_CACHE_MB is not set
UNKNOWN_MEMORY_MB = 8192  # what the default assumes where the platform does not say (Windows)
CHUNK = 64  # images decoded at a time while filling: once the bound is reached, no further chunk is decoded

T = TypeVar("T")
R = TypeVar("R")
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own


def form(augment: str) -> str:
    """Which decoded form an augmentation policy starts from: the centre crop, or (``strong``) the shrunk image."""
    return "shrink" if augment == "strong" else "crop"


def threaded_map(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[function(item) for item in items]``, on up to ``torch.get_num_threads()`` threads, results in order.

    The threads are kept for the process (a forked child makes its own), and each runs torch's kernels on
    one OpenMP thread (:func:`_one_openmp_thread`). Why one: a thread that runs torch's parallel kernels
    starts an OpenMP team of its own, which lives as long as the thread, and GNU OpenMP stops letting any
    team spin between parallel regions while it manages more threads than the machine has cores; every
    region of the main thread (a training step's kernels, augmentation's small ones) then waits for its team
    to wake. Kept threads with teams made a batch's ``ColorJitter`` 4x slower on two cores (55 ms against
    14) and a lite0 ``finetune`` epoch 1.4x slower; threads started afresh for each batch (graft's way for a
    few hours) freed the main thread as well but decoded slower and held about 55 MB more
    (``benchmarks/threads.py``, docs/speed.md). The decoding threads are already as many as torch's, so one OpenMP thread
    each loses nothing. In a DataLoader worker process (already one of several) or with one thread it is
    the plain loop.
    """
    global _pool
    threads = torch.get_num_threads()
    if len(items) < 2 or threads < 2 or get_worker_info() is not None:
        return [function(item) for item in items]
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="graft-decode", initializer=_one_openmp_thread))
    return list(_pool[1].map(function, items))


def _one_openmp_thread() -> None:
    """Limit the calling thread's OpenMP teams to itself: no team threads to start, keep or wake.

    OpenMP's thread count is per thread; torch sets the calling thread's on its first kernel, so this asks
    torch first (which does that setting) and limits after it. ``torch.set_num_threads`` would not do: it
    sets every thread's count, the main thread's included.
    """
    torch.get_num_threads()
    threadpool_limits(1, user_api="openmp")


def budget_mb() -> float:
    """The store's bound in MB: ``GRAFT_DECODE_CACHE_MB`` (0 turns it off), else a quarter of physical memory."""
    raw = os.environ.get(ENV)
    if raw is not None:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value >= 0:  # also catches nan
            raise GraftError(f"{ENV}={raw!r} is not a size in megabytes; give a number such as 2048, or 0 to decode from files every epoch")
        return value
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (AttributeError, ValueError, OSError):
        total = UNKNOWN_MEMORY_MB
    return total * MEMORY_FRACTION


class Decodable(Protocol):
    """What :meth:`DecodedImages.fill` needs of a data set (:class:`graft.data.loader.ImageDataset`)."""

    form: str

    def paths(self) -> list[str]: ...

    def decode(self, relative: str) -> torch.Tensor: ...


@dataclass
class DecodedImages:
    """uint8 image tensors of one run, keyed by (form, path relative to the data set root), up to ``budget`` MB."""

    budget: float = field(default_factory=budget_mb)
    used: int = 0  # bytes held
    beyond: set[tuple[str, str]] = field(default_factory=set)  # images that did not fit: decoded every epoch
    tensors: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    reported: int = -1  # how many images the last summary counted

    def room(self) -> float:
        """Bytes the bound leaves: what other per-image tensors of the run (the frozen blocks' outputs) may take."""
        return self.budget * 2**20 - self.used

    def get(self, kind: str, relative: str) -> torch.Tensor | None:
        return self.tensors.get((kind, relative))

    def fill(self, data: Decodable) -> None:
        """Decode ``data``'s images not held yet, in threads, and keep them while they fit in the budget."""
        todo = [p for p in dict.fromkeys(data.paths()) if (data.form, p) not in self.tensors and (data.form, p) not in self.beyond]
        limit = self.budget * 2**20
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            if self.used >= limit:
                self.beyond.update((data.form, p) for p in chunk)
                continue
            for relative, pixels in zip(chunk, threaded_map(data.decode, chunk), strict=True):
                size = pixels.numel() * pixels.element_size()
                if self.used + size > limit:
                    self.beyond.add((data.form, relative))
                    continue
                self.tensors[(data.form, relative)] = pixels.clone(memory_format=torch.contiguous_format)  # not a view of a larger image
                self.used += size

    def summary(self) -> str | None:
        """One line on what the store holds, or None if nothing changed since the last one."""
        if len(self.tensors) + len(self.beyond) == self.reported:
            return None
        self.reported = len(self.tensors) + len(self.beyond)
        line = f"decoded {len(self.tensors):,} images once into memory: {self.used / 2**20:,.0f} MB of the {self.budget:,.0f} MB allowed ({ENV})"
        if self.beyond:
            line += f"; {len(self.beyond):,} beyond it are decoded from their files every epoch"
        return line

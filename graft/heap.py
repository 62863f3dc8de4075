"""Freed memory kept for reuse while graft computes on the CPU, where glibc's malloc would hand every large
block back to the operating system.

Why: glibc serves each allocation above its mmap threshold (128 KiB, adapting up to 32 MiB) with a fresh
``mmap`` and unmaps it when freed, so every activation of an eager forward or training step is new memory,
whose pages the kernel zero-fills on first touch. A lite0 pass of 40 batches of 32 in bf16 took 5-6 million
page faults and ran at 132-150 images/s; with large blocks served from the heap and kept there (no mmap; the
heap's free top returned only past 1 GiB) it took 0.4 million and ran at 233 (docs/speed.md). jemalloc or
tcmalloc would do the same but must be preloaded before the process starts; PyTorch's transparent huge pages
(``THP_MEM_ALLOC_ENABLE``, read once, before the first allocation) gained less (165-195).

Only while graft runs a pass or trains (:func:`freed_memory_kept`, nestable): afterwards glibc's default values
are back and the kept memory is released (``malloc_trim``). One thing cannot be undone: any ``mallopt`` call
turns off glibc's adaptive mmap threshold for the rest of the process, which stays where it had got to; a
plain eager loop measured no slower after graft's context than before it (docs/speed.md).
The peak is unchanged: a block is kept only to be used again. Where the C library is not glibc (macOS, musl,
Windows) nothing changes.
"""

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

KEPT_BYTES = 1 << 30  # freed memory at the heap's top kept up to this much: a training step's activations fit
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt's parameters (malloc.h)
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults
_lock = threading.Lock()
_depth = 0  # how many freed_memory_kept contexts are open (a pass inside a training run)


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Within: large blocks come from the heap and stay there when freed (glibc), for the next batch to reuse."""
    global _depth
    libc = _glibc()
    with _lock:
        _depth += 1
        if _depth == 1 and libc is not None:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, KEPT_BYTES)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and libc is not None:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)

"""graft.heap: inside freed_memory_kept a freed large block is reused without new page faults, and afterwards
glibc's defaults are back (every large block fresh memory again)."""

import resource

import pytest
import torch

from graft import heap

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="glibc's malloc only")

BLOCK = 64 * 1024 * 1024  # above glibc's largest mmap threshold (32 MiB): always fresh pages by default


def _faults_of_allocating(times: int) -> int:
    """Minor page faults of allocating, filling and freeing a BLOCK-sized tensor ``times`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        torch.empty(BLOCK, dtype=torch.uint8).fill_(1)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_freed_blocks_are_reused_inside_and_returned_after() -> None:
    pages = BLOCK // resource.getpagesize()
    assert _faults_of_allocating(4) >= 3 * pages  # by default each allocation is fresh memory
    with heap.freed_memory_kept():
        with heap.freed_memory_kept():  # nested, as a validation pass inside training
            _faults_of_allocating(1)
        assert _faults_of_allocating(4) < pages // 4  # the outer context still keeps memory
    assert heap._depth == 0
    assert _faults_of_allocating(4) >= 3 * pages  # defaults again: nothing lingers in the caller's process

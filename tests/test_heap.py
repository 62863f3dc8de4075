"""graft.heap: inside freed_memory_kept glibc serves a large block from its heap and keeps it there once freed;
by default it maps each one afresh (glibc's own accounting, mallinfo2). In a fresh process: a pass that an
earlier test ran leaves freed address ranges in the heap that later blocks may reuse."""

import subprocess
import sys

import pytest

from graft import heap

CHECK = """
import ctypes
import torch
from graft import heap

BLOCK = 64 * 1024 * 1024  # above glibc's largest mmap threshold (32 MiB): mapped afresh by default
FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
Mallinfo2 = type("Mallinfo2", (ctypes.Structure,), {"_fields_": [(name, ctypes.c_size_t) for name in FIELDS]})
heap._glibc().mallinfo2.restype = Mallinfo2

def allocate():
    tensor = torch.empty(BLOCK, dtype=torch.uint8).fill_(1)
    mapped = heap._glibc().mallinfo2().hblkhd >= BLOCK  # mapped on its own while alive
    del tensor
    return mapped, heap._glibc().mallinfo2().fordblks >= BLOCK  # kept in the heap once freed

results = [allocate()]
with heap.freed_memory_kept():
    with heap.freed_memory_kept():  # nested, as a validation pass inside training
        results.append(allocate())
    results.append(allocate())  # the outer context still keeps memory
print(results, heap._depth)
"""


@pytest.mark.skipif(heap._glibc() is None or not hasattr(heap._glibc(), "mallinfo2"), reason="glibc >= 2.33 only")
def test_freed_blocks_are_kept_inside_and_mapped_afresh_by_default() -> None:
    output = subprocess.run([sys.executable, "-c", CHECK], check=True, capture_output=True, text=True).stdout
    assert output.split() == ["[(True,", "False),", "(False,", "True),", "(False,", "True)]", "0"]

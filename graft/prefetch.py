"""The next batch prepared in a background thread while the caller works on this one.

A DataLoader without worker processes (graft's default, ``--workers 0``) decodes a batch only when asked
for it, so an inference pass alternates between decoding and the network and each waits for the other.
Decoding (Pillow, torchvision) and the network (torch's kernels) both release the GIL, so one thread that
keeps the next batch ready overlaps them without the start-up cost or the memory of worker processes.

Only for passes without random draws: training's augmentation draws from torch's global generator, which
the training step also draws from (dropout), and two threads drawing from it would interleave differently
from run to run, breaking same seed, same run.
"""

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")
DEPTH = 2  # batches kept ready: one being used, one waiting; more only holds memory


class _Raised:
    """An exception the background thread met, to raise in the caller's thread."""

    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def prefetched(items: Iterable[T], depth: int = DEPTH) -> Generator[T, None, None]:
    """``items`` in order, each produced in a background thread up to ``depth`` ahead of the caller.

    An exception in the producer (an unreadable image) is raised in the caller at the item where it
    happened. When the caller stops early (an error, Ctrl-C, ``break``), the producer stops after the item
    it is on: it never runs on unseen.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                ready.put(item)
                if stop.is_set():
                    return
        except BaseException as error:  # noqa: BLE001 - every failure goes to the caller, who decides
            ready.put(_Raised(error))
            return
        ready.put(_DONE)

    thread = threading.Thread(target=produce, name="graft-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish its item
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass

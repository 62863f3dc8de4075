"""Ctrl-C during training, raised at one known point: between two batches.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives. Where that is
inside a ``__del__`` method or a callback, Python prints "Exception ignored" and training simply goes on,
which a loaded machine made happen often enough to fail a test. So while the trainer runs, Ctrl-C only
sets a flag, and :func:`check` (called before every batch) turns it into KeyboardInterrupt there. A second
Ctrl-C interrupts at once, for a batch that never ends.
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from graft.errors import GraftError

_requested = False


def _request(signum: int, frame: FrameType | None) -> None:
    global _requested
    if _requested:
        raise KeyboardInterrupt
    _requested = True


def requested() -> bool:
    """Whether Ctrl-C was pressed inside :func:`deferred_interrupts` and not yet acted on."""
    return _requested


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed inside :func:`deferred_interrupts`; else nothing."""
    if _requested:
        raise KeyboardInterrupt


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Defer SIGINT to the next :func:`check` while the body runs (main thread only: signals go there).

    Nested blocks defer to the outermost one, which alone clears and acts on a pending Ctrl-C: an inner block
    (a trainer inside ``graft auto``) must not forget one pressed before it began.
    """
    global _requested
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is _request:
        yield
        return
    _requested = False
    previous = signal.signal(signal.SIGINT, _request)
    try:
        yield
    except Exception as exc:
        # Under torch.distributed a rank that stopped first makes the others' next collective fail:
        # after Ctrl-C, that failure is the interrupt, not a bug to report.
        if _requested and not isinstance(exc, GraftError):
            raise KeyboardInterrupt from exc
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        pending, _requested = _requested, False
    if pending:  # pressed during the last batch: the run still stops
        raise KeyboardInterrupt

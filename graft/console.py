"""Where graft talks to people: messages and progress on stderr, results alone on stdout.

Keeping stdout for results is what lets ``--json`` output be piped into other programs.
"""

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TextIO, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

T = TypeVar("T")

# Piped into a file or a CI log, rich would assume 80 columns and fold a results table into unreadable slivers;
# there is no screen to fit there, so tables get the width they need (up to LOG_WIDTH). COLUMNS still wins.
LOG_WIDTH = 160


def _width(stream: TextIO) -> int | None:
    return None if stream.isatty() or "COLUMNS" in os.environ else LOG_WIDTH


# The stream itself is looked up at each print (stderr=True, no file=): a test capturing sys.stderr sees it all.
stderr = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))
stdout = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))


def log(message: str, style: str = "") -> None:
    """``message`` on stderr as plain text, in ``style`` if given.

    Never read as rich markup: messages carry paths, class names and exception texts, and a folder named
    ``[/x]`` or ``[bold]`` must print as itself, not raise ``MarkupError`` or vanish into styling.
    """
    stderr.print(Text(message, style=style))


def warn(message: str) -> None:
    """``warning: message`` on stderr, the prefix in yellow, the message as plain text (see :func:`log`)."""
    stderr.print(Text.assemble(("warning: ", "yellow"), message))


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A transient progress bar over ``items`` when stderr is a terminal; plain iteration otherwise."""
    if not stderr.is_terminal:
        yield from items
        return
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        yield from progress.track(items, total=total, description=description)


# torch's own notices while it compiles or torchao loads ("No CUDA runtime is found" on a CPU machine, an
# enum registration deprecated inside torchao): about torch's internals, nothing a graft user can act on.
TORCH_NOTICES = ("torch.utils.cpp_extension", "torch.utils._pytree")


@contextmanager
def quiet_torch_notices() -> Iterator[None]:
    """Warnings of :data:`TORCH_NOTICES` left out inside the block; errors still come through."""
    loggers = [logging.getLogger(name) for name in TORCH_NOTICES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

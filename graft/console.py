"""Where graft talks to people: messages and progress on stderr, results alone on stdout.

Keeping stdout for results is what lets ``--json`` output be piped into other programs.
"""

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)


def log(message: str) -> None:
    stderr.print(message)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A transient progress bar over ``items`` when stderr is a terminal; plain iteration otherwise."""
    if not stderr.is_terminal:
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        yield from progress.track(items, total=total, description=description)

"""Files replaced whole or not at all, and a full disk reported in one line instead of a traceback.

Every file graft keeps (checkpoints, weights, configs, feature-cache entries) is written to a temporary
sibling and renamed over its target: a crash, a Ctrl-C or a full disk leaves the previous version.
"""

import errno
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from graft.errors import DiskFull

# No space, over quota, over the file-size limit: all three are "free some space", none is a bug.
FULL = {code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if code is not None}
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how safetensors' Rust writer reports errno: only in its message


def full_disk_errno(exc: BaseException) -> int | None:
    """The errno of ``exc`` if it says the disk (or quota) is full, else None."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None and (found := _RUST_OS_ERROR.search(str(exc))):
        code = int(found.group(1))
    return code if code in FULL else None


@contextmanager
def replacing(path: Path, tmp: Path | None = None) -> Iterator[Path]:
    """Yield the temporary file to write (default ``path`` + ``.tmp``); renamed over ``path`` when the block ends.

    If the block fails, the temporary file is removed and ``path`` is left as it was; a full disk becomes
    :class:`DiskFull` naming ``path``.
    """
    tmp = tmp or path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if (full := disk_full(path, exc)) is not None:
            raise full from exc
        raise


def disk_full(path: Path, exc: BaseException) -> DiskFull | None:
    """The :class:`DiskFull` to raise for ``exc`` while writing ``path``, if a full disk caused it."""
    code = full_disk_errno(exc)
    return None if code is None else DiskFull(f"cannot write {path}: the disk is full ({os.strerror(code)}); free some space")


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a file."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2))


def append_line(path: Path, line: str) -> None:
    """Append one line (a log such as ``metrics.jsonl``); a full disk is :class:`DiskFull`, not a traceback."""
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        if (full := disk_full(path, exc)) is not None:
            raise full from exc
        raise

"""Files replaced whole or not at all, and a full disk reported in one line instead of a traceback.

Every file graft keeps (checkpoints, weights, configs, feature-cache entries) is written to a temporary
sibling and renamed over its target: a crash, a Ctrl-C or a full disk leaves the previous version.
"""

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
        code = full_disk_errno(exc)
        if code is not None:
            raise DiskFull(f"cannot write {path}: the disk is full ({os.strerror(code)}); free some space") from exc
        raise

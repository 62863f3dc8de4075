"""The folder a fit, comparison or experiment writes into: a new one, or graft's own earlier output replaced.

``--overwrite`` must never cost a user a file graft did not write: a folder is replaced only when it is
recognisably graft's (a run, a comparison, an experiment, or one interrupted half way) and holds nothing
else. Replacing moves the old folder aside first and deletes it only once the new one exists, so a
failure on the way leaves the old run where it was.
"""

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from graft.atomic import full_disk_errno
from graft.console import warn
from graft.data.imageset import BAD_IMAGES
from graft.data.split import SPLIT_FILE
from graft.errors import DiskFull, GraftError
from graft.export import EXPORT_DIR, FORMATS, PREPROCESSING
from graft.report.metrics import COMPARISON, LEADERBOARD, REPORT
from graft.report.tensorboard import TENSORBOARD_DIR
from graft.rundir import CONFIG, METRICS, RESULT, WEIGHTS
from graft.train.checkpoint import CHECKPOINT

# Files that only graft makes: one of them (anywhere in the tree) is what marks a folder as graft's.
# experiment.* and comparison.csv are graft.comparison.write_table's (a run's, a comparison's, an experiment's table);
# leaderboard.* are graft auto's, beside its winning run.
MARKERS = frozenset({CONFIG, CHECKPOINT, SPLIT_FILE, COMPARISON, "experiment.json", "experiment.csv", LEADERBOARD})
FILES = MARKERS | {WEIGHTS, METRICS, RESULT, BAD_IMAGES, REPORT, "comparison.csv", "leaderboard.csv"}
# What graft.export writes (ONNX moves weights over 2 GB into MODEL.data) and what TensorBoard's writer names its files.
EXPORT_FILES = frozenset({*FORMATS.values(), f"{FORMATS['onnx']}.data", PREPROCESSING})
EVENTS_PREFIX = "events.out.tfevents."


def prepare_out(out: Path | None, default: str, overwrite: bool = False) -> Path:
    """The folder to write, made if need be: ``runs/DEFAULT`` (then ``runs/DEFAULT-2``, ...) without ``out``.

    An existing non-empty ``out`` is a :class:`GraftError` unless ``overwrite`` is given and the folder is
    graft's own output with nothing else in it; then it is replaced.
    """
    if out is None:
        out, n = Path("runs") / default, 2
        while out.exists():
            out, n = Path("runs") / f"{default}-{n}", n + 1
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GraftError(f"{out} is a file, not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        foreign = _first_foreign(out)
        if foreign is not None:
            raise GraftError(
                f"{out} holds {foreign.relative_to(out)}, which graft did not write; --overwrite replaces only graft's own runs, "
                "so choose another --out or remove it yourself"
            )
        if not overwrite:
            raise GraftError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
        _replace(out)
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_make(out, exc) from exc
    return out


def _first_foreign(folder: Path) -> Path | None:
    """The first entry of ``folder``'s tree that graft did not write; its first entry if no marker file says it is graft's."""
    foreign, marked = _scan(folder)
    return foreign if foreign is not None or marked else next(iter(sorted(folder.iterdir())))


def _scan(folder: Path) -> tuple[Path | None, bool]:
    """(the first entry graft did not write, or None; whether a marker file was seen) for ``folder``'s tree.

    A sub-folder counts as graft's when it holds no files or is graft's by the same rule (a comparison's
    runs, an experiment's ``source/`` and ``per-class-10/LABEL/``); ``tensorboard/`` and ``export/`` hold
    what their writers name. Links are never graft's: replacing must not reach outside the folder.
    """
    marked = False
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            return entry, marked
        if entry.is_dir() and entry.name == TENSORBOARD_DIR:
            foreign = _first_unnamed(entry, lambda name: name.startswith(EVENTS_PREFIX))
        elif entry.is_dir() and entry.name == EXPORT_DIR:
            foreign = _first_unnamed(entry, lambda name: _written(name, EXPORT_FILES))
        elif entry.is_dir():
            foreign, inner = _scan(entry)
            if foreign is None and not inner and any(p.is_file() for p in entry.rglob("*")):
                foreign = entry  # graft's file names, but nothing graft alone writes: not recognisably graft's
            marked |= inner
        elif _written(entry.name, FILES):
            foreign = None
            marked |= entry.name in MARKERS
        else:
            foreign = entry
        if foreign is not None:
            return foreign, marked
    return None, marked


def _written(name: str, names: frozenset[str]) -> bool:
    """``name`` is one of ``names``, or the temporary file a write of one left (``graft.atomic.replacing``)."""
    return name in names or (name.endswith(".tmp") and name.removesuffix(".tmp") in names)


def _first_unnamed(folder: Path, ours: Callable[[str], bool]) -> Path | None:
    return next((entry for entry in sorted(folder.iterdir()) if entry.is_symlink() or not entry.is_file() or not ours(entry.name)), None)


def _replace(out: Path) -> None:
    """Move ``out`` aside to a hidden sibling, make it anew, and only then delete the old one.

    If the new folder cannot be made, the old one is moved back: the previous run is never lost to a
    replacement that did not happen.
    """
    real = out.resolve()
    if Path.cwd().resolve().is_relative_to(real):
        raise GraftError(f"{out} holds the current directory; run graft from elsewhere or choose another --out")
    aside = real.with_name(f".{real.name}.replaced-{uuid.uuid4().hex[:8]}")
    try:
        real.rename(aside)
    except OSError as exc:
        raise GraftError(f"cannot replace {out} ({exc.strerror}); choose another --out or remove it yourself") from exc
    try:
        real.mkdir()
    except OSError as exc:
        aside.rename(real)
        raise _cannot_make(out, exc) from exc
    try:
        shutil.rmtree(aside)
    except OSError as exc:  # the new folder is ready: a leftover is worth a line, not the run
        warn(f"could not delete the replaced {out}, now at {aside} ({exc.strerror}); delete it yourself")


def _cannot_make(out: Path, exc: OSError) -> GraftError:
    if full_disk_errno(exc) is not None:
        return DiskFull(f"cannot create {out}: the disk is full ({exc.strerror}); free some space")
    return GraftError(f"cannot create {out} ({exc.strerror}); choose another --out")

"""A CSV of ``path,label`` rows as the candidates of an :class:`ImageSet`: for images not sorted into class folders.

Paths are relative to the CSV file's folder (or absolute, inside it); a first row ``path,label`` is a header.
The result is an ordinary :class:`ImageSet` rooted at the CSV's folder, so splitting, training, evaluation
and the saved split work exactly as for an image folder, and a row naming a missing, outside or unreadable
image, or with no label, is left out or refused under ``--bad-images`` like a damaged image in a folder.
"""

import csv
import os
from pathlib import Path

from graft.data.imageset import Candidate, ImageSet, parse_classes, scan
from graft.errors import GraftError


def read_rows(path: Path) -> list[tuple[int, str, str]]:
    """The ``(line, path, label)`` rows of ``path``, header and blank lines skipped.

    A row without exactly two columns is an error naming its line: the file is not the list graft expects.
    An empty path or label is kept, for the scan to leave out or refuse under ``--bad-images``.
    """
    rows: list[tuple[int, str, str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            for line, row in enumerate(csv.reader(fh), 1):
                cells = [cell.strip() for cell in row]
                if not any(cells):
                    continue
                if len(cells) != 2:
                    raise GraftError(f"{path} line {line}: expected two columns 'path,label', got {row!r}")
                if line == 1 and [c.lower() for c in cells] == ["path", "label"]:
                    continue
                rows.append((line, cells[0], cells[1]))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GraftError(f"cannot read CSV {path}: {exc}") from exc
    if not rows:
        raise GraftError(f"{path} has no path,label rows")
    return rows


def _candidate(root: Path, line: int, written: str, label: str) -> Candidate:
    """Row ``line`` as a candidate: its path made relative to ``root`` (the CSV's folder), or why it is unusable.

    A path that leads outside ``root`` (``../x.png``, ``/elsewhere/x.png``) is refused: a data set is
    the CSV's folder, and a run's split names its images relative to it.
    """
    if not written:
        return Candidate(written, label, "empty path", f"write the image's path on line {line} or remove that line")
    base = Path(os.path.abspath(root))
    target = Path(os.path.normpath(base / written))  # an absolute path replaces base
    inside = next((target.relative_to(b).as_posix() for b in (base, base.resolve()) if target.is_relative_to(b)), None)
    if inside is None:
        return Candidate(
            written, label, "outside the CSV's folder", f"move the image into {root} and correct line {line}, or remove that line"
        )
    if not target.is_file():
        why = "not a file" if target.exists() else "missing file"
        return Candidate(
            written, label, why, f"correct the path on line {line} (paths are relative to the CSV's folder) or remove that line"
        )
    if not label:
        return Candidate(written, label, "empty label", f"give line {line} a label or remove it")
    return Candidate(inside, label, fix=f"replace the image or remove line {line}")


def load_csv_set(path: Path, classes: str | None = None, bad_images: str = "skip") -> ImageSet:
    """The usable images a CSV lists, classes in sorted label order unless ``classes`` selects some.

    Samples are sorted by path, so the split does not depend on the order of the rows; ``bad`` keeps the
    order of the rows, with each bad row's path as the CSV writes it.
    """
    root = path.parent
    rows = read_rows(path)
    available = sorted({label for _, _, label in rows if label})
    names = parse_classes(classes, available) if classes else available
    if len(names) < 2:
        raise GraftError(f"{path} has {len(names)} label(s) ({', '.join(names) or 'none'}); a classifier needs at least two")
    candidates = [_candidate(root, line, written, label) for line, written, label in rows if label in names or not label]
    samples, bad = scan(root, names, candidates, bad_images, listed_in=path)
    return ImageSet(root=root, classes=names, samples=sorted(samples), bad=bad)

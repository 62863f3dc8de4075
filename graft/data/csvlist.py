"""A CSV of ``path,label`` rows as a data set: for images that are not sorted into class folders.

Paths are relative to the CSV file's folder (or absolute); a first row ``path,label`` is a header. The
result is an ordinary :class:`ImageSet` rooted at the CSV's folder, so splitting, training, evaluation and
the saved split work exactly as for an image folder.
"""

import csv
from pathlib import Path

from graft.data.folder import ImageSet, parse_classes
from graft.errors import GraftError


def read_rows(path: Path) -> list[tuple[str, str]]:
    """The ``(path, label)`` rows of ``path``, header skipped; a malformed row is an error naming its line."""
    rows: list[tuple[str, str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            for line, row in enumerate(csv.reader(fh), 1):
                cells = [cell.strip() for cell in row]
                if not any(cells):
                    continue
                if len(cells) != 2 or not all(cells):
                    raise GraftError(f"{path} line {line}: expected two columns 'path,label', got {row!r}")
                if line == 1 and [c.lower() for c in cells] == ["path", "label"]:
                    continue
                rows.append((cells[0], cells[1]))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GraftError(f"cannot read CSV {path}: {exc}") from exc
    if not rows:
        raise GraftError(f"{path} has no path,label rows")
    return rows


def load_csv_set(path: Path, classes: str | None = None) -> ImageSet:
    """The images a CSV lists, classes in sorted label order unless ``classes`` selects some."""
    root = path.parent
    rows = read_rows(path)
    missing = [p for p, _ in rows if not (root / p).is_file()]
    if missing:
        raise GraftError(f"{path} lists {len(missing)} image(s) that do not exist, e.g. {root / missing[0]}; paths are relative to the CSV's folder")
    available = sorted({label for _, label in rows})
    names = parse_classes(classes, available) if classes else available
    if len(names) < 2:
        raise GraftError(f"{path} has only the label '{names[0]}'; a classifier needs at least two")
    order = {name: i for i, name in enumerate(names)}
    samples = sorted((Path(p).as_posix(), order[label]) for p, label in rows if label in order)
    return ImageSet(root=root, classes=names, samples=samples)

"""Prediction results as files other programs read: CSV (one row an image) or JSON, and lists of inputs."""

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from graft.errors import GraftError

FORMATS = ("table", "csv", "json")


def output_format(fmt: str | None, output: Path | None, as_json: bool = False) -> str:
    """``--format``, else ``json`` for ``--json``, else the suffix of ``--output`` (``.csv``/``.json``), else a table."""
    if fmt is None:
        suffix = output.suffix.lower().lstrip(".") if output is not None else ""
        fmt = "json" if as_json else suffix if suffix in ("csv", "json") else "table"
    if fmt not in FORMATS:
        raise GraftError(f"unknown --format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if as_json and fmt != "json":
        raise GraftError(f"--json and --format {fmt} disagree; give one of them")
    if fmt == "table" and output is not None:
        raise GraftError(f"--output {output} needs --format csv or json (a table is for reading on screen)")
    return fmt


def read_list(file: Path) -> list[Path]:
    """One image path a line from ``file`` (``-``: stdin); blank lines and ``#`` comments are skipped.

    Relative paths are taken relative to the list's own folder, so a list travels with its images; from
    stdin they are relative to the working directory.
    """
    try:
        text = sys.stdin.read() if str(file) == "-" else Path(file).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise GraftError(f"cannot read --from-list {file}: {exc}") from exc
    base = Path.cwd() if str(file) == "-" else Path(file).parent
    paths = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = base / Path(entry).expanduser()
        if not path.exists():
            raise GraftError(f"{file} line {number}: {entry} does not exist (relative paths are relative to the list's folder)")
        paths.append(path)
    if not paths:
        raise GraftError(f"--from-list {file} names no images; put one image path on each line")
    return paths


def to_csv(rows: list[dict[str, Any]]) -> str:
    """``path, label, probability[, low_confidence], label_2, probability_2, ...``: the top-k flattened."""
    k = max((len(r["top"]) for r in rows), default=1)
    flagged = any("low_confidence" in r for r in rows)
    columns = ["path", "label", "probability", *(["low_confidence"] if flagged else [])]
    columns += [f"{name}_{i}" for i in range(2, k + 1) for name in ("label", "probability")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {key: row[key] for key in columns[: 4 if flagged else 3]}
        for i, top in enumerate(row["top"][1:], start=2):
            flat |= {f"label_{i}": top["label"], f"probability_{i}": top["probability"]}
        writer.writerow(flat)
    return buffer.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2) + "\n"

"""Reading what a finished run or comparison left on disk, for the report and TensorBoard."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graft.errors import GraftError
from graft.rundir import METRICS, RESULT

COMPARISON, REPORT, LEADERBOARD = "comparison.json", "report.html", "leaderboard.json"


def _read(file: Path, parse: Callable[[str], Any] = json.loads) -> Any:
    """``file`` parsed, or one error line naming it: a report must never end in a traceback."""
    try:
        return parse(file.read_text())
    except FileNotFoundError as exc:
        raise GraftError(f"{file} is missing; the run did not finish, train it again") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GraftError(f"cannot read {file}: {exc}; the run directory is damaged, train it again") from exc


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl``, in order."""
    return _read(Path(run_dir) / METRICS, lambda text: [json.loads(line) for line in text.splitlines() if line.strip()])


def read_result(run_dir: Path) -> dict[str, Any]:
    return _read(Path(run_dir) / RESULT)


def read_comparison(folder: Path) -> list[dict[str, Any]]:
    return _read(Path(folder) / COMPARISON)


def read_leaderboard(run_dir: Path) -> list[dict[str, Any]] | None:
    """``graft auto``'s leaderboard beside its winning run; None for a run made otherwise."""
    file = Path(run_dir) / LEADERBOARD
    return _read(file) if file.is_file() else None

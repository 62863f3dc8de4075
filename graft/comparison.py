"""Several strategies on one split, one table: accuracy beside training time, memory and parameters.

Each strategy trains in a fresh Python process (one at a time), so its peak memory is its own and no
strategy inherits another's warmed-up caches or random state; all of them read the same saved split. The
child is a plain ``python -c`` that imports graft, not a multiprocessing spawn: spawn re-runs the caller's
main script in the child, which breaks ``graft.compare`` called from a script without a ``__main__``
guard, or from ``python -`` (no script file at all).
"""

import csv
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from graft import api
from graft.atomic import write_json, write_text
from graft.config import FitConfig
from graft.console import log
from graft.data.dataset import load_data
from graft.data.split import SPLIT_FILE, Split, make_split
from graft.errors import GraftError
from graft.outdir import prepare_out
from graft.report import after_comparison
from graft.results import COLUMNS, RunResult, ranked
from graft.sources import create_backbone
from graft.strategies import every_strategy_option, strategy_options

COMPARISON = "comparison"


CHILD = "import sys; from graft.comparison import fit_job; fit_job(sys.argv[1])"


def fit_job(job_file: str) -> None:
    """Child-process entry point: one fit on the shared split; its table row (or its one-line error) into ``result.json`` beside the job."""
    job = json.loads(Path(job_file).read_text())
    outcome = Path(job_file).with_name("result.json")
    try:
        config = FitConfig.from_dict(job["config"])
        run = api.fit(config, out=job["out"], split=Split.load(job["split_file"]), report=job["report"], tensorboard=job["tensorboard"])
    except GraftError as exc:
        write_json(outcome, {"error": str(exc)})
        sys.exit(exc.exit_code)
    write_json(outcome, run.result.to_dict())


def _fit_in_child(job: dict[str, Any]) -> RunResult:
    """Run :func:`fit_job` in a fresh interpreter; its result, its error as ours, Ctrl-C as Ctrl-C."""
    with tempfile.TemporaryDirectory(prefix="graft-compare-") as folder:
        job_file = Path(folder) / "job.json"
        write_json(job_file, job)
        done = subprocess.run([sys.executable, "-c", CHILD, str(job_file)], check=False)
        outcome = job_file.with_name("result.json")
        if done.returncode in (130, -2):
            raise KeyboardInterrupt
        if not outcome.is_file():
            raise GraftError(f"the {job['config']['strategy']} fit ended without a result (exit {done.returncode}); its messages are above")
        row = json.loads(outcome.read_text())
    if "error" in row:
        raise GraftError(row["error"])
    return RunResult.from_dict(row)


def configs(data: str, strategies: list[str], options: dict[str, Any]) -> list[FitConfig]:
    """One validated config per strategy; a strategy option goes to the strategies that take it.

    ``--unfreeze 2`` in a comparison of frozen, finetune and full is finetune's; an option that no listed
    strategy takes is an error, as it is for a single fit.
    """
    if not strategies:
        raise GraftError("no strategies given; list one or more, e.g. frozen,finetune,full")
    given = {k for k, v in options.items() if v is not None and k in every_strategy_option()}
    if unused := sorted(given - {o for name in strategies for o in strategy_options(name)}):
        raise GraftError(
            f"--{unused[0].replace('_', '-')} applies to none of the strategies {', '.join(strategies)}; drop it or add a strategy that takes it"
        )
    result = []
    for name in strategies:
        own = {k: v for k, v in options.items() if k not in given or k in strategy_options(name)}
        result.append(FitConfig.create(data, strategy=name, **own))
    return result


def compare(
    data: str,
    strategies: list[str],
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    report: bool = True,
    tensorboard: bool = False,
    **options: Any,
) -> list[RunResult]:
    """Fit each strategy on the same seeded split; write ``comparison.json``/``.csv`` and one run per strategy.

    The rows come best first: by balanced accuracy where the test part's classes are uneven, by accuracy
    otherwise (:func:`graft.results.ranked`), and a line says which. ``options`` are :func:`graft.fit`'s
    (``classes``, ``backbone``, ``epochs``, ``unfreeze``...), the same for every strategy. ``report`` and
    ``tensorboard`` are passed on to each fit; ``report`` also writes the comparison's page.
    """
    runs = configs(data, list(dict.fromkeys(strategies)), options)
    first = runs[0]
    create_backbone(first.backbone, first.weights, first.layer)  # a backbone without weights fails before the data scan
    split = make_split(load_data(first.data, first.classes, first.bad_images), seed=first.settings.seed, per_class=first.settings.per_class)
    out = prepare_out(Path(out) if out is not None else None, f"compare-{Path(data).name}", overwrite)
    split.save(out)
    rows: list[RunResult] = []
    for config in runs:
        job = {
            "config": config.to_dict(),
            "out": str(out / config.strategy),
            "split_file": str(out / SPLIT_FILE),
            "report": report,
            "tensorboard": tensorboard,
        }
        rows.append(_fit_in_child(job))
        rows, metric = ranked(rows)
        write_table(out, [r.to_dict() for r in rows])  # after each strategy, so an interruption keeps the finished rows
    log(f"ranked by {metric}")
    after_comparison(out, report=report)
    return rows


def write_table(out: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS, name: str = COMPARISON) -> None:
    write_json(out / f"{name}.json", rows)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=[*columns, "run_dir"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / f"{name}.csv", table.getvalue())

"""Several strategies on one split, one table: accuracy beside training time, memory and parameters.

Each strategy trains in a fresh process (spawned, one at a time), so its peak memory is its own and no
strategy inherits another's warmed-up caches or random state; all of them read the same saved split.
"""

import csv
import io
import multiprocessing
from pathlib import Path
from typing import Any

from graft import api
from graft.atomic import write_json, write_text
from graft.config import FitConfig
from graft.data.dataset import load_data
from graft.data.split import SPLIT_FILE, Split, make_split
from graft.errors import GraftError
from graft.outdir import prepare_out
from graft.report import after_comparison
from graft.results import COLUMNS, RunResult
from graft.sources import create_backbone
from graft.strategies import every_strategy_option, strategy_options

COMPARISON = "comparison"


def _fit_one(job: dict[str, Any]) -> dict[str, Any]:
    """Child-process entry point: one fit on the shared split, returned as a table row."""
    config = FitConfig.from_dict(job["config"])
    return api.fit(config, out=job["out"], split=Split.load(job["split_file"]), report=job["report"], tensorboard=job["tensorboard"]).result.to_dict()


def configs(data: str, strategies: list[str], options: dict[str, Any]) -> list[FitConfig]:
    """One validated config per strategy; a strategy option goes to the strategies that take it.

    ``--unfreeze 2`` in a comparison of frozen, finetune and full is finetune's; an option that no listed
    strategy takes is an error, as it is for a single fit.
    """
    if not strategies:
        raise GraftError("no strategies given; list one or more, e.g. frozen,finetune,full")
    given = {k for k, v in options.items() if v is not None and k in every_strategy_option()}
    if unused := sorted(given - {o for name in strategies for o in strategy_options(name)}):
        raise GraftError(f"--{unused[0].replace('_', '-')} applies to none of the strategies {', '.join(strategies)}; drop it or add a strategy that takes it")
    result = []
    for name in strategies:
        own = {k: v for k, v in options.items() if k not in given or k in strategy_options(name)}
        result.append(FitConfig.create(data, strategy=name, **own))
    return result


def compare(
    data: str, strategies: list[str], *, out: str | Path | None = None, overwrite: bool = False, report: bool = True, tensorboard: bool = False, **options: Any
) -> list[RunResult]:
    """Fit each strategy on the same seeded split; write ``comparison.json``/``.csv`` and one run per strategy.

    ``options`` are :func:`graft.fit`'s (``classes``, ``backbone``, ``epochs``, ``unfreeze``...), the same
    for every strategy. ``report`` and ``tensorboard`` are passed on to each fit; ``report`` also writes
    the comparison's page.
    """
    runs = configs(data, list(dict.fromkeys(strategies)), options)
    first = runs[0]
    create_backbone(first.backbone, first.weights, first.layer)  # a backbone without weights fails before the data scan
    split = make_split(load_data(first.data, first.classes, first.bad_images), seed=first.settings.seed, per_class=first.settings.per_class)
    out = prepare_out(Path(out) if out is not None else None, f"compare-{Path(data).name}", overwrite)
    split.save(out)
    rows: list[RunResult] = []
    context = multiprocessing.get_context("spawn")
    for config in runs:
        job = {"config": config.to_dict(), "out": out / config.strategy, "split_file": out / SPLIT_FILE, "report": report, "tensorboard": tensorboard}
        with context.Pool(1) as pool:
            rows.append(RunResult.from_dict(pool.apply(_fit_one, (job,))))
        write_table(out, [r.to_dict() for r in rows])  # after each strategy, so an interruption keeps the finished rows
    after_comparison(out, report=report)
    return rows


def write_table(out: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS, name: str = COMPARISON) -> None:
    write_json(out / f"{name}.json", rows)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=[*columns, "run_dir"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / f"{name}.csv", table.getvalue())

"""Several strategies on one split, one table: accuracy beside training time, memory and parameters.

Each strategy trains in a fresh process (spawned, one at a time), so its peak memory is its own and no
strategy inherits another's warmed-up caches or random state; all of them read the same saved split.
"""

import csv
import multiprocessing
from dataclasses import replace
from pathlib import Path
from typing import Any

from graft import api
from graft.backbones import DEFAULT_BACKBONE, create_backbone
from graft.data.split import SPLIT_FILE, Split, make_split
from graft.report import after_comparison
from graft.rundir import write_json
from graft.strategies import get_strategy
from graft.train.settings import TrainSettings

COLUMNS = ("strategy", "test_accuracy", "train_seconds", "epochs", "trainable_params", "total_params", "peak_memory_mb")


def _fit_one(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Child-process entry point: one fit on the shared split, returned as a table row."""
    kwargs["split"] = Split.load(kwargs.pop("split_file"))
    return api.fit(**kwargs).to_dict()


def compare(
    data: str,
    strategies: list[str],
    *,
    classes: str | None = None,
    backbone: str = DEFAULT_BACKBONE,
    out: Path | None = None,
    settings: TrainSettings | None = None,
    strategy_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    weights: str | None = None,
    layer: int | None = None,
    report: bool = True,
    tensorboard: bool = False,
) -> list[dict[str, Any]]:
    """Fit each strategy on the same seeded split; write ``comparison.json``/``.csv`` and one run per strategy.

    ``report`` and ``tensorboard`` are passed on to each fit; ``report`` also writes the comparison's page.
    """
    settings = settings or TrainSettings()
    for name in strategies:
        get_strategy(name, **(strategy_options or {}))  # fail on a misspelt strategy or option before any training starts
    create_backbone(backbone, weights, layer)  # and on a backbone without weights
    split = make_split(api.load_data(data, classes), seed=settings.seed, per_class=settings.per_class)
    out = api.prepare_out(out, f"compare-{Path(data).name}", overwrite)
    split.save(out)
    rows = []
    context = multiprocessing.get_context("spawn")
    for name in strategies:
        job = {
            "data": data,
            "classes": classes,
            "backbone": backbone,
            "strategy": name,
            "out": out / name,
            "settings": replace(settings),
            "split_file": out / SPLIT_FILE,
            "strategy_options": strategy_options,
            "weights": weights,
            "layer": layer,
            "report": report,
            "tensorboard": tensorboard,
        }
        with context.Pool(1) as pool:
            rows.append(pool.apply(_fit_one, (job,)))
        write_table(out, rows)  # after each strategy, so an interruption keeps the finished rows
    after_comparison(out, report=report)
    return rows


def write_table(out: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS, name: str = "comparison") -> None:
    write_json(out / f"{name}.json", rows)
    with (out / f"{name}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*columns, "run_dir"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

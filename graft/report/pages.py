"""The three kinds of report page: one run, one comparison of strategies, one experiment."""

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from graft.errors import GraftError
from graft.evaluation import Evaluation, evaluate_test_split
from graft.report import charts
from graft.report.metrics import COMPARISON, REPORT, read_comparison, read_leaderboard, read_metrics, read_result
from graft.report.page import Section, render, thumbnail
from graft.results import COLUMNS, headline_of
from graft.rundir import read_config

GALLERY_SIZE = 12
NUMERIC = [*COLUMNS[1:], "precision", "recall", "support", "accuracy"]


def _fmt(column: str, value: Any) -> str:
    if column.endswith("_interval"):
        return f"{value[0]:.1%}-{value[1]:.1%}"
    if isinstance(value, float):
        if "accuracy" in column or column in ("precision", "recall", "macro_f1"):
            return f"{value:.2%}"
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value)


def _kpis(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            "test accuracy",
            f"{_fmt('accuracy', result['test_accuracy'])} ({_fmt('test_accuracy_interval', result['test_accuracy_interval'])})",
        ),
        ("balanced accuracy", _fmt("accuracy", result["balanced_accuracy"])),
        ("macro F1", _fmt("macro_f1", result["macro_f1"])),
        ("training time", f"{result['train_seconds']:,.1f} s"),
        ("epochs", str(result["epochs"])),
        ("trainable params", f"{result['trainable_params']:,}"),
        ("total params", f"{result['total_params']:,}"),
        ("peak memory", f"{result['peak_memory_mb']:,.0f} MiB"),
    ]


def _settings_section(config: dict[str, Any]) -> Section:
    """Every setting the run was made with, grouped as config.json groups them, values as saved."""

    def show(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    cards = [("classes", [(str(i), name) for i, name in enumerate(config["classes"])])] if len(config["classes"]) <= 20 else []
    fit = config.get("fit") or {}
    cards.append(("run", [(key, show(v)) for key, v in fit.items() if not isinstance(v, dict)]))
    groups = {
        "strategy options": fit.get("strategy_options"),
        "training": fit.get("settings"),
        **{k: config.get(k) for k in ("backbone", "head", "preprocessing")},
    }
    cards += [(name, [(key, show(v)) for key, v in value.items()]) for name, value in groups.items() if isinstance(value, dict) and value]
    return Section("Settings", "settings", note="From config.json: what it takes to train this run again.", cards=cards)


def _test_sections(run_dir: Path, evaluation: Evaluation | None = None) -> list[Section]:
    """Confusion matrix, per-class precision/recall and the confident mistakes, on the run's test split (``evaluation``, or a new pass)."""
    try:
        evaluation = (
            evaluation if evaluation is not None and evaluation.per_image is not None else evaluate_test_split(run_dir, per_image=True)
        )
    except GraftError as exc:
        note = f"The test images could not be read again ({exc}); the confusion matrix and the gallery need them."
        return [Section("Test split", "test", note=note)]
    classes, rows = (
        evaluation.classes,
        [{"class": c.name, "precision": c.precision, "recall": c.recall, "support": c.support} for c in evaluation.per_class],
    )
    wrong = sorted((p for p in evaluation.per_image or [] if p["true"] != p["predicted"]), key=lambda p: -p["probability"])
    gallery = [{**p, "src": thumbnail(Path(p["path"])), "name": Path(p["path"]).name} for p in wrong[:GALLERY_SIZE]]
    n = evaluation.images
    return [
        Section(
            "Confusion matrix",
            "confusion",
            note=f"{n} test images the model never trained on; rows are the true class, columns the predicted one. "
            f"Accuracy {evaluation.accuracy:.2%}.",
            chart=charts.confusion_matrix(evaluation.confusion_matrix, classes),
        ),
        Section(
            "Precision and recall per class",
            "per-class",
            note="Precision: of the images predicted as the class, the share that are. Recall: of the class's images, the share found.",
            chart=charts.per_class(rows),
            table={
                "columns": ["class", "precision", "recall", "support"],
                "rows": [[_fmt(k, r[k]) for k in ("class", "precision", "recall", "support")] for r in rows],
                "numeric": NUMERIC,
            },
        ),
        Section(
            "Most confident mistakes",
            "mistakes",
            note=(
                f"The {len(gallery)} wrongly classified test images the model was surest about (of {len(wrong)} mistakes in {n}): "
                "mislabelled images and look-alike classes show up here first."
                if wrong
                else f"No mistakes: all {n} test images are classified correctly."
            ),
            gallery=gallery,
        ),
    ]


LEADERBOARD_COLUMNS = ("name", "epochs", "val_accuracy", "val_balanced_accuracy", "test_accuracy", "seconds", "stopped")


def _leaderboard_section(run_dir: Path) -> list[Section]:
    """``graft auto``'s leaderboard, where the run is its winner: every candidate, why it stopped, the winner's test figure."""
    rows = read_leaderboard(run_dir)
    if rows is None:
        return []

    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get(column)
        if value is None:
            return "-"
        text = f"{value:.2%}" if isinstance(value, float) and "accuracy" in column else str(value)
        if column == "test_accuracy" and row.get("test_accuracy_interval"):
            low, high = row["test_accuracy_interval"]
            text += f" ({low:.1%}-{high:.1%})"
        return f"{text} (winner)" if column == "name" and row.get("winner") else text

    return [
        Section(
            "graft auto: candidates",
            "leaderboard",
            note="Every candidate the time budget allowed, ranked on the validation images only; the test part was read once, by the winner.",
            table={"columns": list(LEADERBOARD_COLUMNS), "rows": [[cell(r, c) for c in LEADERBOARD_COLUMNS] for r in rows], "numeric": []},
        )
    ]


def run_page(run_dir: Path, evaluation: Evaluation | None = None) -> Path:
    """The page of one run: headline figures, learning curves, test-split analysis, settings."""
    run_dir = Path(run_dir)
    config, result, records = read_config(run_dir), read_result(run_dir), read_metrics(run_dir)
    fit = config.get("fit") or {}
    strategy = fit.get("strategy", "?")
    backbone = config["backbone"].get("name", config["backbone"].get("kind", "?"))
    curves = Section(
        "Learning curves",
        "curves",
        note="Loss and accuracy per epoch on the training and validation images; the saved model is the epoch (or moving average of the weights) that scores best on the validation accuracy (balanced accuracy where the classes are uneven).",
        chart=charts.learning_curves(records) if records else None,
    )
    sections = [curves, *_leaderboard_section(run_dir), *_test_sections(run_dir, evaluation), _settings_section(config)]
    subtitle = f"{backbone} backbone · {strategy} strategy · {len(config['classes'])} classes of {fit.get('data', '?')}"
    return render(
        run_dir / REPORT, kind="graft run", title=run_dir.name, subtitle=subtitle, kpis=_kpis(result), sections=sections, folder=run_dir
    )


def page_link(part: Path) -> str:
    """The href of the page of ``part``, a sub-folder of the page's folder: a relative path and nothing else.

    Folder names come from the user (and from comparison.json): percent-encoding every character a URL
    gives meaning to (``:``, ``/``, ``#``, ``?``, ``%``) keeps a folder named ``javascript:alert(1)``
    a folder, never a scheme, an absolute path or another site.
    """
    return f"{quote(part.name, safe='')}/{REPORT}"


def comparison_runs(folder: Path) -> list[Path]:
    """The run directories a comparison wrote, one per strategy, in the comparison's order: sub-folders of ``folder``."""
    names = [Path(row["run_dir"]).name for row in read_comparison(folder)]
    for name in names:
        if name in ("", ".", ".."):
            raise GraftError(f"{Path(folder) / COMPARISON} names {name!r} as a run directory; the comparison is damaged, run it again")
    return [Path(folder) / name for name in names]


def comparison_page(folder: Path) -> Path:
    """The page of a comparison: accuracy against time, the table, and a section per strategy."""
    folder = Path(folder)
    rows = read_comparison(folder)
    runs = comparison_runs(folder)
    histories = {row["strategy"]: read_metrics(run) for row, run in zip(rows, runs, strict=True)}
    links = {row["strategy"]: page_link(run) for row, run in zip(rows, runs, strict=True)}
    best = max(rows, key=lambda r: headline_of(r)[1])
    metric = headline_of(best)[0]
    fastest = min(rows, key=lambda r: r["train_seconds"])
    sections = [
        Section(
            "Accuracy against training time",
            "tradeoff",
            note="One point per strategy, all trained on the same split with the same seed: up and to the left is better.",
            chart=charts.accuracy_vs_time(rows),
        ),
        Section(
            "Results",
            "table",
            note=f"Figures on the shared test split, best {metric} first"
            + (" (the classes are uneven: accuracy would reward favouring the large ones)" if metric != "accuracy" else "")
            + "; peak memory is each strategy's own process. Click a strategy for its full report.",
            table={"columns": list(COLUMNS), "rows": [[_fmt(c, r[c]) for c in COLUMNS] for r in rows], "links": links, "numeric": NUMERIC},
        ),
        Section("Validation accuracy per epoch", "val", chart=charts.validation_by_strategy(histories)),
    ]
    for row, run in zip(rows, runs, strict=True):
        options = read_config(run).get("strategy", {}).get("options") or {}
        sections.append(
            Section(
                f"Strategy: {row['strategy']}",
                f"strategy-{row['strategy']}",
                note=f"{_fmt('accuracy', row['test_accuracy'])} test accuracy in {row['train_seconds']:,.1f} s over {row['epochs']} epochs"
                + (f"; options {json.dumps(options)}." if options else "."),
                link=(f"Full report of {row['strategy']}: confusion matrix, mistakes, settings", links[row["strategy"]]),
                chart=charts.learning_curves(histories[row["strategy"]], chart_id=f"curves-{row['strategy']}"),
            )
        )
    first = read_config(runs[0]) if runs else {}
    data = first.get("data") or {}
    subtitle = f"{len(rows)} strategies on {data.get('source', '?')} ({', '.join(first.get('classes', []))})"
    kpis = [
        (f"best {metric}", f"{headline_of(best)[1]:.2%} ({best['strategy']})"),
        ("fastest", f"{fastest['train_seconds']:,.1f} s ({fastest['strategy']})"),
        ("strategies", str(len(rows))),
    ]
    return render(
        folder / REPORT, kind="graft comparison", title=folder.name, subtitle=subtitle, kpis=kpis, sections=sections, folder=folder
    )


def experiment_page(folder: Path, parts: list[Path]) -> Path:
    """An index of an experiment's runs and comparisons, each linked to its own page."""
    rows, links = [], {}
    for part in parts:
        if (part / COMPARISON).is_file():
            table = read_comparison(part)
            best = max(table, key=lambda r: headline_of(r)[1])
            metric, value = headline_of(best)
            rows.append([part.name, "comparison", f"best {metric} {value:.2%} ({best['strategy']}) of {len(table)} strategies"])
        else:
            result = read_result(part)
            rows.append(
                [part.name, "run", f"{result['test_accuracy']:.2%} test accuracy ({result['strategy']}, {result['train_seconds']:,.1f} s)"]
            )
        links[part.name] = page_link(part)
    section = Section(
        "Parts", "parts", note="Each part has its own report.", table={"columns": ["part", "kind", "result"], "rows": rows, "links": links}
    )
    return render(
        folder / REPORT,
        kind="graft experiment",
        title=folder.name,
        subtitle=f"{len(parts)} parts",
        kpis=[],
        sections=[section],
        folder=folder,
    )

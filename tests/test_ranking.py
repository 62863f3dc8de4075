"""Where the classes are uneven, compare ranks and advise probes by balanced accuracy, and say so."""

import json
from pathlib import Path

import numpy as np

import graft
from graft.results import RunResult, ranked
from graft.transferability import probe_accuracy, probe_metric
from tests.conftest import make_shapes


def result(strategy: str, accuracy: float, balanced: float, uneven: bool) -> RunResult:
    return RunResult(
        f"runs/{strategy}", strategy, accuracy, [accuracy - 0.05, accuracy + 0.05], balanced, balanced, {}, 0.5, 1.0, 1, 1, 1, 1.0,
        uneven_classes=uneven,
    )  # fmt: skip


def test_ranked_by_balanced_accuracy_only_where_the_classes_are_uneven() -> None:
    majority, fair = result("majority", 0.90, 0.55, True), result("fair", 0.85, 0.80, True)
    order, metric = ranked([majority, fair])
    assert [r.strategy for r in order] == ["fair", "majority"] and metric.startswith("balanced accuracy")
    even = [result("a", 0.80, 0.85, False), result("b", 0.90, 0.70, False)]
    order, metric = ranked(even)
    assert [r.strategy for r in order] == ["b", "a"] and metric == "test accuracy"


def test_an_older_result_json_without_the_new_fields_still_loads() -> None:
    raw = result("frozen", 0.9, 0.9, False).to_dict()
    del raw["uneven_classes"], raw["tta"]
    loaded = RunResult.from_dict(raw)
    assert loaded.uneven_classes is False and loaded.tta == "none"


def test_the_probe_scores_balanced_accuracy_on_uneven_classes() -> None:
    """Features that say nothing: a probe that predicts the majority is 90% 'accurate' and 50% balanced."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 270 + [1] * 30)
    features = rng.normal(size=(300, 20))
    assert probe_metric(labels) == "balanced accuracy" and probe_accuracy(features, labels) < 0.7
    even = np.array([0, 1] * 150)
    separable = np.c_[even + rng.normal(0, 0.1, 300), rng.normal(size=(300, 5))]
    assert probe_metric(even) == "accuracy" and probe_accuracy(separable, even) > 0.95


def test_compare_on_uneven_classes_puts_the_best_balanced_accuracy_first(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", per_class=40)
    for extra in sorted((data / "ring").iterdir())[10:]:
        extra.unlink()  # 40 bars, 40 crosses, 10 rings
    results = graft.compare(str(data), ["frozen", "scratch"], backbone="smallcnn", epochs=1, batch_size=16, out=tmp_path / "cmp")
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert all(r.uneven_classes for r in results) and all(row["uneven_classes"] for row in rows)
    assert [r["balanced_accuracy"] for r in rows] == sorted((r["balanced_accuracy"] for r in rows), reverse=True)
    assert [r.strategy for r in results] == [r["strategy"] for r in rows]
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "best balanced accuracy" in page

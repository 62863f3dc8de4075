"""graft.metrics: figures against hand-computed cases, intervals that behave like intervals."""

import json

import numpy as np
import pytest

from graft.metrics import balanced_accuracy_interval, classification_report, is_imbalanced, wilson_interval


def test_figures_match_a_hand_computed_case():
    # class 0: 3 images, 2 right; class 1: 1 image, right; one class-0 image predicted as 1
    scores = classification_report([0, 0, 0, 1], [0, 0, 1, 1], ["cat", "dog"])
    assert scores.images == 4
    assert scores.accuracy == pytest.approx(0.75)
    assert scores.balanced_accuracy == pytest.approx((2 / 3 + 1) / 2)
    cat, dog = scores.per_class
    assert (cat.name, cat.precision, cat.recall, cat.support) == ("cat", 1.0, pytest.approx(2 / 3), 3)
    assert (dog.name, dog.precision, dog.recall, dog.support) == ("dog", 0.5, 1.0, 1)
    assert cat.f1 == pytest.approx(0.8) and dog.f1 == pytest.approx(2 / 3)
    assert scores.macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)
    assert scores.imbalanced  # 3 against 1


def test_a_class_without_images_keeps_its_row_but_not_its_weight():
    scores = classification_report([0, 0, 1, 1], [0, 1, 1, 1], ["a", "b", "c"])
    assert scores.per_class[2].support == 0
    assert scores.balanced_accuracy == pytest.approx((0.5 + 1.0) / 2)  # over the two classes present
    assert scores.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)


def test_wilson_interval_matches_published_values():
    # Wilson 95% intervals of 8/10, 0/10 and 10/10 (Newcombe 1998, method 3; z = 1.96)
    for (correct, total), expected in {(8, 10): (0.4902, 0.9433), (0, 10): (0.0, 0.2775), (10, 10): (0.7225, 1.0)}.items():
        interval = wilson_interval(correct, total)
        assert (interval.low, interval.high) == pytest.approx(expected, abs=1e-4)


def test_intervals_contain_the_point_and_narrow_with_more_images():
    rng = np.random.default_rng(1)
    widths = []
    for n in (60, 240, 960):
        labels = np.repeat(np.arange(3), n // 3)
        predicted = np.where(rng.random(n) < 0.8, labels, (labels + 1) % 3)
        scores = classification_report(labels, predicted, ["a", "b", "c"])
        for point, interval in ((scores.accuracy, scores.accuracy_interval), (scores.balanced_accuracy, scores.balanced_accuracy_interval)):
            assert interval.low <= point <= interval.high
        widths.append([i.high - i.low for i in (scores.accuracy_interval, scores.balanced_accuracy_interval)])
    widths = np.array(widths)
    assert np.all(widths[1:] < widths[:-1])  # four times the images, about half the width
    assert np.all(widths[2] < 0.7 * widths[0])


def test_bootstrap_is_seeded():
    labels = np.array([0] * 20 + [1] * 7 + [2] * 13)
    predicted = np.array([0] * 15 + [1] * 5 + [1] * 4 + [0] * 3 + [2] * 10 + [0] * 3)
    first, second = (classification_report(labels, predicted, ["a", "b", "c"], seed=3) for _ in range(2))
    assert first == second
    assert classification_report(labels, predicted, ["a", "b", "c"], seed=4).balanced_accuracy_interval != first.balanced_accuracy_interval


def test_binomial_draws_are_the_stratified_bootstrap():
    """Drawing per-class binomials must give the interval of resampling each class's images with replacement."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 8 + [2] * 50)
    correct = rng.random(labels.size) < np.array([0.9, 0.5, 0.7])[labels]
    members = [np.flatnonzero(labels == c) for c in range(3)]
    direct = [np.mean([correct[rng.choice(m, m.size)].mean() for m in members]) for _ in range(20000)]
    low, high = np.quantile(direct, [0.025, 0.975])
    shortcut = balanced_accuracy_interval(labels, correct, resamples=20000)
    assert shortcut.low == pytest.approx(low, abs=0.01) and shortcut.high == pytest.approx(high, abs=0.01)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [([100, 100, 67], False), ([100, 66], True), ([50, 0, 50], True), ([10, 10], False), ([], False)],
)
def test_is_imbalanced(counts, expected):
    assert is_imbalanced(counts) is expected


def test_report_serialises_and_rejects_mismatched_input():
    scores = classification_report([0, 1, 1], [0, 1, 0], ["x", "y"])
    assert json.loads(json.dumps(scores.to_dict()))["per_class"][1] == {
        "name": "y",
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    with pytest.raises(ValueError):
        classification_report([0, 1], [0], ["x", "y"])
    with pytest.raises(ValueError):
        classification_report([0, 2], [0, 1], ["x", "y"])

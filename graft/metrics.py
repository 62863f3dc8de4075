"""Classification figures that can be trusted on small data: point estimates with 95% intervals.

On a test part of a few hundred images one point of accuracy is a handful of images, and on an
imbalanced one plain accuracy rewards favouring the large classes. So every headline figure comes with
its sampling interval, and balanced accuracy (mean per-class recall) stands beside accuracy. Point
figures are scikit-learn's; the intervals are computed here.
"""

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support

CONFIDENCE = 0.95
RESAMPLES = 1000
IMBALANCE_RATIO = 1.5


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class ClassScores:
    """One class's figures; precision and F1 are 0 for a class never predicted (scikit-learn's zero_division=0)."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int  # images of this class among the labels


@dataclass(frozen=True)
class Scores:
    images: int
    accuracy: float
    accuracy_interval: Interval  # Wilson score interval
    balanced_accuracy: float  # mean recall over the classes present in the labels
    balanced_accuracy_interval: Interval  # stratified bootstrap percentile interval
    macro_f1: float  # mean F1 over the classes present in the labels or the predictions
    imbalanced: bool  # of the labels' class counts, see is_imbalanced
    per_class: list[ClassScores]

    def to_dict(self) -> dict:
        return asdict(self)


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval of a proportion ``correct / total``.

    Unlike the normal approximation (p +- z*sqrt(p(1-p)/n)) it never leaves [0, 1] and does not collapse
    to zero width at 0% or 100%, which is exactly where small test parts land.
    """
    if total <= 0:
        raise ValueError("an interval of a proportion needs at least one trial")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = correct / total, z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z / (1 + z2 / total) * np.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    return Interval(float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def balanced_accuracy_interval(
    labels: np.ndarray, correct: np.ndarray, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> Interval:
    """Percentile interval of balanced accuracy over a bootstrap that resamples each class within itself.

    Resampling within classes keeps every class's count fixed (balanced accuracy weighs classes, not
    images, so a resample must not drop a small class). Drawing ``n_c`` of a class's images with
    replacement, of which ``k_c`` were right, puts Binomial(n_c, k_c/n_c) right ones in the resample, so
    the bootstrap is drawn exactly as per-class binomials: ``resamples x classes`` numbers, no index
    arrays. A bootstrap sees only the sample: a class with every image right adds no width.
    """
    classes, counts = np.unique(labels, return_counts=True)
    hits = np.array([correct[labels == c].sum() for c in classes])
    draws = np.random.default_rng(seed).binomial(counts, hits / counts, size=(resamples, len(classes)))
    estimates = (draws / counts).mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return Interval(float(low), float(high))


def is_imbalanced(counts: Iterable[int], ratio: float = IMBALANCE_RATIO) -> bool:
    """Whether the largest class count is at least ``ratio`` (1.5) times the smallest (a class with none counts).

    From about 1.5 on, accuracy and balanced accuracy part ways by more than the noise of a few hundred
    images: a classifier can gain accuracy by favouring the large classes, so balanced accuracy should
    be the headline, and class weighting is worth trying. Below it, the two agree within their intervals.
    """
    values = [int(c) for c in counts]
    if not values or max(values) == 0:
        return False
    return min(values) == 0 or max(values) / min(values) >= ratio


def classification_report(
    labels: Sequence[int] | np.ndarray,
    predicted: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Scores:
    """Accuracy, balanced accuracy, macro F1 and per-class figures of ``predicted`` against ``labels``.

    Labels and predictions are class indices into ``class_names``. The bootstrap is seeded: the same
    inputs give the same interval.
    """
    y, p = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if y.shape != p.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be equally long, non-empty 1-d sequences")
    if min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= len(class_names):
        raise ValueError(f"labels and predictions must be class indices below {len(class_names)}")
    correct = y == p
    index = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y, p, labels=index, zero_division=0)
    return Scores(
        images=int(y.size),
        accuracy=float(correct.mean()),
        accuracy_interval=wilson_interval(int(correct.sum()), int(y.size), confidence),
        balanced_accuracy=float(balanced_accuracy_score(y, p)),
        balanced_accuracy_interval=balanced_accuracy_interval(y, correct, confidence, resamples, seed),
        macro_f1=float(f1_score(y, p, average="macro", zero_division=0)),
        imbalanced=is_imbalanced(np.bincount(y, minlength=len(class_names))),
        per_class=[
            ClassScores(str(name), float(pr), float(rc), float(f), int(n))
            for name, pr, rc, f, n in zip(class_names, precision, recall, f1, support, strict=True)
        ],
    )

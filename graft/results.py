"""What one fit produced, as one typed record: the row of every table, ``result.json`` and ``--json``."""

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any


@dataclass
class RunResult:
    """Where the run is, how well it does on its test split, and what it cost."""

    run_dir: str
    strategy: str
    test_accuracy: float
    test_accuracy_interval: list[float]  # 95% (Wilson): how far the figure could move on another test part this size
    balanced_accuracy: float  # mean per-class recall: what accuracy hides when classes are uneven
    macro_f1: float
    per_class_recall: dict[str, float]
    test_loss: float
    train_seconds: float
    epochs: int
    trainable_params: int
    total_params: int
    peak_memory_mb: float
    uneven_classes: bool = False  # the test part's classes are uneven (graft.metrics.is_imbalanced): balanced accuracy is the headline
    tta: str = "none"  # the test-time augmentation the test figures were computed with (graft.tta)
    logit_adjustment: float = 0.0  # tau of the decisions moved towards rare classes (graft.train.adjustment; 0: none)

    @property
    def headline(self) -> float:
        """The figure to rank by: balanced accuracy where the classes are uneven (accuracy rewards favouring the large ones), else accuracy."""
        return self.balanced_accuracy if self.uneven_classes else self.test_accuracy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunResult":
        """The record ``to_dict`` wrote; a field added since (it has a default) takes its default in an older file."""
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw or f.default is MISSING})


def headline_of(row: dict[str, Any]) -> tuple[str, float]:
    """What a table row (``comparison.json``'s, :meth:`RunResult.to_dict`'s) is ranked by, in words, and its value."""
    if row.get("uneven_classes"):
        return "balanced accuracy", row["balanced_accuracy"]
    return "accuracy", row["test_accuracy"]


def ranked(results: list[RunResult]) -> tuple[list[RunResult], str]:
    """``results`` best first by their :attr:`~RunResult.headline` (ties keep their order), and what that is, in words.

    Runs compared on one split share one test part, so either all of them have uneven classes or none does.
    """
    uneven = any(r.uneven_classes for r in results)
    metric = "balanced accuracy (the classes are uneven)" if uneven else "test accuracy"
    return sorted(results, key=lambda r: r.headline, reverse=True), metric


# The columns of every table of results (CLI, comparison.csv, report), in this order.
COLUMNS = (
    "strategy",
    "test_accuracy",
    "test_accuracy_interval",
    "balanced_accuracy",
    "macro_f1",
    "train_seconds",
    "epochs",
    "trainable_params",
    "total_params",
    "peak_memory_mb",
)

# Short headers for those columns on a terminal (an 80-column log must still read): what each one means is in
# RunResult's field comments and docs/strategies.md.
LABELS = {
    "test_accuracy": "test acc",
    "test_accuracy_interval": "95% interval",
    "balanced_accuracy": "balanced",
    "macro_f1": "macro F1",
    "train_seconds": "seconds",
    "trainable_params": "trained params",
    "total_params": "params",
    "peak_memory_mb": "peak MiB",
}

"""What one fit produced, as one typed record: the row of every table, ``result.json`` and ``--json``."""

from dataclasses import asdict, dataclass, fields
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunResult":
        return cls(**{f.name: raw[f.name] for f in fields(cls)})


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

"""Training settings: one small dataclass, a comment on each default."""

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class TrainSettings:
    epochs: int = 10  # per phase; early stopping usually ends sooner
    batch_size: int = 64
    lr: float = 1e-3  # AdamW learning rate of the new head (and of every layer when training from scratch)
    backbone_lr_scale: float = 0.1  # transferred layers learn this much slower than the head
    weight_decay: float = 1e-4
    patience: int = 3  # stop a phase after this many epochs without a lower validation loss
    seed: int = 0  # seeds weights, shuffling and augmentation: same seed, same run
    augment: str = "none"  # none | light | strong, training images only
    head: str = "linear"  # linear | mlp (dense 128 + ReLU + dropout + dense)
    workers: int = 0  # DataLoader worker processes; 0 decodes in the main process
    label_smoothing: float = 0.0
    precision: str = "auto"  # auto | int8 | bf16 | fp32 (graft.inference): auto is bf16 where the CPU computes it natively
    per_class: int | None = None  # keep at most this many training images a class (validation/test unchanged)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

"""What the trainer keeps: the epoch (or weight average) that scores best on the validation metric.

Early stopping on the validation loss keeps the calibrated model, not the accurate one: on small
validation sets the loss often rises (a few confident mistakes) while accuracy still climbs. So a phase
keeps the weights that score best on the metric a user reads, balanced accuracy where the training
classes are uneven (:func:`graft.metrics.is_imbalanced`) and accuracy otherwise, the validation loss
breaking ties, and stops once ``patience`` epochs have not beaten it.

With ``ema`` on, an exponential moving average of the weights (Polyak averaging, timm's ``--model-ema``) is
also evaluated every epoch and kept when it scores better; it is off by default because under OneCycle,
which anneals the learning rate to almost nothing, the last epochs are already smooth and the average,
lagging behind them, was never the better model in the ablation (docs/results.md). Its decay warms up as timm's ``ModelEmaV3`` does, so a run of a few dozen steps still averages
over a few epochs instead of staying at its first weights.
"""

from dataclasses import dataclass, replace
from typing import Any

import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.optim.swa_utils import AveragedModel

from graft.backbones.base import Backbone
from graft.metrics import is_imbalanced

METRICS = ("accuracy", "balanced_accuracy")
EMA_DECAY = 0.999  # the cap; the warm-up below keeps the decay far lower on short runs
EMA_WARMUP_POWER = 0.75  # timm ModelEmaV3: decay = 1 - (1 + step) ** -power, 0.96 after 80 steps


def selection_metric(train_labels: list[int], num_classes: int) -> str:
    """``balanced_accuracy`` where the training classes are uneven, else ``accuracy``."""
    counts = torch.bincount(torch.tensor(train_labels, dtype=torch.long), minlength=num_classes).tolist()
    return "balanced_accuracy" if is_imbalanced(counts) else "accuracy"


@dataclass(frozen=True)
class Score:
    """A validation score: the metric first, the loss breaking ties (lower is better)."""

    metric: float
    loss: float

    def beats(self, other: "Score", tolerance: float = 1e-6) -> bool:
        if self.metric > other.metric + tolerance:
            return True
        return abs(self.metric - other.metric) <= tolerance and self.loss < other.loss - tolerance


def score(logits: torch.Tensor, labels: torch.Tensor, loss: float, metric: str) -> Score:
    """The :class:`Score` of validation ``logits`` under ``metric`` (one of :data:`METRICS`)."""
    predicted, truth = logits.argmax(1).cpu().numpy(), labels.cpu().numpy()
    value = balanced_accuracy_score(truth, predicted) if metric == "balanced_accuracy" else float((predicted == truth).mean())
    return Score(float(value), float(loss))


def ema_decay(setting: bool | float) -> float | None:
    """The EMA's decay cap from the ``ema`` setting: ``True`` :data:`EMA_DECAY`, a number that decay, ``False`` none."""
    if setting is False:
        return None
    return EMA_DECAY if setting is True else float(setting)


class WeightAverage(AveragedModel):
    """An exponential moving average of ``module``'s parameters and floating-point buffers (BatchNorm statistics).

    torch's :class:`~torch.optim.swa_utils.AveragedModel` keeps the copy and counts the updates in a buffer
    (``n_averaged``), so ``state_dict`` holds everything a resumed run needs to continue the same average.
    Integer buffers (BatchNorm's batch counts) are copied, not averaged.
    """

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        super().__init__(module, multi_avg_fn=self._average, use_buffers=True)
        self.module.requires_grad_(False)

    def _average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], steps: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        decay = min(self.decay, 1 - (1 + int(steps)) ** -EMA_WARMUP_POWER)
        torch._foreach_lerp_(averaged, current, 1 - decay)

    def weights(self) -> dict[str, Any]:
        """The averaged weights under the averaged module's own names (to load into that module)."""
        return self.module.state_dict()


def resize_input(backbone: Backbone, size: int | None) -> None:
    """Feed ``backbone`` ``size`` x ``size`` images instead of its default (its preprocessing, saved with the run, says so).

    Small images (28x28 characters, 32x32 digits) upscaled to 224 cost a convolutional network
    (224/96)^2 = 5.4 times the work of 96x96 for little or no more accuracy; pooled features do not
    depend on the input size, so the head stays the same. The resize/crop ratio (``crop_pct``) is kept.
    """
    if size is not None:
        channels = backbone.preprocessing.input_size[0]
        backbone.preprocessing = replace(backbone.preprocessing, input_size=(channels, size, size))

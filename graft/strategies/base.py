"""The strategy interface: which parameters train, at which learning rate, in which phases.

A strategy never runs a training loop. It answers two questions the trainer asks: ``prepare`` (change
the model before training, e.g. re-initialise it) and ``phases`` (one or more stretches of training,
each with its optimizer parameter groups). Every parameter not in a phase's groups is frozen for that
phase, and BatchNorm layers whose parameters are all frozen stay in inference mode, so a strategy cannot
leave a layer half-frozen by mistake.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from graft.model import GraftModel
from graft.train.settings import TrainSettings


@dataclass
class Phase:
    """A stretch of training: ``groups`` are torch optimizer parameter groups (``params`` and ``lr``).

    ``cached`` asks for the head to train on cached bottleneck features even when augmentation is on
    (the ``features`` strategy); a frozen backbone without augmentation or mixing uses the cache anyway. ``solve``
    says a linear head on cached features is solved to its optimum (L-BFGS, its L2 strength chosen on the
    validation images: :mod:`graft.train.solver`) instead of trained for epochs.
    """

    name: str
    groups: list[dict[str, Any]]
    epochs: int
    cached: bool = False
    solve: bool = False


class Strategy(ABC):
    """Base class: subclasses set ``name`` and ``summary`` and implement :meth:`phases`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # transferred layers learn at the head's rate times this unless --backbone-lr-scale says otherwise: a tenth where
    # training reaches the generic early layers, whose features a few hundred images should nudge, not replace
    backbone_lr_scale: float = 0.1

    def prepare(self, model: GraftModel) -> None:
        """Change the model before training; most strategies keep the transferred weights as they are."""

    def backbone_lr(self, settings: TrainSettings) -> float:
        """The learning rate of the transferred layers: the setting's scale where given, else the strategy's own."""
        scale = self.backbone_lr_scale if settings.backbone_lr_scale is None else settings.backbone_lr_scale
        return settings.lr * scale

    @abstractmethod
    def phases(self, model: GraftModel, settings: TrainSettings) -> list[Phase]:
        """The training phases, in order."""


def group(modules: Iterable[nn.Module], lr: float) -> dict[str, Any]:
    """One optimizer parameter group holding every parameter of ``modules``."""
    return {"params": [p for m in modules for p in m.parameters()], "lr": lr}


def decayed_groups(blocks: list[nn.Module], lr: float, decay: float) -> list[dict[str, Any]]:
    """Layer-wise learning-rate decay (timm's ``--layer-decay``, BEiT/ConvNeXt fine-tuning): the last block at
    ``lr``, each earlier one ``decay`` times its successor's, so the generic early features move least.
    ``decay`` 1 is one group at ``lr``."""
    if decay == 1:
        return [group(blocks, lr)]
    return [group([block], lr * decay ** (len(blocks) - 1 - i)) for i, block in enumerate(blocks)]

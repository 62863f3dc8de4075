"""The three strategies every comparison starts from: frozen base, full fine-tuning, and from scratch."""

from graft.backbones import build_backbone
from graft.model import GraftModel
from graft.strategies.base import Phase, Strategy, decayed_groups, group
from graft.train.settings import TrainSettings


class Frozen(Strategy):
    """Keep the whole backbone fixed (BatchNorm in inference mode) and train only the new head."""

    name = "frozen"
    summary = "frozen backbone, new head trained"

    def phases(self, model: GraftModel, settings: TrainSettings) -> list[Phase]:
        return [Phase("head", [group([model.head], settings.lr)], settings.epochs, solve=True)]


class Full(Strategy):
    """Train every layer, the backbone at the head's rate, from its pretrained weights and BatchNorm statistics.

    A tenth of the head's rate, the usual advice, left lite0 at 72.8% on devanagari at 30 a class against
    87.8% at the full rate, for 1.2 points of validation lost on fashion (docs/results.md, the fine-tuning
    recipe); ``TrainSettings(backbone_lr_scale=0.1)`` restores it.
    """

    name = "full"
    summary = "every layer trained from the pretrained weights"
    backbone_lr_scale = 1.0

    def phases(self, model: GraftModel, settings: TrainSettings) -> list[Phase]:
        backbone = decayed_groups(model.backbone.blocks(), self.backbone_lr(settings), settings.layer_decay)
        return [Phase("all", [*backbone, group([model.head], settings.lr)], settings.epochs)]


class Scratch(Strategy):
    """The same architecture from random weights: the baseline that shows what transfer buys."""

    name = "scratch"
    summary = "same architecture, random weights, trained from scratch"

    def prepare(self, model: GraftModel) -> None:
        model.backbone = build_backbone(model.backbone.spec)

    def phases(self, model: GraftModel, settings: TrainSettings) -> list[Phase]:
        return [Phase("all", [group([model.backbone, model.head], settings.lr)], settings.epochs)]

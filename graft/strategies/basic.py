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
    """Train every layer; the backbone at a tenth of the head's rate (:meth:`Strategy.backbone_lr`) so its transferred features survive."""

    name = "full"
    summary = "every layer trained, backbone at a lower learning rate"

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

"""Transfer strategies beyond the basic three: bottleneck features, partial fine-tuning, LP-FT."""

import math

from torch import nn

from graft.errors import GraftError
from graft.model import GraftModel
from graft.strategies.base import Phase, Strategy, decayed_groups, group
from graft.train.settings import TrainSettings


class Features(Strategy):
    """Bottleneck features: run the frozen backbone once per image (cached on disk), train the head on them.

    Augmentation is ignored by design: the point is to never run the backbone twice on an image, so a
    second run, or another strategy on the same images, reuses the cached features.
    """

    name = "features"
    summary = "cached bottleneck features, head trained on them"

    def phases(self, model: GraftModel, settings: TrainSettings) -> list[Phase]:
        return [Phase("head", [group([model.head], settings.lr)], settings.epochs, cached=True, solve=True)]


def parameterised_layers(module: nn.Module) -> list[nn.Module]:
    """The "layers" ``--freeze-first`` counts: modules that own parameters directly (convolutions,
    BatchNorms, linears...), in definition order, which for timm's CNNs is forward order."""
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


DEFAULT_SHARE = 0.5  # of the blocks, rounded up: lite0's last 4 of 8, chosen on validation (docs/results.md#the-fine-tuning-recipe)


class Finetune(Strategy):
    """Train the last ``unfreeze`` blocks of the backbone (timm's stages; by default the last half of them,
    :data:`DEFAULT_SHARE`), or all but the first ``freeze_first`` parameterised layers, plus the head.

    The last blocks learn at the head's rate: they hold the source task's most specific features, the
    ones a new task must change most (on devanagari at 30 a class lite0's last two blocks at the head's rate
    scored 72% on validation against 55% at a tenth of it, its last four 86%: docs/results.md). The default
    is a share rather than a count because backbones differ in how many blocks they have (resnet 5, lite0 8).
    ``--freeze-first K`` trains most of the network, at a tenth of the head's rate, as ``lpft`` does. Frozen parts keep
    BatchNorm in inference mode (the trainer sees to it).
    """

    name = "finetune"
    summary = "last N blocks (--unfreeze) or all but the first K layers (--freeze-first) trained"

    def __init__(self, unfreeze: int | None = None, freeze_first: int | None = None):
        if unfreeze is not None and freeze_first is not None:
            raise GraftError("give either --unfreeze N (last N blocks train) or --freeze-first K (first K layers frozen), not both")
        if (unfreeze is not None and unfreeze < 1) or (freeze_first is not None and freeze_first < 0):
            raise GraftError(
                f"--unfreeze must be at least 1 and --freeze-first at least 0 (got {unfreeze if freeze_first is None else freeze_first})"
            )
        self.unfreeze, self.freeze_first = unfreeze, freeze_first
        self.backbone_lr_scale = Strategy.backbone_lr_scale if freeze_first is not None else 1.0

    def trainable_backbone(self, model: GraftModel) -> list[nn.Module]:
        if self.freeze_first is None:
            blocks = model.backbone.blocks()
            count = math.ceil(len(blocks) * DEFAULT_SHARE) if self.unfreeze is None else self.unfreeze
            if count > len(blocks):
                raise GraftError(
                    f"--unfreeze {count} is more than the backbone's {len(blocks)} blocks; use --unfreeze {len(blocks)} or the 'full' strategy"
                )
            return blocks[-count:]
        layers = parameterised_layers(model.backbone)
        if self.freeze_first >= len(layers):
            raise GraftError(
                f"--freeze-first {self.freeze_first} freezes every layer: this backbone has {len(layers)} layers with parameters; give fewer, or use 'frozen'"
            )
        return layers[self.freeze_first :]

    def phases(self, model: GraftModel, settings: TrainSettings) -> list[Phase]:
        backbone = decayed_groups(self.trainable_backbone(model), self.backbone_lr(settings), settings.layer_decay)
        return [Phase("finetune", [*backbone, group([model.head], settings.lr)], settings.epochs)]


class LinearProbeFinetune(Strategy):
    """LP-FT (Kumar et al., 2022): a linear probe on cached features first, then every layer fine-tuned
    from that head at the backbone's low learning rate, so a random head never distorts the features."""

    name = "lpft"
    summary = "linear probe on cached features, then full fine-tuning at a low learning rate"

    def phases(self, model: GraftModel, settings: TrainSettings) -> list[Phase]:
        low = self.backbone_lr(settings)
        return [
            Phase("probe", [group([model.head], settings.lr)], settings.epochs, cached=True, solve=True),
            Phase(
                "finetune", [*decayed_groups(model.backbone.blocks(), low, settings.layer_decay), group([model.head], low)], settings.epochs
            ),
        ]

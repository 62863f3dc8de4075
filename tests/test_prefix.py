"""The frozen prefix computed once (graft.backbones.prefix): where it cuts, that it computes what the backbone
computes, and that training on it learns what training through the whole backbone learns."""

import importlib
from pathlib import Path

import pytest
import torch
from torch import nn

from graft.backbones import SmallCNN
from graft.backbones.base import Backbone
from graft.backbones.prefix import frozen_blocks, split_frozen_prefix
from graft.data.sources import load_image_set
from graft.data.split import make_split
from graft.inference import FrozenForward
from graft.model import GraftModel, PrefixFed
from graft.strategies import get_strategy
from graft.train.recipe import Score, WeightAverage
from graft.train.settings import TrainSettings
from graft.train.trainer import Progress, Trainer, seed_everything
from tests.test_timm_backbones import tiny

trainer_module = importlib.import_module("graft.train.trainer")


def _train_last(backbone: Backbone, n: int) -> Backbone:
    for p in backbone.parameters():
        p.requires_grad_(False)
    for block in backbone.blocks()[-n:]:
        for p in block.parameters():
            p.requires_grad_(True)
    return backbone


@pytest.mark.parametrize(
    "make",
    [lambda: tiny("tf_efficientnet_lite0"), lambda: tiny("resnet18"), lambda: tiny("convnext_atto"), lambda: SmallCNN(widths=(8, 16, 16))],
)
def test_a_backbone_splits_before_its_first_trained_block_into_parts_that_share_its_weights(make) -> None:
    torch.manual_seed(0)
    backbone = _train_last(make(), 2)
    frozen = frozen_blocks(backbone)
    assert frozen == len(backbone.blocks()) - 2
    prefix, rest = split_frozen_prefix(backbone, frozen)
    backbone.eval()
    x = torch.randn(3, *backbone.preprocessing.input_size)
    with torch.no_grad():
        torch.testing.assert_close(rest(prefix(x)), backbone(x))
    trained = {id(p) for p in backbone.parameters() if p.requires_grad}
    assert {id(p) for p in rest.parameters()} >= trained  # the very tensors the optimizer steps: nothing copied
    assert not any(p.requires_grad for p in prefix.parameters())
    assert split_frozen_prefix(backbone, 0) is None and split_frozen_prefix(backbone, len(backbone.blocks())) is None


class SkipAcross(Backbone):
    """Two blocks and a connection from the image past both: no single value crosses the cut."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.num_features, self.preprocessing, self.spec = 4, SmallCNN().preprocessing, {}

    def blocks(self) -> list[nn.Module]:
        return [self.first, self.second]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.second(self.first(x)) + x).mean((2, 3))


def test_a_connection_across_the_cut_leaves_the_backbone_whole() -> None:
    assert split_frozen_prefix(_train_last(SkipAcross(), 1), 1) is None


def _finetune(shapes: Path, settings: TrainSettings, graded: list[int] | None = None) -> tuple[GraftModel, list[str], int]:
    """finetune --unfreeze 1 on a small resnet18; the log, and how many images its stem convolution saw
    (``graded`` counts those it saw with autograd on)."""
    split = make_split(load_image_set(shapes), seed=0)
    seed_everything(0)
    model = GraftModel(tiny("resnet18"), num_classes=3)
    seen, lines, graded = [0], [], graded if graded is not None else [0]

    def count(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        seen[0] += output.shape[0]
        graded[0] += output.shape[0] if torch.is_grad_enabled() else 0

    model.backbone.model.conv1.register_forward_hook(count)
    Trainer(settings, log=lines.append).fit(model, get_strategy("finetune", unfreeze=1), split)
    return model, lines, seen[0]


def test_finetune_without_augmentation_runs_the_frozen_blocks_once_and_learns_the_same_weights(
    shapes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = TrainSettings(epochs=3, batch_size=16, patience=5, precision="fp32")
    images = 48  # shapes' 60 images: 36 training and 12 validation ones (make_split's seeded 60/20/20)
    cached, lines, once = _finetune(shapes, settings)
    assert any("frozen blocks of 5 run once per image (48 images" in line for line in lines)
    assert once < images + 10  # each image once, and a few random ones checking the cut
    monkeypatch.setenv("GRAFT_DECODE_CACHE_MB", "0")  # no memory to hold the outputs: every epoch runs the whole backbone
    whole, lines, every = _finetune(shapes, settings)
    assert any("do not fit in memory" in line for line in lines) and every >= settings.epochs * images
    for name, tensor in whole.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[name], tensor, rtol=1e-3, atol=1e-4, msg=name)


def test_the_weight_average_of_the_fed_part_is_kept_under_the_models_own_names() -> None:
    torch.manual_seed(0)
    model = GraftModel(_train_last(SmallCNN(widths=(8, 16, 16)), 1), num_classes=3)
    _, rest = split_frozen_prefix(model.backbone, frozen_blocks(model.backbone))
    fed = PrefixFed(rest, model.head)
    averaged = WeightAverage(fed, 0.9)
    with torch.no_grad():
        for p in averaged.module.parameters():
            p.add_(1.0)  # the average now differs from the weights
    progress = Progress(epoch=1)
    assert Trainer._keep_best(model, fed, progress, "ema", Score(0.5, 1.0), averaged)
    for name, p in model.named_parameters():
        expected = p + 1.0 if p.requires_grad else p  # the trained block and the head from the average, the rest as they are
        torch.testing.assert_close(progress.best_state[name], expected.detach(), msg=name)


def test_finetune_with_augmentation_runs_the_frozen_blocks_apart_and_learns_the_same_weights(
    shapes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Augmented images change every step, so the frozen blocks run every step, but apart from the trained ones
    (without autograd, through a faster copy where the phase is long): the same weights as the whole backbone."""
    settings = TrainSettings(epochs=2, batch_size=16, patience=5, precision="fp32", augment="light")
    graded = [0]
    apart, _, seen = _finetune(shapes, settings, graded)
    assert seen >= settings.epochs * 36 and graded == [0]  # every training image every epoch, never under autograd
    monkeypatch.setattr(trainer_module, "split_frozen_prefix", lambda backbone, frozen: None)  # the whole backbone a step
    whole, _, _ = _finetune(shapes, settings, graded)
    assert graded[0] >= settings.epochs * 36  # the frozen stem under autograd (recording nothing, but paying for it)
    for name, tensor in whole.state_dict().items():
        # Folded BatchNorms (graft.folding) round the frozen blocks' outputs differently, and AdamW's normalised step
        # turns a rounding-sized gradient into a full-sized update: equal per tensor to rounding, not per element
        difference = (apart.state_dict()[name].float() - tensor.float()).norm() / tensor.float().norm().clamp_min(1e-12)
        assert difference < 1e-2, (name, difference.item())


def test_with_augmentation_the_frozen_blocks_run_once_on_the_validation_images_and_score_what_the_whole_network_scores(
    shapes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation images are not augmented and the frozen blocks do not change during the phase: their outputs
    are computed once, and each validation pass runs only the blocks after them."""
    settings = TrainSettings(epochs=3, batch_size=16, patience=5, precision="fp32", augment="light")
    split = make_split(load_image_set(shapes), seed=0)

    def fit() -> tuple[list[dict], list[str], int]:
        seed_everything(0)
        model = GraftModel(tiny("resnet18"), num_classes=3)
        lines, validated = [], [0]  # images the stem saw in inference mode: validation passes, not training steps
        model.backbone.model.conv1.register_forward_hook(
            lambda module, inputs, output: validated.__setitem__(0, validated[0] + output.shape[0] * torch.is_inference_mode_enabled())
        )
        result = Trainer(settings, log=lines.append).fit(model, get_strategy("finetune", unfreeze=1), split)
        return result.history, lines, validated[0]

    once, lines, validated = fit()
    assert any(f"outputs on the {len(split.val)} validation images computed once" in line for line in lines)
    assert validated == len(split.val)
    monkeypatch.setattr(Trainer, "_fed_val", lambda *args: None)  # every validation pass through the whole network
    whole, _, validated = fit()
    assert validated == settings.epochs * len(split.val)
    for cached, plain in zip(once, whole, strict=True):
        assert cached["val_accuracy"] == plain["val_accuracy"]
        assert cached["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-4)


def test_the_frozen_forward_builds_its_copy_once_for_the_phase_and_runs_without_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    backbone = _train_last(SmallCNN(widths=(8, 16, 16)), 1).eval()
    prefix, _ = split_frozen_prefix(backbone, frozen_blocks(backbone))
    monkeypatch.setenv("GRAFT_COMPILE", "on")  # build on the first step, whatever the phase's length
    forward = FrozenForward(prefix, steps={backbone.preprocessing.input_size[-1]: 3}, precision="fp32")
    x = torch.randn(4, *backbone.preprocessing.input_size)
    with torch.no_grad():
        expected = prefix(x)
    for _ in range(3):  # training steps: gradients on
        out = forward(x)
        assert not out.requires_grad
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert forward.runner.fast is not None and forward.runner.done == 3  # one copy, every step through the runner
    with torch.no_grad():
        forward(x)  # a validation pass: the blocks as they are, not the training copy
    assert forward.runner.done == 3


def test_frozen_with_augmentation_runs_its_backbone_as_a_frozen_forward_and_learns_the_same_head(
    shapes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``frozen`` with augmentation: the whole backbone is the frozen part, every training step goes through
    :class:`FrozenForward` (and so, on a long phase, through its faster copy), and the head learns what it
    learns through the plain model."""
    settings = TrainSettings(epochs=2, batch_size=16, patience=5, precision="fp32", augment="light")
    split = make_split(load_image_set(shapes), seed=0)
    trained, real = [0], FrozenForward.__call__
    monkeypatch.setattr(
        FrozenForward, "__call__", lambda self, x: trained.__setitem__(0, trained[0] + len(x) * torch.is_grad_enabled()) or real(self, x)
    )

    def fit() -> GraftModel:
        seed_everything(0)
        model = GraftModel(tiny("resnet18"), num_classes=3)
        Trainer(settings).fit(model, get_strategy("frozen"), split)
        return model

    through = fit()
    assert trained == [settings.epochs * len(split.train)]
    monkeypatch.setattr(Trainer, "_prefixed", lambda self, model, steps: None)  # the plain model a step
    plain = fit()
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(through.state_dict()[name], tensor, rtol=1e-3, atol=1e-4, msg=name)

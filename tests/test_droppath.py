"""Stochastic depth (--drop-path): timm's DropPath in a built backbone's residual blocks, active only while training."""

from pathlib import Path

import pytest
import torch
from timm.layers import DropPath
from torch import nn

from graft.backbones.droppath import set_drop_path
from graft.backbones.timm_backbone import TimmBackbone
from graft.data.sources import load_image_set
from graft.data.split import make_split
from graft.errors import GraftError
from graft.model import GraftModel
from graft.strategies import get_strategy
from graft.train.settings import TrainSettings
from graft.train.trainer import Trainer, seed_everything


@pytest.mark.parametrize(("name", "blocks"), [("resnet18", 8), ("vit_tiny_patch16_224", 12), ("tf_efficientnet_lite0", 16)])
def test_the_rate_rises_linearly_over_the_residual_blocks_and_inference_is_unchanged(name: str, blocks: int) -> None:
    torch.manual_seed(0)
    backbone = TimmBackbone(name).eval()
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        before = backbone(images)
        assert set_drop_path(backbone, 0.3) == blocks
        assert torch.equal(backbone(images), before)  # inference mode: every DropPath passes its input through
        backbone.apply(lambda m: m.train() if isinstance(m, DropPath) else None)  # BatchNorm as it was, DropPath training
        if name != "resnet18":  # timm starts a ResNet's residual branches at zero (its last BatchNorm's scale): nothing to drop
            assert not torch.allclose(backbone(images), backbone(images))  # branches dropped at random
    rates = [m.drop_prob for m in backbone.modules() if isinstance(m, DropPath)]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.3) and len(set(rates)) >= blocks - 1


def test_a_backbone_without_residual_blocks_is_left_alone_and_a_rate_of_one_is_refused() -> None:
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert set_drop_path(plain, 0.2) == 0 and not any(isinstance(m, DropPath) for m in plain.modules())
    with pytest.raises(GraftError, match="--drop-path 1 must be below 1"):
        TrainSettings(drop_path=1).validate()


def test_a_fit_with_stochastic_depth_trains_differently_and_its_weights_reload_without_it(shapes: Path) -> None:
    split = make_split(load_image_set(shapes), seed=0)
    fitted = []
    for rate in (0.0, 0.5):
        seed_everything(0)
        model, lines = GraftModel(TimmBackbone("resnet18"), 3), []
        Trainer(TrainSettings(epochs=1, batch_size=16, image_size=32, drop_path=rate), log=lines.append).fit(
            model, get_strategy("full"), split
        )
        fitted.append((model.eval(), lines))
    (plain, plain_lines), (dropped, dropped_lines) = fitted
    assert "stochastic depth in 8 residual blocks, up to 0.5 in the last" in dropped_lines
    assert not any("stochastic depth" in line for line in plain_lines)
    assert not torch.allclose(plain.head.weight, dropped.head.weight)
    reloaded = GraftModel(TimmBackbone("resnet18"), 3)
    reloaded.load_state_dict(dropped.state_dict())  # the saved tensors are a plain resnet18's
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(images), dropped(images), atol=1e-5)

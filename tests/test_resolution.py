"""Progressive resizing (--progressive): early epochs train on shrunk images, the last ones and validation at the full side."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from graft.backbones.timm_backbone import TimmBackbone
from graft.data.sources import load_image_set
from graft.data.split import make_split
from graft.model import GraftModel
from graft.strategies import get_strategy
from graft.train.resolution import accepts, epoch_sides, shrunk
from graft.train.settings import TrainSettings
from graft.train.trainer import Trainer, seed_everything


@pytest.mark.parametrize("side", [96, 224, 300, 384])
@pytest.mark.parametrize("epochs", [2, 3, 5, 10, 30])
def test_the_side_grows_from_seven_tenths_to_the_full_side_which_the_last_fifth_of_the_epochs_train_at(side: int, epochs: int) -> None:
    sides = epoch_sides(side, epochs)
    assert len(sides) == epochs and sides == sorted(sides)  # never shrinks again
    assert sides[0] < side and sides[0] % 32 == 0 and abs(sides[0] - 0.7 * side) <= 16
    assert sides[-1] == side and sides.count(side) >= max(1, epochs // 5)
    assert sides.count(sides[0]) >= epochs // 2  # the cheap epochs are the first half
    assert all(s % 32 == 0 for s in sides if s != side)


def test_a_single_epoch_or_a_small_side_is_left_at_the_full_side() -> None:
    assert epoch_sides(224, 1) == [224]
    assert epoch_sides(64, 10) == [64] * 10  # 0.7 x 64 would be below the smallest side worth training at
    assert epoch_sides(28, 4) == [28] * 4


def test_batches_are_shrunk_as_torchvision_resizes_and_smaller_ones_pass_unchanged() -> None:
    images, labels = torch.rand(4, 3, 96, 96), torch.tensor([0, 1, 2, 0])
    (small, same), (kept, _) = list(shrunk([(images, labels), (images[:, :, :32, :32], labels)], 64))
    torch.testing.assert_close(small, TF.resize(images, [64, 64], antialias=True), atol=1e-5, rtol=0)
    assert same is labels and kept.shape[-1] == 32


def test_a_network_with_a_fixed_grid_is_found_and_every_layers_mode_is_put_back() -> None:
    conv = TimmBackbone("resnet18")
    conv.train()
    conv.model.layer1.eval()  # mixed modes, as a phase with frozen BatchNorm statistics leaves them
    modes = [m.training for m in conv.modules()]
    assert accepts(conv, 3, 160)
    assert [m.training for m in conv.modules()] == modes
    assert not accepts(TimmBackbone("vit_tiny_patch16_224"), 3, 160)  # its position embeddings are for 224
    assert not accepts(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)), 3, 24)


def _fit(data: Path, strategy: str, out: Path, **settings: object) -> tuple[list[dict[str, object]], list[tuple[bool, int]], list[str]]:
    """A resnet18 fitted at 96 pixels: its metrics lines, the (training?, image side) of every batch its last stage saw
    (it trains in every strategy but ``features``; its input is a sixteenth of the image's side; the one blank image
    progressive resizing tries the network on counts with training), its log."""
    split = make_split(load_image_set(data), seed=0)
    seed_everything(0)
    model, lines, seen = GraftModel(TimmBackbone("resnet18"), 3), [], []
    model.backbone.model.layer4.register_forward_pre_hook(
        lambda _, args: seen.append((torch.is_grad_enabled() or len(args[0]) == 1, args[0].shape[-1] * 16))
    )
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    trainer = Trainer(TrainSettings(batch_size=16, image_size=96, **settings), metrics_path=metrics, log=lines.append)  # type: ignore[arg-type]
    trainer.fit(model, get_strategy(strategy, **({"unfreeze": 1} if strategy == "finetune" else {})), split)
    return [json.loads(line) for line in metrics.read_text().splitlines()], seen, lines


@pytest.mark.parametrize(("strategy", "augment"), [("full", "none"), ("finetune", "light")])
def test_early_epochs_train_on_shrunk_images_and_validation_runs_at_the_full_side(
    shapes: Path, tmp_path: Path, strategy: str, augment: str
) -> None:
    """``full`` runs the whole network on images; ``finetune`` with augmentation runs its frozen blocks apart
    (graft.inference.FrozenForward), which must follow the side from epoch to epoch."""
    records, seen, lines = _fit(shapes, strategy, tmp_path, epochs=3, patience=3, augment=augment, progressive=True)
    assert [r["side"] for r in records] == [64, 64, 96]
    probe, *trained = [side for grad, side in seen if grad]
    assert probe == 64
    validated = {side for grad, side in seen if not grad}
    batches = len(trained) // 3  # batches an epoch
    assert trained == [64] * 2 * batches + [96] * batches and validated == {96}
    assert any("progressive resizing: epochs 1-2 train at 64 pixels, the side grows to 96 by epoch 3" in line for line in lines)
    plain, seen_plain, plain_lines = _fit(shapes, strategy, tmp_path / "plain", epochs=3, patience=3, augment=augment)
    assert {side for _, side in seen_plain} == {96} and "side" not in plain[0]
    assert not any("progressive" in line for line in plain_lines)


def test_an_epoch_on_shrunk_images_never_ends_the_phase_early(shapes: Path, tmp_path: Path) -> None:
    """At a learning rate too small to change a prediction, no epoch improves on the first: with patience 1 the
    phase stops after one stale epoch, but not while the side is still growing."""
    plain, _, _ = _fit(shapes, "full", tmp_path / "plain", epochs=4, patience=1, lr=1e-12)
    progressive, _, _ = _fit(shapes, "full", tmp_path / "progressive", epochs=4, patience=1, lr=1e-12, progressive=True)
    sides = epoch_sides(96, 4)
    assert [r["side"] for r in progressive] == sides[: sides.index(96) + 1]  # the first epoch at the full side ends it
    assert len(plain) == 2 and sides.index(96) >= 2


def test_the_features_strategy_never_shrinks_its_cached_inputs(shapes: Path, tmp_path: Path) -> None:
    records, seen, lines = _fit(shapes, "features", tmp_path, epochs=3, progressive=True)
    assert {side for _, side in seen} == {96} and not any("progressive" in line for line in lines)
    assert all("side" not in r for r in records)

"""Batch mixing (--mix): torchvision's mixup and CutMix on training images, never on cached inputs."""

from pathlib import Path

import pytest
import torch

from graft.backbones import SmallCNN
from graft.data.sources import load_image_set
from graft.data.split import make_split
from graft.errors import GraftError
from graft.model import GraftModel
from graft.strategies import get_strategy
from graft.train.mixing import mixed, mixer
from graft.train.settings import TrainSettings
from graft.train.trainer import Trainer, seed_everything


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 1])


def test_mixup_blends_each_image_with_its_neighbour_and_the_labels_in_the_same_proportion() -> None:
    images, labels = _batch()
    ((out_images, out_labels),) = list(mixed([(images, labels)], mixer("mixup", 3)))
    assert out_labels.shape == (4, 3) and torch.allclose(out_labels.sum(1), torch.ones(4))
    lam = out_labels[0, 0].item()  # image 0 (class 0) is blended with the batch rolled by one: image 3 (class 1)
    assert 0 <= lam <= 1 and out_labels[0, 1].item() == pytest.approx(1 - lam)
    assert torch.allclose(out_images, lam * images + (1 - lam) * images.roll(1, 0), atol=1e-6)


def test_cutmix_pastes_a_box_and_weighs_the_labels_by_its_area() -> None:
    images, labels = _batch()
    ((out_images, out_labels),) = list(mixed([(images, labels)], mixer("cutmix", 3)))
    pasted = (out_images != images).any(1)  # pixels taken from the neighbour (random values never coincide)
    assert torch.equal(out_images[:, :, pasted[0]], images.roll(1, 0)[:, :, pasted[0]])
    share = pasted[0].float().mean().item()
    assert out_labels[0, 1].item() == pytest.approx(share) and out_labels[0, 0].item() == pytest.approx(1 - share)


def test_none_leaves_batches_alone_and_an_unknown_mix_is_one_clear_error() -> None:
    images, labels = _batch()
    ((out_images, out_labels),) = list(mixed([(images, labels)], mixer("none", 3)))
    assert out_images is images and out_labels is labels
    with pytest.raises(GraftError, match="unknown --mix 'blend'; choose none, mixup, cutmix, mixup-cutmix"):
        TrainSettings(mix="blend").validate()


def _fit(shapes: Path, strategy: str, mix: str) -> tuple[GraftModel, list[str]]:
    split = make_split(load_image_set(shapes), seed=0)
    seed_everything(0)
    model, lines = GraftModel(SmallCNN(widths=(8, 16, 16)), 3), []
    settings = TrainSettings(epochs=2, batch_size=16, patience=5, mix=mix)
    options = {"unfreeze": 1} if strategy == "finetune" else {}
    Trainer(settings, log=lines.append).fit(model, get_strategy(strategy, **options), split)
    return model, lines


def test_a_mixed_finetune_trains_on_images_and_learns_something_else(shapes: Path) -> None:
    """Mixing varies the inputs every epoch, so the frozen blocks' outputs are not computed once and kept."""
    plain, plain_lines = _fit(shapes, "finetune", "none")
    mixed_model, mixed_lines = _fit(shapes, "finetune", "mixup-cutmix")
    assert any("run once per image" in line for line in plain_lines)
    assert not any("run once per image" in line for line in mixed_lines)
    assert not torch.allclose(plain.head.weight, mixed_model.head.weight)


def test_the_features_strategy_never_mixes_its_cached_inputs(shapes: Path) -> None:
    plain, _ = _fit(shapes, "features", "none")
    mixed_model, _ = _fit(shapes, "features", "cutmix")
    assert torch.equal(plain.head.weight, mixed_model.head.weight)

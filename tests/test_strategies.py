"""What each strategy trains, and what it must leave untouched."""

from pathlib import Path

import pytest
import torch
from torch import nn

from graft.backbones import SmallCNN
from graft.data.sources import load_image_set
from graft.data.split import make_split
from graft.model import GraftModel
from graft.strategies import STRATEGIES, get_strategy
from graft.train.settings import TrainSettings
from graft.train.trainer import Trainer, seed_everything

FAST = TrainSettings(epochs=2, batch_size=16, patience=5)


def _fit(strategy: str, shapes: Path, settings: TrainSettings = FAST) -> tuple[GraftModel, dict[str, torch.Tensor], int]:
    split = make_split(load_image_set(shapes), seed=0)
    seed_everything(0)
    model = GraftModel(SmallCNN(widths=(8, 16, 16)), num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = Trainer(settings).fit(model, get_strategy(strategy), split)
    return model, before, result.trainable_params


def _backbone_changed(model: GraftModel, before: dict[str, torch.Tensor]) -> dict[str, bool]:
    return {k: not torch.equal(v, before[k]) for k, v in model.state_dict().items() if k.startswith("backbone.")}


@pytest.mark.parametrize("augment", ["none", "light"])
def test_frozen_leaves_the_backbone_bit_identical(shapes: Path, augment: str) -> None:
    model, before, trainable = _fit("frozen", shapes, TrainSettings(epochs=2, batch_size=16, augment=augment, patience=5))
    changed = _backbone_changed(model, before)
    assert not any(changed.values()), [k for k, v in changed.items() if v]  # running BN statistics included
    assert not torch.equal(model.head.weight, before["head.weight"])
    assert trainable == sum(p.numel() for p in model.head.parameters())


def test_full_trains_every_layer(shapes: Path) -> None:
    model, before, trainable = _fit("full", shapes)
    changed = _backbone_changed(model, before)
    assert all(changed[k] for k in changed if k.endswith(".weight"))
    assert trainable == sum(p.numel() for p in model.parameters())


def test_scratch_reinitialises_the_transferred_weights(shapes: Path) -> None:
    split = make_split(load_image_set(shapes), seed=0)
    model = GraftModel(SmallCNN(widths=(8, 16, 16)), num_classes=3)
    first_conv = model.backbone.stages[0][0].weight.detach().clone()
    strategy = get_strategy("scratch")
    strategy.prepare(model)
    assert not torch.equal(model.backbone.stages[0][0].weight, first_conv)
    assert model.backbone.spec["kind"] == "smallcnn"
    result = Trainer(FAST).fit(model, get_strategy("scratch"), split)
    assert result.trainable_params == sum(p.numel() for p in model.parameters())


def test_every_phase_names_only_parameters_of_the_model(shapes: Path) -> None:
    model = GraftModel(SmallCNN(widths=(8, 16, 16)), num_classes=3)
    own = {id(p) for p in model.parameters()}
    for name in STRATEGIES:
        for phase in get_strategy(name).phases(model, FAST):
            ids = [id(p) for g in phase.groups for p in g["params"]]
            assert ids and set(ids) <= own and len(ids) == len(set(ids)), name


def test_same_seed_same_weights(shapes: Path) -> None:
    a, _, _ = _fit("full", shapes)
    b, _, _ = _fit("full", shapes)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_frozen_batchnorm_stays_in_eval_mode_while_the_head_trains(shapes: Path) -> None:
    from graft.train.trainer import apply_freezing

    model = GraftModel(SmallCNN(widths=(8, 16, 16)), num_classes=3)
    (phase,) = get_strategy("frozen").phases(model, FAST)
    apply_freezing(model, phase)
    assert model.head.training
    assert all(not m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_a_tiny_data_set_trains_with_default_settings(shapes: Path) -> None:
    """60 images at batch 64 is one step an epoch: the learning-rate schedule must cope with 10 steps."""
    split = make_split(load_image_set(shapes), seed=0)
    model = GraftModel(SmallCNN(widths=(8, 16, 16)), num_classes=3)
    result = Trainer(TrainSettings()).fit(model, get_strategy("full"), split)
    assert 1 <= result.epochs <= TrainSettings().epochs


def test_batchnorm_frozen_keeps_learnt_statistics_while_their_layers_train(shapes: Path) -> None:
    """--batchnorm frozen: a transferred network's running statistics stay, its BatchNorm scale and shift still
    learn; a network trained from scratch (initial statistics) normalises by its batches as usual."""
    split = make_split(load_image_set(shapes), seed=0)
    frozen = TrainSettings(epochs=2, batch_size=16, patience=5, batchnorm="frozen")
    seed_everything(0)
    model = GraftModel(SmallCNN(widths=(8, 16, 16)), num_classes=3)
    Trainer(FAST).fit(model, get_strategy("scratch"), split)  # the "pretrained" source: statistics learnt
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(frozen).fit(model, get_strategy("full"), split)
    changed = _backbone_changed(model, before)
    statistics = [k for k in changed if k.endswith(("running_mean", "running_var"))]
    assert statistics and not any(changed[k] for k in statistics)
    assert all(changed[k] for k in changed if k.endswith(".weight"))  # convolutions and BatchNorm scales trained

    model, before, _ = _fit("scratch", shapes, frozen)
    changed = _backbone_changed(model, before)
    assert all(changed[k] for k in changed if k.endswith(("running_mean", "running_var")))

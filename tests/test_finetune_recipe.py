"""The fine-tuning recipe: the epoch kept is the best on the validation metric, and a weight average competes for it."""

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

import graft
from graft.backbones import SmallCNN
from graft.data.loader import make_loader
from graft.data.sources import load_image_set
from graft.data.split import make_split
from graft.data.transforms import Preprocessing, build_transform
from graft.errors import GraftError, Interrupted
from graft.inference import forward_all
from graft.model import GraftModel
from graft.strategies import get_strategy
from graft.strategies.transfer import DEFAULT_SHARE
from graft.train.recipe import EMA_WARMUP_POWER, Score, WeightAverage, score, selection_metric
from graft.train.settings import TrainSettings
from graft.train.trainer import Trainer, seed_everything
from tests.test_cli import assert_user_error
from tests.test_cli import graft as cli
from tests.test_resume import assert_same_run, crash_after, metrics


def test_the_metric_decides_and_the_loss_breaks_ties() -> None:
    assert Score(0.8, 0.9).beats(Score(0.7, 0.1))
    assert not Score(0.7, 0.1).beats(Score(0.8, 0.9))
    assert Score(0.8, 0.4).beats(Score(0.8, 0.5)) and not Score(0.8, 0.5).beats(Score(0.8, 0.4))
    assert selection_metric([0] * 30 + [1] * 30, 2) == "accuracy"
    assert selection_metric([0] * 30 + [1] * 10, 2) == "balanced_accuracy"
    logits = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1]])  # predicts 0, 0, 0, 1
    labels = torch.tensor([0, 0, 1, 1])
    assert score(logits, labels, 0.0, "accuracy").metric == 0.75
    assert score(logits, labels, 0.0, "balanced_accuracy").metric == pytest.approx((1 + 0.5) / 2)


def test_the_weight_average_follows_its_warmed_up_decay_and_copies_integer_buffers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(net, decay=0.9)
    expected = net[0].weight.detach().clone()
    for step in range(6):
        with torch.no_grad():
            net[0].weight.add_(1.0)
        net(torch.randn(4, 3))  # BatchNorm counts a batch
        average.update_parameters(net)
        decay = min(0.9, 1 - (1 + step) ** -EMA_WARMUP_POWER)
        expected = net[0].weight.detach().clone() if step == 0 else decay * expected + (1 - decay) * net[0].weight.detach()
    assert torch.allclose(average.module[0].weight, expected, atol=1e-6)
    assert not torch.allclose(average.module[0].weight, net[0].weight)
    assert int(average.module[1].num_batches_tracked) == int(net[1].num_batches_tracked) == 6
    assert int(average.n_averaged) == 6


def _fit(root: Path, **settings: object) -> tuple[GraftModel, list[dict], Trainer, object]:
    split = make_split(load_image_set(root), seed=0)
    seed_everything(0)
    model = GraftModel(SmallCNN(widths=(8, 16, 16)), 3)
    metrics = root.parent / f"metrics-{len(list(root.parent.glob('metrics-*')))}.jsonl"
    trainer = Trainer(TrainSettings(epochs=4, batch_size=16, patience=5, lr=3e-3, **settings), metrics_path=metrics)  # type: ignore[arg-type]
    trainer.fit(model, get_strategy("full"), split)
    return model, [json.loads(line) for line in metrics.read_text().splitlines()], trainer, split


@pytest.mark.parametrize("ema", [True, False])
def test_the_model_kept_is_the_best_on_the_validation_metric(shapes: Path, ema: bool) -> None:
    """Each epoch records the best so far; the model handed back scores exactly what the best record says."""
    model, records, trainer, split = _fit(shapes, ema=ema)
    assert trainer.metric == "accuracy" and len(records) == 4
    best = records[-1]["best"]
    scores = [(r["val_accuracy"], -r["val_loss"], r["epoch"], "weights") for r in records]
    if ema:
        assert all("ema_val_accuracy" in r and "ema_val_loss" in r for r in records)
        scores += [(r["ema_val_accuracy"], -r["ema_val_loss"], r["epoch"], "ema") for r in records]
    else:
        assert not any("ema_val_loss" in r for r in records)
    top = max(s[:2] for s in scores)
    assert (best["metric"], -best["loss"]) == pytest.approx(top, abs=1e-5)
    val = make_loader(Path(split.root), split.val, model.backbone.preprocessing, batch_size=16)
    logits, labels = forward_all(model, val)
    assert (logits.argmax(1) == labels).float().mean().item() == pytest.approx(best["metric"], abs=1e-6)


def test_ema_is_a_bool_or_a_decay_below_one() -> None:
    assert TrainSettings(ema=0.99).validate().ema == 0.99
    assert TrainSettings(ema=False).validate().ema is False
    for bad in (1.0, 0, "yes"):
        with pytest.raises(GraftError, match="ema"):
            TrainSettings(ema=bad).validate()  # type: ignore[arg-type]


def test_trivial_augment_changes_images_and_only_trivial_flip_mirrors() -> None:
    pre = Preprocessing((3, 32, 32), (0.5,) * 3, (0.5,) * 3, interpolation="bicubic")  # lite0's
    image = Image.new("RGB", (32, 32))
    image.paste((255, 255, 255), (4, 4, 14, 28))  # a bar on the left: its mirror image is another picture
    plain = build_transform(pre)(image)
    torch.manual_seed(0)
    augmented = [build_transform(pre, "trivial")(image) for _ in range(20)]
    assert all(a.shape == plain.shape for a in augmented) and any(not torch.equal(a, plain) for a in augmented)
    flips = {
        name: any(isinstance(t, v2.RandomHorizontalFlip) for t in build_transform(pre, name).transforms)
        for name in ("trivial", "trivial-flip")
    }
    assert flips == {"trivial": False, "trivial-flip": True}


def test_image_size_sets_the_input_the_run_trains_and_predicts_at(shapes: Path, tmp_path: Path) -> None:
    run = graft.fit(
        str(shapes),
        backbone="smallcnn",
        strategy="full",
        epochs=1,
        batch_size=16,
        image_size=20,
        batchnorm="train",
        out=tmp_path / "run",
        report=False,
    )
    config = json.loads((run.path / "config.json").read_text())
    assert config["preprocessing"]["input_size"] == [1, 20, 20] and config["fit"]["settings"]["batchnorm"] == "train"
    assert run.predict(shapes / "ring" / "000.png")[0].top
    assert_user_error(cli("fit", str(shapes), "--image-size", "8", "--out", str(tmp_path / "bad")), "--image-size 8 is out of range")
    assert_user_error(cli("fit", str(shapes), "--ema", "often", "--out", str(tmp_path / "bad")), "--ema 'often'")
    assert_user_error(cli("fit", str(shapes), "--batchnorm", "batch", "--out", str(tmp_path / "bad")), "unknown --batchnorm 'batch'")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("strategy", ["full", "lpft"])
def test_layer_decay_slows_each_earlier_block_and_leaves_no_parameter_out(strategy: str) -> None:
    model = GraftModel(SmallCNN(widths=(8, 16, 16)), 3)
    settings = TrainSettings(layer_decay=0.5)
    groups = get_strategy(strategy).phases(model, settings)[-1].groups
    top = settings.lr * get_strategy(strategy).backbone_lr_scale  # full: the head's rate; lpft's second phase: a tenth of it
    assert [g["lr"] for g in groups[:-1]] == pytest.approx([top * 0.25, top * 0.5, top])
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.parameters()}
    with pytest.raises(GraftError, match="--layer-decay 1.5"):
        TrainSettings(layer_decay=1.5).validate()


def test_each_strategy_has_its_own_backbone_rate_and_the_setting_overrides_it() -> None:
    """finetune's last blocks and full learn at the head's rate; lpft and --freeze-first at a tenth."""
    model = GraftModel(SmallCNN(widths=(8, 16, 16)), 3)
    settings = TrainSettings()

    def rates(name: str, given: TrainSettings = settings, **options: int) -> set[float]:
        return {g["lr"] for g in get_strategy(name, **options).phases(model, given)[-1].groups[:-1]}

    assert rates("finetune") == rates("finetune", unfreeze=1) == rates("full") == {settings.lr}
    assert rates("finetune", freeze_first=2) == rates("lpft") == {settings.lr * 0.1}
    assert (
        rates("finetune", TrainSettings(backbone_lr_scale=0.5))
        == rates("full", TrainSettings(backbone_lr_scale=0.5))
        == {settings.lr * 0.5}
    )
    for widths, half in (((8, 16, 16, 16, 16), 3), ((8, 16, 16, 16), 2), ((8,), 1)):  # the last half of the blocks, rounded up
        model = GraftModel(SmallCNN(widths=widths), 3)
        backbone, _ = get_strategy("finetune").phases(model, settings)[0].groups
        assert math.ceil(len(widths) * DEFAULT_SHARE) == half
        assert {id(p) for p in backbone["params"]} == {id(p) for block in model.backbone.blocks()[-half:] for p in block.parameters()}
    model = GraftModel(SmallCNN(widths=(8, 16)), 3)
    with pytest.raises(GraftError, match="--unfreeze 3 is more than the backbone's 2 blocks"):
        get_strategy("finetune", unfreeze=3).phases(model, settings)  # asked for explicitly: an error, not a silent cap


def test_a_resumed_run_continues_the_same_weight_average(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The average is in the checkpoint: after a crash its validation figures and the weights kept are the uninterrupted run's."""
    settings = TrainSettings(epochs=3, batch_size=16, patience=5, ema=0.9, augment="trivial")
    graft.fit(str(shapes), strategy="full", settings=settings, out=tmp_path / "reference", report=False)
    with monkeypatch.context() as patch:
        crash_after(patch, 3)
        with pytest.raises(Interrupted):
            graft.fit(str(shapes), strategy="full", settings=settings, out=tmp_path / "run", report=False)
    graft.resume(tmp_path / "run")
    assert all("ema_val_loss" in record for record in metrics(tmp_path / "run"))
    assert_same_run(tmp_path / "run", tmp_path / "reference")


@pytest.mark.parametrize(("lr", "said"), [(1e-3, None), (1.0, "try --lr 0.3")])
def test_a_phase_whose_training_loss_ends_no_better_than_a_uniform_guess_says_so(shapes: Path, lr: float, said: str | None) -> None:
    """At lr 1 the small CNN's training loss ends at about 1.28, above ln 3 = 1.10, a uniform guess's: one line says
    the rate is likely too high and names a third of it; at the default rate it learns and nothing is said."""
    split = make_split(load_image_set(shapes), seed=0)
    seed_everything(0)
    lines: list[str] = []
    result = Trainer(TrainSettings(epochs=3, batch_size=16, patience=5, lr=lr), log=lines.append).fit(
        GraftModel(SmallCNN(widths=(8, 16, 16)), 3), get_strategy("scratch"), split
    )
    unlearnt = [line for line in lines if "training did not learn" in line]
    assert (result.history[-1]["train_loss"] >= math.log(3)) == (said is not None)
    assert len(unlearnt) == (0 if said is None else 1) and all(str(said) in line for line in unlearnt)

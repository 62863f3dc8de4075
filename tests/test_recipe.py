"""The default recipe: a linear head on cached features solved to its optimum, class weights where classes are uneven."""

import json
from pathlib import Path

import pytest
import torch
from sklearn.linear_model import LogisticRegression

import graft
from graft.backbones import SmallCNN
from graft.data.sources import load_image_set
from graft.data.split import make_split
from graft.features import cached_features
from graft.model import GraftModel
from graft.strategies import get_strategy
from graft.train.settings import TrainSettings
from graft.train.trainer import Trainer, seed_everything
from tests.conftest import make_shapes

FAST = TrainSettings(epochs=3, batch_size=16, patience=5)


def _split_and_backbone(root: Path) -> tuple[graft.Split, SmallCNN]:
    split = make_split(load_image_set(root), seed=0)
    seed_everything(0)
    return split, SmallCNN(widths=(8, 16, 16))


@pytest.mark.parametrize("strategy", ["features", "frozen"])
def test_the_linear_head_is_solved_to_the_optimum_on_cached_features(shapes: Path, strategy: str) -> None:
    """One solve, not epochs; the head is scikit-learn's optimum at the strength chosen on validation."""
    split, backbone = _split_and_backbone(shapes)
    model = GraftModel(backbone, 3)
    result = Trainer(FAST).fit(model, get_strategy(strategy), split)
    (record,) = result.history
    assert record["phase"] == "head" and record["solver"]["converged"]
    train_x, train_y = cached_features(backbone, Path(split.root), split.train, precision="auto")
    reference = LogisticRegression(C=record["solver"]["C"], max_iter=5000, tol=1e-8).fit(train_x.double().numpy(), train_y.numpy())
    with torch.no_grad():
        ours = model.head(train_x).argmax(1)
    assert (ours.numpy() == reference.predict(train_x.double().numpy())).mean() >= 0.98


def test_an_mlp_head_and_an_augmented_frozen_fit_still_train_for_epochs(shapes: Path) -> None:
    split, backbone = _split_and_backbone(shapes)
    mlp = Trainer(TrainSettings(epochs=2, batch_size=16, head="mlp", patience=5)).fit(
        GraftModel(backbone, 3, "mlp"), get_strategy("frozen"), split
    )
    assert [r["epoch"] for r in mlp.history] == [1, 2] and "solver" not in mlp.history[0]
    augmented = Trainer(TrainSettings(epochs=2, batch_size=16, augment="light", patience=5)).fit(
        GraftModel(backbone, 3), get_strategy("frozen"), split
    )
    assert len(augmented.history) == 2


def test_lpft_probes_by_solving_then_fine_tunes(shapes: Path) -> None:
    split, backbone = _split_and_backbone(shapes)
    result = Trainer(FAST).fit(GraftModel(backbone, 3), get_strategy("lpft"), split)
    assert [r["phase"] for r in result.history] == ["probe", "finetune", "finetune", "finetune"] and "solver" in result.history[0]


def uneven(root: Path) -> Path:
    """bar and cross with 40 images each, ring with 8: a 5:1 imbalance."""
    make_shapes(root, per_class=40)
    for extra in sorted((root / "ring").iterdir())[8:]:
        extra.unlink()
    return root


def test_uneven_classes_get_a_class_weighted_loss_and_say_so(tmp_path: Path) -> None:
    split, backbone = _split_and_backbone(uneven(tmp_path / "uneven"))
    said: list[str] = []
    trainer = Trainer(replace_settings(class_weight="auto"), log=said.append)
    trainer.fit(GraftModel(backbone, 3), get_strategy("frozen"), split)
    assert trainer.class_weight == "balanced" and any("classes are uneven" in line for line in said)
    counts = torch.bincount(torch.tensor([y for _, y in split.train]), minlength=3).double()
    assert torch.allclose(trainer.loss_fn.weight.double(), len(split.train) / (3 * counts), rtol=1e-6)
    plain = Trainer(replace_settings(class_weight="none"), log=said.append)
    plain.fit(GraftModel(backbone, 3), get_strategy("frozen"), split)
    assert plain.class_weight is None and plain.loss_fn.weight is None


def test_even_classes_stay_unweighted_under_auto(shapes: Path) -> None:
    split, backbone = _split_and_backbone(shapes)
    trainer = Trainer(replace_settings(class_weight="auto"))
    trainer.fit(GraftModel(backbone, 3), get_strategy("frozen"), split)
    assert trainer.class_weight is None


def replace_settings(**changes: object) -> TrainSettings:
    return TrainSettings(**{**FAST.to_dict(), **changes})


def test_results_carry_balanced_accuracy_macro_f1_and_an_interval(tmp_path: Path) -> None:
    run = graft.fit(
        str(uneven(tmp_path / "uneven")),
        backbone="smallcnn",
        strategy="scratch",
        epochs=2,
        batch_size=8,
        out=tmp_path / "run",
        report=False,
    )
    result = json.loads((run.path / "result.json").read_text())
    low, high = result["test_accuracy_interval"]
    assert low <= result["test_accuracy"] <= high and high - low > 0.05  # 18 test images: a wide interval
    assert set(result["per_class_recall"]) == {"bar", "cross", "ring"}
    assert result["balanced_accuracy"] == pytest.approx(sum(result["per_class_recall"].values()) / 3)
    evaluation = run.evaluate()
    assert evaluation.scores.balanced_accuracy == pytest.approx(result["balanced_accuracy"])
    assert evaluation.to_dict()["macro_f1"] == pytest.approx(result["macro_f1"])

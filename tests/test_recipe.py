"""The default recipe: a linear head on cached features solved to its optimum; a logit adjustment where classes are uneven."""

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
from graft.model import GraftModel, make_head
from graft.strategies import get_strategy
from graft.train.adjustment import STRENGTHS, choose_strength, fold_into, log_prior, output_layer
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


def test_uneven_classes_under_auto_get_the_logit_adjustment_that_validation_chooses_and_say_so(tmp_path: Path) -> None:
    """auto trains as none does and then moves the head's bias by -tau * log(class share), tau chosen on validation."""
    split, backbone = _split_and_backbone(uneven(tmp_path / "uneven"))
    said: list[str] = []
    models, results = {}, {}
    for mode in ("auto", "none"):  # the frozen fit solves its head from zeros: the same head both times, before the adjustment
        trainer = Trainer(replace_settings(class_weight=mode), log=said.append)
        models[mode] = GraftModel(backbone, 3)
        results[mode] = trainer.fit(models[mode], get_strategy("frozen"), split)
        assert trainer.class_weight is None and trainer.loss_fn.weight is None and trainer.adjusting == (mode == "auto")
    assert sum("classes are uneven" in line for line in said) == 1
    assert sum(line.startswith(("decisions moved towards the rare classes", "decisions left as trained")) for line in said) == 1
    tau, prior = results["auto"].logit_adjustment, log_prior([y for _, y in split.train], 3)
    assert results["none"].logit_adjustment == 0.0 and prior.argmax() != prior.argmin()
    auto, plain = models["auto"].head, models["none"].head
    torch.testing.assert_close(auto.weight, plain.weight)
    torch.testing.assert_close(auto.bias.double(), plain.bias.double() - tau * prior, rtol=0, atol=1e-6)
    val_x, val_y = cached_features(backbone, Path(split.root), split.val, precision="auto")
    with torch.no_grad():
        assert choose_strength(plain(val_x), val_y, prior)[0] == tau  # what validation scores best, recomputed


def test_balanced_weighs_the_loss_and_makes_no_adjustment(tmp_path: Path) -> None:
    split, backbone = _split_and_backbone(uneven(tmp_path / "uneven"))
    trainer = Trainer(replace_settings(class_weight="balanced"))
    result = trainer.fit(GraftModel(backbone, 3), get_strategy("frozen"), split)
    assert trainer.class_weight == "balanced" and not trainer.adjusting and result.logit_adjustment == 0.0
    counts = torch.bincount(torch.tensor([y for _, y in split.train]), minlength=3).double()
    assert torch.allclose(trainer.loss_fn.weight.double(), len(split.train) / (3 * counts), rtol=1e-6)


def test_the_adjustment_recovers_the_balanced_decision_of_a_model_that_learned_the_prior() -> None:
    """Two Gaussian classes at 9:1: a model that learned the posterior (likelihood + log prior, what training on
    uneven classes teaches) is best for balanced accuracy at tau = 1, where the prior is taken out again."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.zeros(9000, dtype=torch.long), torch.ones(1000, dtype=torch.long)])
    x = torch.randn(len(labels), generator=generator, dtype=torch.float64) + 2.0 * labels
    prior = log_prior(labels.tolist(), 2)
    likelihood = torch.stack([-0.5 * x**2, -0.5 * (x - 2.0) ** 2], dim=1)
    tau, scores = choose_strength(likelihood + prior, labels, prior)
    assert tau in (0.75, 1.0) and scores[tau] > scores[0.0] + 0.05  # unadjusted, the rare class loses about a third of its recall
    assert choose_strength(likelihood, labels, prior)[0] == 0.0  # a model that did not learn the prior needs none


def test_the_adjustment_goes_into_an_mlp_heads_output_layer() -> None:
    head = make_head("mlp", 6, 3, hidden=4)
    before = output_layer(head).bias.clone()
    fold_into(head, 0.5, torch.tensor([-0.1, -1.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(output_layer(head).bias, before + torch.tensor([0.05, 0.5, 1.0]))
    assert output_layer(head) is head[-1]


def test_even_classes_stay_unweighted_and_unadjusted_under_auto(shapes: Path) -> None:
    split, backbone = _split_and_backbone(shapes)
    trainer = Trainer(replace_settings(class_weight="auto"))
    result = trainer.fit(GraftModel(backbone, 3), get_strategy("frozen"), split)
    assert trainer.class_weight is None and not trainer.adjusting and result.logit_adjustment == 0.0


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
    assert result["uneven_classes"] and result["logit_adjustment"] in STRENGTHS  # scratch on uneven classes: adjusted under auto
    evaluation = run.evaluate()
    assert evaluation.scores.balanced_accuracy == pytest.approx(result["balanced_accuracy"])
    assert evaluation.to_dict()["macro_f1"] == pytest.approx(result["macro_f1"])

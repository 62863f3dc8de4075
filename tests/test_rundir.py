"""Run directories: save -> load -> predict gives the same outputs, and damaged runs fail cleanly."""

import json
from pathlib import Path

import pytest
import torch

from graft import api, evaluation
from graft.data.loader import make_loader
from graft.data.sources import load_image_set
from graft.errors import GraftError
from graft.inference import forward_all
from graft.model import GraftModel
from graft.rundir import CONFIG, WEIGHTS, load_run, save_run
from graft.sources import create_backbone
from graft.train.settings import TrainSettings


@pytest.fixture
def run(shapes: Path, tmp_path: Path) -> Path:
    api.fit(str(shapes), backbone="smallcnn", strategy="scratch", out=tmp_path / "run", settings=TrainSettings(epochs=2, batch_size=16))
    return tmp_path / "run"


def test_save_load_gives_back_the_model_that_was_saved(shapes: Path, tmp_path: Path) -> None:
    """Every parameter and buffer (BatchNorm statistics too) comes back bit for bit, and so do outputs on real images."""
    torch.manual_seed(0)
    model = GraftModel(create_backbone("smallcnn"), 3, "mlp", hidden=16)
    images = load_image_set(shapes)
    loader = make_loader(shapes, images.samples, model.backbone.preprocessing, batch_size=20)
    with torch.no_grad():
        for x, _ in loader:  # training-mode passes move the BatchNorm statistics off their initial values
            model(x)
    config = {"classes": images.classes, "backbone": model.backbone.spec, "head": model.head_spec}
    config["preprocessing"] = model.backbone.preprocessing.to_dict()
    save_run(tmp_path / "saved", model, config)
    loaded = load_run(tmp_path / "saved").model
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    model.eval()
    with torch.inference_mode():
        assert all(torch.equal(model(x), loaded(x)) for x, _ in loader)
    some = images.samples[::7]
    expected = forward_all(model, make_loader(shapes, some, model.backbone.preprocessing, batch_size=len(some)), "fp32")[0].softmax(1)
    predicted = [p.to_dict() for p in evaluation.predict(tmp_path / "saved", [shapes / path for path, _ in some], precision="fp32")]
    assert [row["label"] for row in predicted] == [images.classes[i] for i in expected.argmax(1)]
    assert [row["probability"] for row in predicted] == [round(float(p), 6) for p in expected.max(1).values]


def test_a_fitted_run_holds_what_predicting_and_training_again_need(run: Path, shapes: Path) -> None:
    loaded = load_run(run)
    files = sorted((shapes / "ring").glob("*.png"))[:5]
    first = [p.to_dict() for p in evaluation.predict(run, files)]
    assert [r["path"] for r in first] == [str(f) for f in files]
    assert all(abs(sum(t["probability"] for t in r["top"]) - 1) < 1e-4 for r in first)  # 3 classes, top-3
    config = json.loads((run / CONFIG).read_text())
    assert config["classes"] == ["bar", "cross", "ring"] and config["fit"]["strategy"] == "scratch"
    assert loaded.preprocessing.input_size == (1, 28, 28)
    assert {"train", "val", "test"} <= set(json.loads((run / "split.json").read_text()))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and {"train_loss", "val_loss", "val_accuracy"} <= set(metrics[0])


def test_evaluate_uses_the_runs_own_test_split(run: Path, shapes: Path) -> None:
    result = evaluation.evaluate(run, str(shapes))
    assert result.part == "test" and result.images == 12
    assert sum(map(sum, result.confusion_matrix)) == 12
    assert result.accuracy == pytest.approx(sum(result.confusion_matrix[i][i] for i in range(3)) / 12)
    assert evaluation.evaluate(run, str(shapes), part="all").images == 60


def test_evaluate_refuses_data_with_other_classes(run: Path, shapes: Path) -> None:
    with pytest.raises(GraftError, match="trained on classes bar, cross, ring but the data has bar, ring"):
        evaluation.evaluate(run, str(shapes), classes="bar,ring")


def test_run_from_another_format_version(run: Path) -> None:
    config = json.loads((run / CONFIG).read_text())
    (run / CONFIG).write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(GraftError, match="run format 99"):
        load_run(run)


def test_missing_and_mismatched_weights(run: Path) -> None:
    weights = (run / WEIGHTS).read_bytes()
    (run / WEIGHTS).unlink()
    with pytest.raises(GraftError, match="is missing"):
        load_run(run)
    (run / WEIGHTS).write_bytes(weights)
    config = json.loads((run / CONFIG).read_text())
    config["backbone"]["widths"] = [8, 8, 8]
    (run / CONFIG).write_text(json.dumps(config))
    with pytest.raises(GraftError, match="do not fit the architecture"):
        load_run(run)
    config["head"]["num_classes"] = 5  # refused before any model is built
    (run / CONFIG).write_text(json.dumps(config))
    with pytest.raises(GraftError, match="does not describe a head for 3 classes"):
        load_run(run)


def test_existing_run_is_never_overwritten_silently(run: Path, shapes: Path) -> None:
    with pytest.raises(GraftError, match="already exists"):
        api.fit(str(shapes), out=run)
    load_run(run)


def test_backbone_from_a_run_keeps_its_trained_weights(run: Path) -> None:
    source = load_run(run).model.backbone.state_dict()
    transferred = create_backbone(str(run))
    assert all(torch.equal(v, source[k]) for k, v in transferred.state_dict().items())
    assert transferred.spec["weights"].startswith("run:")

"""Test-time augmentation: the mirror-averaged prediction, chosen on validation, remembered by the run and used everywhere."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import graft
from graft.backbones import SmallCNN
from graft.data.loader import make_loader
from graft.data.split import SPLIT_FILE, Split
from graft.export import export
from graft.model import GraftModel
from graft.rundir import load_run
from graft.tta import FlipAverage
from tests.test_cli import assert_user_error
from tests.test_cli import graft as cli

FAST = {"backbone": "smallcnn", "strategy": "scratch", "batch_size": 16, "report": False}


def make_slashes(root: Path, per_class: int = 30, seed: int = 0) -> Path:
    """'/' and '\\' (each the other's mirror image) and a ring (its own): the case where a flip changes the class."""
    rng = np.random.default_rng(seed)
    for kind in ("slash", "backslash", "ring"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("L", (28, 28), 0)
            draw = ImageDraw.Draw(img)
            dx, dy = rng.integers(-3, 4, size=2)
            if kind == "ring":
                draw.ellipse([5 + dx, 5 + dy, 23 + dx, 23 + dy], outline=255, width=3)
            else:
                top, bottom = (22, 6) if kind == "slash" else (6, 22)
                draw.line([top + dx, 4 + dy, bottom + dx, 24 + dy], fill=255, width=3)
            noisy = np.clip(np.asarray(img, dtype=np.float32) + rng.normal(0, 25, (28, 28)), 0, 255).astype(np.uint8)
            Image.fromarray(noisy, mode="L").save(root / kind / f"{i:03d}.png")
    return root


def test_flip_average_is_the_mean_softmax_of_the_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    model = GraftModel(SmallCNN(), 3).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        model.head.weight.mul_(100)  # confident outputs: an untrained head's are all near a third
        averaged = FlipAverage(model)(x).softmax(1)
        expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
        symmetric = torch.cat([x[..., :14], x[..., :14].flip(-1)], dim=-1)  # its own mirror image
        unchanged = FlipAverage(model)(symmetric).softmax(1)
        assert torch.allclose(averaged, expected, atol=1e-5)
        assert torch.allclose(unchanged, model(symmetric).softmax(1), atol=1e-5)
        assert not torch.allclose(averaged, model(x).softmax(1), atol=1e-3)


def test_a_flip_run_remembers_it_and_predicts_and_evaluates_with_it(shapes: Path, tmp_path: Path) -> None:
    run = graft.fit(str(shapes), out=tmp_path / "run", epochs=2, tta="flip", **FAST)
    assert run.tta == "flip" and json.loads((run.path / "config.json").read_text())["fit"]["tta"] == "flip"
    flipped, plain = run.evaluate(), run.evaluate(tta="none")
    assert flipped.tta == "flip" and flipped.loss == pytest.approx(run.result.test_loss, abs=1e-5)  # the fit's test figure used it
    assert plain.tta == "none" and plain.loss != pytest.approx(flipped.loss, abs=1e-5)

    image = shapes / "cross" / "000.png"
    model, pre = load_run(run.path).model, load_run(run.path).preprocessing
    x, _ = next(iter(make_loader(Path("/"), [(str(image.resolve()), 0)], pre, batch_size=1)))
    with torch.no_grad():
        expected = ((model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2)[0]
    # fp32 like the expected figures (auto may run bf16); predict rounds probabilities to 6 digits
    top = {p["label"]: p["probability"] for p in run.predict(image, top_k=3, precision="fp32")[0].top}
    assert [top[c] for c in run.classes] == pytest.approx(expected.tolist(), abs=1e-5)
    none = {p["label"]: p["probability"] for p in run.predict(image, top_k=3, tta="none", precision="fp32")[0].top}
    assert [none[c] for c in run.classes] == pytest.approx(model(x).softmax(1)[0].tolist(), abs=1e-5)

    spec = json.loads(Path(export(run.path, "torchscript")["preprocessing"]).read_text())
    assert spec["tta"] == "flip" and "mirrored" in spec["steps"][-1]  # not in the network: the file says how to repeat it


def test_auto_keeps_the_flip_off_where_it_turns_one_class_into_another(tmp_path: Path) -> None:
    """Averaging '/' with its mirror '\\' leaves the model unable to tell them apart: auto sees it on validation."""
    data = make_slashes(tmp_path / "slashes")
    run = graft.fit(str(data), out=tmp_path / "run", epochs=6, tta="auto", **FAST)
    assert run.tta == "none"
    chosen, forced = run.evaluate(), run.evaluate(tta="flip")
    assert chosen.accuracy > 0.9 and forced.accuracy < chosen.accuracy - 0.2
    split = Split.load(run.path / SPLIT_FILE)
    assert len(split.val) > 0 and json.loads((run.path / "config.json").read_text())["fit"]["tta"] == "auto"


def test_tta_from_the_cli_and_its_errors(shapes: Path, tmp_path: Path) -> None:
    done = cli("fit", str(shapes), "--backbone", "smallcnn", "--strategy", "scratch", "--epochs", "1", "--tta", "flip",
               "--out", str(tmp_path / "run"), "--no-report", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    evaluated = cli("evaluate", str(tmp_path / "run"), str(shapes), "--json", "--tta", "none")
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["tta"] == "none"
    predicted = cli("predict", str(tmp_path / "run"), str(shapes / "ring"), "--format", "json", "--tta", "flip")
    assert predicted.returncode == 0 and len(json.loads(predicted.stdout)) == 20
    assert_user_error(cli("fit", str(shapes), "--tta", "mirror", "--out", str(tmp_path / "x")), "unknown --tta 'mirror'")
    assert_user_error(cli("predict", str(tmp_path / "run"), str(shapes / "ring"), "--tta", "auto"), "unknown --tta 'auto'")

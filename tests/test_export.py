"""Exported models run without graft and agree with it: ONNX Runtime and TorchScript on the test split."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from graft import api, evaluation
from graft.data.loader import make_loader
from graft.data.split import SPLIT_FILE, Split
from graft.errors import GraftError
from graft.export import export
from graft.rundir import load_run
from graft.train.settings import TrainSettings
from tests.conftest import make_shapes
from tests.test_cli import graft


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    shapes = make_shapes(root / "shapes")
    settings = TrainSettings(epochs=3, batch_size=16)
    api.fit(str(shapes), backbone="smallcnn", strategy="scratch", out=root / "run", settings=settings, report=False)
    return root / "run"


@pytest.fixture(scope="module")
def onnx_file(run: Path) -> Path:
    return Path(export(run, "onnx")["model"])


def graft_logits(run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split's preprocessed images and graft's own logits for them."""
    split, loaded = Split.load(run / SPLIT_FILE), load_run(run)
    images = torch.cat([x for x, _ in make_loader(Path(split.root), split.test, loaded.preprocessing, batch_size=64)])
    with torch.no_grad():
        return images, loaded.model(images)


def test_onnx_gives_grafts_predictions_with_any_batch_size(run: Path, onnx_file: Path) -> None:
    images, expected = graft_logits(run)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    for batch in (1, 5, len(images)):  # the batch dimension is dynamic
        logits = np.concatenate([session.run(["logits"], {"image": chunk.numpy()})[0] for chunk in images.split(batch)])
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=1e-4)
        assert (logits.argmax(1) == expected.argmax(1).numpy()).all()


def test_preprocessing_json_is_enough_to_predict_without_graft(run: Path, onnx_file: Path) -> None:
    """Follow preprocessing.json with PIL and NumPy only: the same labels as ``graft predict``."""
    spec = json.loads((onnx_file.parent / "preprocessing.json").read_text())
    assert spec["classes"] == ["bar", "cross", "ring"] and spec["input_size"] == [1, 28, 28] and spec["color_mode"] == "L"
    split = Split.load(run / SPLIT_FILE)
    files = [split.path(p) for p, _ in split.test]
    session = ort.InferenceSession(str(onnx_file))

    def preprocess(file: Path) -> np.ndarray:
        img = Image.open(file).convert(spec["color_mode"])
        scale = spec["resize_shorter_side"] / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
        h, w = spec["center_crop"]
        left, top = (img.width - w) // 2, (img.height - h) // 2
        pixels = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32).reshape(h, w, -1) * spec["scale"]
        return ((pixels - spec["mean"]) / spec["std"]).transpose(2, 0, 1).astype(np.float32)

    logits = session.run(None, {spec["input_name"]: np.stack([preprocess(f) for f in files])})[0]
    labels = [spec["classes"][i] for i in logits.argmax(1)]
    assert labels == [row["label"] for row in [p.to_dict() for p in evaluation.predict(run, files)]]


def test_torchscript_from_the_cli_gives_grafts_logits(run: Path, tmp_path: Path) -> None:
    result = graft("export", str(run), "--format", "torchscript", "--out", str(tmp_path / "ts"), "--json")
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert written["model"] == str(tmp_path / "ts" / "model.torchscript.pt") and (tmp_path / "ts" / "preprocessing.json").is_file()
    images, expected = graft_logits(run)
    with pytest.warns(FutureWarning, match="deprecated"):  # torch deprecates TorchScript; the file still loads
        module = torch.jit.load(written["model"])
    with torch.no_grad():
        for batch in (1, len(images)):
            logits = torch.cat([module(chunk) for chunk in images.split(batch)])
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_unknown_format(run: Path) -> None:
    with pytest.raises(GraftError, match="unknown export format 'tflite'; choose one of onnx, torchscript"):
        export(run, "tflite")


@pytest.mark.slow
def test_timm_hard_swish_backbone_round_trips_through_onnx(tmp_path: Path) -> None:
    """A MobileNetV3 run (hard-swish, squeeze-excite, timm's RGB 224 preprocessing) exports and agrees with graft.

    Cut after its last stage (``layer=-1``): the uncut MobileNetV3 backbone does not train yet (its
    features are ``head_hidden_size`` wide, not ``num_features``), which is the backbone's business.
    """
    shapes = make_shapes(tmp_path / "shapes", per_class=10, mode="RGB")
    api.fit(str(shapes), backbone="mobilenetv3_small_050", weights="random", layer=-1, strategy="frozen", out=tmp_path / "run",
            settings=TrainSettings(epochs=1, batch_size=16), report=False)  # fmt: skip
    spec = json.loads(Path(export(tmp_path / "run", "onnx")["preprocessing"]).read_text())
    assert spec["color_mode"] == "RGB" and spec["input_size"] == [3, 224, 224] and spec["resize_shorter_side"] > 224
    images, expected = graft_logits(tmp_path / "run")
    logits = ort.InferenceSession(str(tmp_path / "run" / "export" / "model.onnx")).run(None, {"image": images.numpy()})[0]
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert (logits.argmax(1) == expected.argmax(1).numpy()).all()

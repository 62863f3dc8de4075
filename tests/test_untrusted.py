"""Files from elsewhere: nothing graft loads can run code, and damaged files give graft's own errors."""

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save, save_file

from graft import api, evaluation
from graft.backbones import SmallCNN
from graft.errors import GraftError
from graft.model import GraftModel
from graft.rundir import CONFIG, WEIGHTS, load_run, read_config, save_run
from graft.sources import create_backbone
from graft.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint


class Payload:
    """Unpickling this creates ``marker``: the stand-in for any code a crafted pickle could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def small_run(path: Path) -> Path:
    model = GraftModel(SmallCNN(widths=(4, 4, 4)), num_classes=2)
    config = {
        "classes": ["a", "b"],
        "backbone": model.backbone.spec,
        "head": model.head_spec,
        "preprocessing": model.backbone.preprocessing.to_dict(),
    }
    save_run(path, model, config)
    return path


def test_pickle_bearing_files_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload(marker)}, evil)
    torch.load(evil, weights_only=False)  # proof the payload is live: plain unpickling runs it
    assert marker.exists()
    marker.unlink()

    run = small_run(tmp_path / "run")
    (run / WEIGHTS).write_bytes(evil.read_bytes())  # as a run's weights
    with pytest.raises(GraftError, match=f"cannot load the model in {run}"):
        load_run(run)
    with pytest.raises(GraftError, match="cannot load the model"):
        evaluation.predict(run, [tmp_path])
    (run / CHECKPOINT).write_bytes(evil.read_bytes())  # as a checkpoint to resume
    with pytest.raises(GraftError, match=f"cannot read checkpoint {run / CHECKPOINT}"):
        api.resume(run)
    with pytest.raises(GraftError, match="not a graft run directory"):  # as a backbone file
        create_backbone(str(evil))
    assert not marker.exists()


def test_checkpoint_round_trips_every_type_it_holds(tmp_path: Path) -> None:
    import random

    import numpy as np

    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    state = {
        "optimizer": optimizer.state_dict(),  # dict keyed by ints, tuples of floats, None
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "history": [{"val_loss": float("inf"), "phase": "head"}],
        "empty": {},
    }
    save_checkpoint(tmp_path / CHECKPOINT, state)
    loaded = load_checkpoint(tmp_path / CHECKPOINT)
    assert loaded["rng"]["python"] == state["rng"]["python"]
    assert all(np.array_equal(a, b) for a, b in zip(loaded["rng"]["numpy"], state["rng"]["numpy"], strict=True))
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    assert loaded["optimizer"] == state["optimizer"] and loaded["history"] == state["history"] and loaded["empty"] == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def valid_config() -> dict[str, Any]:
    model = GraftModel(SmallCNN(widths=(4, 4, 4)), num_classes=2)
    return {
        "format_version": 1,
        "classes": ["a", "b"],
        "backbone": model.backbone.spec,
        "head": model.head_spec,
        "preprocessing": model.backbone.preprocessing.to_dict(),
    }


@st.composite
def configs(draw: st.DrawFn) -> bytes:
    """Config bytes: garbage, any JSON, or a valid config with one value (maybe nested) replaced."""
    kind = draw(st.sampled_from(["bytes", "json", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    config = valid_config()
    section = draw(st.sampled_from(sorted(config)))
    if isinstance(config[section], dict) and draw(st.booleans()):
        config[section][draw(st.sampled_from(sorted(config[section])))] = draw(json_values)
    elif draw(st.booleans()):
        config[section] = draw(json_values)
    else:
        del config[section]
    return json.dumps(config).encode()


@st.composite
def weights(draw: st.DrawFn) -> bytes:
    """Weight bytes: garbage, a real file cut or with bytes changed, or tensors of the wrong names/shapes."""
    real = save({k: v.contiguous() for k, v in GraftModel(SmallCNN(widths=(4, 4, 4)), num_classes=2).state_dict().items()})
    kind = draw(st.sampled_from(["bytes", "cut", "flipped", "tensors", "header"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "cut":
        return real[: draw(st.integers(0, len(real) - 1))]
    if kind == "flipped":
        data = bytearray(real)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, min(len(data) - 1, 400)))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "header":
        header = json.dumps(draw(json_values)).encode()
        return len(header).to_bytes(8, "little") + header + draw(st.binary(max_size=64))
    shapes = st.lists(st.integers(0, 4), max_size=3)
    names = st.sampled_from(["head.weight", "head.bias", "backbone.stages.0.0.weight", "other"])
    dtypes = st.sampled_from([torch.float32, torch.float16, torch.int64, torch.uint8, torch.bool])
    tensors = draw(st.dictionaries(names, st.tuples(shapes, dtypes), max_size=4))
    return save({name: torch.zeros(shape, dtype=dtype) for name, (shape, dtype) in tensors.items()})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), tensors=weights())
def test_damaged_run_directories_give_only_graft_errors(config: bytes, tensors: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder)
        (run / CONFIG).write_bytes(config)
        (run / WEIGHTS).write_bytes(tensors)
        try:
            read_config(run)
            load_run(run)
        except GraftError:
            pass


@settings(max_examples=100, deadline=None)
@given(document=json_values, tensors=st.dictionaries(st.text(min_size=1, max_size=4), st.builds(torch.zeros, st.just(2)), max_size=3))
def test_damaged_checkpoints_give_only_graft_errors(document: Any, tensors: dict[str, torch.Tensor]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / CHECKPOINT
        save_file(tensors, str(path), metadata={"format": "graft-checkpoint-1", "state": json.dumps(document)})
        try:
            load_checkpoint(path)
        except GraftError:
            pass


def test_boundary_errors_name_the_value(tmp_path: Path) -> None:
    import shutil

    from graft.data.sources import load_image_set
    from graft.data.split import make_split
    from tests.conftest import make_shapes

    one = make_shapes(tmp_path / "one", per_class=4)
    shutil.rmtree(one / "bar")
    shutil.rmtree(one / "cross")
    with pytest.raises(GraftError, match=r"one has images for only 1 class\(es\) \(ring\)"):
        load_image_set(one)
    with pytest.raises(GraftError, match="too few images to split: .* 9 images give 1 validation / 2 test places for 3 classes"):
        make_split(load_image_set(make_shapes(tmp_path / "few", per_class=3)))
    with pytest.raises(GraftError, match="no-such-net"):
        create_backbone("no-such-net")

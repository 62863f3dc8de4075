"""Image folders, class selection, splits and the built-in digits set."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graft.data.builtin import dataset_root
from graft.data.images import typical_side
from graft.data.imageset import parse_classes
from graft.data.loader import make_loader
from graft.data.sources import load_image_set
from graft.data.split import Split, make_split
from graft.data.transforms import Preprocessing
from graft.errors import GraftError
from tests.conftest import draw_shape


def test_folder_scan_ignores_hidden_and_non_images(shapes: Path) -> None:
    (shapes / "bar" / ".DS_Store").write_bytes(b"\0junk")
    (shapes / "bar" / "notes.txt").write_text("not an image")
    images = load_image_set(shapes)
    assert images.classes == ["bar", "cross", "ring"]
    assert len(images.samples) == 60
    assert Counter(images.labels()) == {0: 20, 1: 20, 2: 20}


def test_class_selection_reindexes_in_the_order_given(shapes: Path) -> None:
    images = load_image_set(shapes, "ring,bar")
    assert images.classes == ["ring", "bar"]
    assert {p.split("/")[0]: y for p, y in images.samples} == {"ring": 0, "bar": 1}
    assert parse_classes("7-9", [str(i) for i in range(10)]) == ["7", "8", "9"]
    assert parse_classes("0-1,5", [str(i) for i in range(10)]) == ["0", "1", "5"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("7-12", "unknown class '10'"), ("9-7", "runs backwards"), ("3", "at least two")],
)
def test_bad_class_selection_names_the_value(spec: str, message: str) -> None:
    with pytest.raises(GraftError, match=message):
        parse_classes(spec, [str(i) for i in range(10)])


def test_missing_path_and_empty_class_folder(tmp_path: Path, shapes: Path) -> None:
    with pytest.raises(GraftError, match="does not exist"):
        load_image_set(tmp_path / "nowhere")
    (shapes / "empty").mkdir()
    with pytest.raises(GraftError, match=r"empty has no images"):
        load_image_set(shapes, bad_images="fail")
    with pytest.raises(GraftError, match=r"empty has no images"):  # named explicitly: never dropped silently
        load_image_set(shapes, "bar,empty")
    skipped = load_image_set(shapes)  # the default policy leaves an empty folder out (api.fit warns)
    assert skipped.classes == ["bar", "cross", "ring"] and skipped.empty_classes == ["empty"]


def test_split_is_stratified_reproducible_and_disjoint(shapes: Path) -> None:
    images = load_image_set(shapes)
    a, b, c = make_split(images, seed=1), make_split(images, seed=1), make_split(images, seed=2)
    assert a == b
    assert a.train != c.train
    parts = [{p for p, _ in part} for part in (a.train, a.val, a.test)]
    assert sum(map(len, parts)) == 60 and len(set.union(*parts)) == 60
    for part in (a.train, a.val, a.test):
        counts = Counter(y for _, y in part)
        assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_split_round_trips_through_json(shapes: Path, tmp_path: Path) -> None:
    split = make_split(load_image_set(shapes), seed=3)
    assert Split.load(split.save(tmp_path)) == split


def test_split_too_small_for_the_classes(shapes: Path) -> None:
    (shapes / "tiny").mkdir()
    for name in ("000.png", "001.png"):
        (shapes / "bar" / name).rename(shapes / "tiny" / name)
    with pytest.raises(GraftError, match="class 'tiny' has 2"):
        make_split(load_image_set(shapes))


def test_digits_builtin_is_real_mnist() -> None:
    images = load_image_set(dataset_root("digits"), "7-9")
    assert images.classes == ["7", "8", "9"]
    assert Counter(images.labels()) == {0: 500, 1: 500, 2: 500}


def test_a_local_folder_named_like_a_builtin_is_the_users_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    for kind in ("bar", "ring"):
        (tmp_path / "digits" / kind).mkdir(parents=True)
        for i in range(3):
            draw_shape(kind, rng).save(tmp_path / "digits" / kind / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert dataset_root("digits") == Path("digits")
    images = load_image_set(dataset_root("digits"))
    assert images.classes == ["bar", "ring"] and len(images.samples) == 6


def test_loader_yields_normalised_tensors_in_the_backbone_format(shapes: Path) -> None:
    images = load_image_set(shapes)
    pre = Preprocessing(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch, labels = next(iter(make_loader(images.root, images.samples, pre, batch_size=8)))
    assert batch.shape == (8, 3, 32, 32) and batch.dtype == torch.float32
    assert -1.0 <= batch.min() < 0 < batch.max() <= 1.0
    assert labels.tolist() == [y for _, y in images.samples[:8]]


def test_the_typical_side_is_the_median_longer_side_read_from_headers(tmp_path: Path) -> None:
    for i, size in enumerate([(30, 20), (20, 28), (28, 28), (500, 400), (28, 10)]):  # longer sides 30, 28, 28, 500, 28
        Image.new("L", size).save(tmp_path / f"{i}.png")
    assert typical_side(tmp_path, [(f"{i}.png", 0) for i in range(5)]) == 28
    assert typical_side(tmp_path, [(f"{i}.png", 0) for i in (0, 3)]) == 500  # two: the upper of the middle pair

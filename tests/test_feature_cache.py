"""The bottleneck feature cache: hits, misses, and recomputation when anything that matters changes."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from graft.data.sources import load_image_set
from graft.data.split import make_split
from graft.features import FeatureCache, cached_features
from graft.model import GraftModel
from graft.strategies import get_strategy
from graft.train.settings import TrainSettings
from graft.train.trainer import Trainer
from tests.test_timm_backbones import tiny


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return tiny("resnet18", layer=2)


def test_second_pass_reads_every_feature_from_disk(backbone, shapes: Path, tmp_path: Path) -> None:
    samples = load_image_set(shapes).samples
    first = FeatureCache(backbone, root=tmp_path)
    features, labels = first.features(shapes, samples, batch_size=16)
    assert (first.hits, first.misses) == (0, 60) and features.shape == (60, backbone.num_features)
    assert labels.tolist() == [label for _, label in samples]
    entries = sorted(first.folder.rglob("*.npy"))
    assert len(entries) == 60 and not list(first.folder.rglob("*.tmp"))
    np.load(entries[0], allow_pickle=False)  # plain arrays: loading never unpickles
    second = FeatureCache(backbone, root=tmp_path)
    again, _ = second.features(shapes, samples, batch_size=16)
    assert (second.hits, second.misses) == (60, 0) and torch.equal(features, again)


def test_changed_copied_and_damaged_images_and_entries(backbone, shapes: Path, tmp_path: Path) -> None:
    samples = load_image_set(shapes).samples
    cache = FeatureCache(backbone, root=tmp_path)
    before, _ = cache.features(shapes, samples, batch_size=16)
    shutil.copy(shapes / "ring" / "000.png", shapes / "bar" / "000.png")  # new content under an old name
    shutil.copy(shapes / "ring" / "001.png", shapes / "ring" / "copy.png")  # old content under a new name
    next(cache.folder.rglob("*.npy")).write_bytes(b"half an entry")  # what a crash without the rename would leave
    samples = load_image_set(shapes).samples
    again = FeatureCache(backbone, root=tmp_path)
    after, _ = again.features(shapes, samples, batch_size=16)
    assert again.misses == 1 and again.hits == 60  # only the damaged entry; the changed file's content was cached (as ring/000)
    index = {path: i for i, (path, _) in enumerate(samples)}
    assert torch.equal(after[index["bar/000.png"]], after[index["ring/000.png"]])
    assert torch.equal(after[index["ring/copy.png"]], after[index["ring/001.png"]])
    assert not torch.equal(after[index["bar/000.png"]], before[0])


def test_a_different_layer_weights_or_preprocessing_is_a_different_cache(backbone, tmp_path: Path) -> None:
    folder = FeatureCache(backbone, root=tmp_path).folder
    assert FeatureCache(backbone, root=tmp_path).folder == folder
    other_layer = tiny("resnet18", layer=1)
    other_layer.load_state_dict(backbone.state_dict(), strict=False)
    assert FeatureCache(other_layer, root=tmp_path).folder != folder
    other_weights = tiny("resnet18", layer=2)
    assert FeatureCache(other_weights, root=tmp_path).folder != folder
    other_weights.load_state_dict(backbone.state_dict())
    assert FeatureCache(other_weights, root=tmp_path).folder == folder  # weights identity is their content
    other_weights.preprocessing = replace(backbone.preprocessing, input_size=(3, 48, 48))
    assert FeatureCache(other_weights, root=tmp_path).folder != folder


def test_features_strategy_caches_despite_augmentation_and_frozen_reuses_it(backbone, shapes: Path) -> None:
    split = make_split(load_image_set(shapes), seed=0)
    messages: list[str] = []
    settings = TrainSettings(epochs=1, batch_size=16, augment="light")
    model = GraftModel(backbone, num_classes=3)
    Trainer(settings, log=messages.append).fit(model, get_strategy("features"), split)
    Trainer(replace(settings, augment="none"), log=messages.append).fit(GraftModel(backbone, 3), get_strategy("frozen"), split)
    cache_lines = [m for m in messages if m.startswith("backbone features")]
    n = len(split.train) + len(split.val)
    assert cache_lines[0].startswith(f"backbone features: 0 images from the cache, {n} computed")
    assert cache_lines[1].startswith(f"backbone features: {n} images from the cache, 0 computed")
    features, labels = cached_features(backbone, Path(split.root), split.test, batch_size=16)
    assert features.shape == (len(split.test), backbone.num_features) and len(labels) == len(split.test)

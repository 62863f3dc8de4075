"""graft advise: the size x similarity rule on constructed cases, the similarity measure, and end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from graft import advice as advise_module
from graft.advice import FINAL, SIMILAR, SMALL_PER_CLASS, Candidate, cut_features, rule, similarity, stage_features
from graft.backbones import SmallCNN, TimmBackbone
from graft.data.loader import make_loader
from graft.data.sources import load_image_set
from graft.features import FeatureCache
from graft.inference import forward_all
from graft.sources import create_backbone
from tests.test_cli import assert_user_error, graft

SMALL, LARGE = SMALL_PER_CLASS / 2, SMALL_PER_CLASS * 5
CLOSE, FAR = 1.0, SIMILAR - 0.2


@pytest.mark.parametrize(
    ("per_class", "similarity_value", "strategy", "earlier_layer"),
    [
        (SMALL, CLOSE, "features", False),  # small & similar: linear classifier on the features
        (LARGE, CLOSE, "finetune", False),  # large & similar: fine-tune through the network
        (SMALL, FAR, "features", True),  # small & different: linear classifier on earlier activations
        (LARGE, FAR, "full", False),  # large & different: fine-tune everything
        (LARGE, None, "scratch", False),  # no pretrained weights and plenty of data: from scratch
        (SMALL, None, "features", True),  # no pretrained weights, little data: generic early features
    ],
)
def test_rule_follows_the_size_by_similarity_table(
    per_class: float, similarity_value: float | None, strategy: str, earlier_layer: bool
) -> None:
    applied = rule(per_class, similarity_value)
    assert applied.strategy == strategy
    assert applied.earlier_layer is earlier_layer
    assert applied.small is (per_class < SMALL_PER_CLASS)
    assert ("small" if applied.small else "large") in applied.sentence


def test_rule_thresholds_are_where_the_docstring_says() -> None:
    assert rule(SMALL_PER_CLASS, SIMILAR).small is False and rule(SMALL_PER_CLASS, SIMILAR).similar is True
    assert rule(SMALL_PER_CLASS - 1, SIMILAR - 0.01).small is True and rule(SMALL_PER_CLASS - 1, SIMILAR - 0.01).similar is False


def candidates(final: float, *earlier: float) -> list[Candidate]:
    rows = [Candidate("b", k, 8, 0.0, acc) for k, acc in enumerate(earlier)]
    return [*rows, Candidate("b", FINAL, 8, 0.0, final)]


def test_similarity_is_the_chance_corrected_share_the_output_keeps() -> None:
    assert similarity(candidates(0.9, 0.6, 0.8), classes=2) == pytest.approx(1.0)  # the output is the best cut
    assert similarity(candidates(0.7, 0.9, 0.6), classes=2) == pytest.approx((0.7 - 0.5) / (0.9 - 0.5))
    assert similarity(candidates(0.2, 0.3), classes=4) == pytest.approx(0.0)  # output at chance level
    assert similarity(candidates(0.25, 0.25), classes=4) == 0.0  # nothing above chance anywhere


def test_stage_features_are_every_earlier_stage_pooled(shapes: Path) -> None:
    backbone = SmallCNN()
    images = load_image_set(shapes)
    loader = make_loader(shapes, images.samples[:10], backbone.preprocessing, batch_size=4)
    stages = stage_features(backbone, loader, precision="fp32")  # fp32: compared with plain fp32 below
    assert {k: v.shape for k, v in stages.items()} == {0: (10, 32), 1: (10, 64)}
    batch = torch.stack([loader.dataset[i][0] for i in range(10)])
    with torch.inference_mode():
        backbone.eval()
        assert np.allclose(stages[0], backbone.stages[0](batch).mean(dim=(2, 3)).numpy(), atol=1e-5)


def test_cut_features_of_a_timm_model_are_the_cuts_graft_fit_trains_on(shapes: Path) -> None:
    """Each cut of a timm model is what ``create_backbone(name, layer=k)`` computes, through the cache."""
    samples = load_image_set(shapes).samples[:6]
    backbone, cuts, labels = cut_features("tf_efficientnet_lite0", shapes, samples)
    assert isinstance(backbone, TimmBackbone) and labels.tolist() == [y for _, y in samples]
    assert sorted(cuts, key=lambda k: -1 if k is FINAL else k) == [FINAL, 0, 1, 2, 3, 4] and all(fittable for _, fittable in cuts.values())
    cut = create_backbone("tf_efficientnet_lite0", layer=2)
    assert cuts[2][0].shape == (6, cut.num_features)
    again = make_loader(shapes, samples, cut.preprocessing, batch_size=6)
    assert np.allclose(cuts[2][0], forward_all(cut, again)[0].numpy(), atol=1e-4)
    cache = FeatureCache(cut)  # what `graft fit --layer 2 --strategy features` reads: filled by advise
    assert np.allclose(cache.features(shapes, samples)[0].numpy(), cuts[2][0]) and (cache.hits, cache.misses) == (6, 0)


@pytest.mark.slow
def test_advise_prefers_the_backbone_trained_on_similar_data(tmp_path: Path) -> None:
    """A small CNN trained on the shapes beats the same CNN with random weights on new shapes images."""
    from graft import api
    from graft.train.settings import TrainSettings
    from tests.conftest import make_shapes

    source = make_shapes(tmp_path / "source", per_class=40, seed=1)
    target = make_shapes(tmp_path / "target", per_class=30, seed=2)
    api.fit(str(source), backbone="smallcnn", strategy="scratch", out=tmp_path / "run", settings=TrainSettings(epochs=4, batch_size=16))
    advice = advise_module.advise(str(target), ["smallcnn", str(tmp_path / "run")])
    rec = advice.recommendation
    assert rec["backbone"] == str(tmp_path / "run")
    assert rec["small"] is True and advice.similarity["smallcnn"] is None
    assert rec["strategy"] == "features"  # small data: a linear classifier, whatever the similarity
    assert len(advice.candidates) == 6 and advice.confidence["runner_up"] == "smallcnn"


@pytest.mark.slow
def test_advise_command_prints_json_and_runs_the_recommendation(tmp_path: Path) -> None:
    from tests.conftest import make_shapes

    shapes = make_shapes(tmp_path / "shapes", per_class=40)  # two training batches: one-batch runs trip OneCycleLR
    result = graft("advise", str(shapes), "--backbones", "smallcnn", "--json", "--run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    advice = json.loads(result.stdout)
    assert set(advice["recommendation"]) >= {"backbone", "layer", "strategy", "reason"}
    assert {tuple(sorted(c)) for c in advice["candidates"]} == {("backbone", "dims", "fittable", "layer", "probe_accuracy", "score")}
    assert advice["data"]["images_per_class"] == {"bar": 40, "cross": 40, "ring": 40}
    assert advice["run"]["strategy"] == advice["recommendation"]["strategy"] and Path(tmp_path / advice["run"]["run_dir"]).is_dir()
    table = graft("advise", str(shapes), "--backbones", "smallcnn", cwd=tmp_path)
    assert table.returncode == 0 and "recommendation" in table.stdout and "layer 0" in table.stdout


def test_advise_rejects_bad_input_in_one_line(tmp_path: Path, shapes: Path) -> None:
    assert_user_error(graft("advise", str(shapes), "--backbones", "nonsense"), "unknown backbone 'nonsense'")
    assert_user_error(graft("advise", str(shapes), "--backbones", ","), "--backbones is empty")
    assert_user_error(graft("advise", str(shapes), "--backbones", "smallcnn", "--max-images", "3"), "--max-images 3")

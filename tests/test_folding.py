"""BatchNorm folding (graft.folding): the copy computes what the network computes, folds only what it may,
and never changes the network it was made from."""

import pytest
import torch
from timm.layers import StdConv2d
from torch import fx, nn

from graft.folding import agrees, folded_batchnorm
from graft.inference import _Runner
from graft.model import GraftModel
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

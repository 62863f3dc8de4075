"""graft.train.solver on real features (scikit-learn's 8x8 digits): the optimum scikit-learn finds, chosen honestly."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, recall_score
from sklearn.model_selection import train_test_split
from torch import nn

from graft.train.solver import SolvedHead, class_weights, copy_into, fit_linear_head

CLASSES = 10


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """1,797 images of 64 pixels (several of them blank in every image), split 60/20/20 with every class's share."""
    x, y = load_digits(return_X_y=True)
    train_x, rest_x, train_y, rest_y = train_test_split(x, y, test_size=0.4, stratify=y, random_state=0)
    val_x, test_x, val_y, test_y = train_test_split(rest_x, rest_y, test_size=0.5, stratify=rest_y, random_state=0)
    return {"train_x": train_x, "train_y": train_y, "val_x": val_x, "val_y": val_y, "test_x": test_x, "test_y": test_y}


def tensors(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(a).float() if a.dtype.kind == "f" else torch.from_numpy(a).long() for a in arrays]


def solve(digits: dict[str, np.ndarray], **options) -> SolvedHead:
    return fit_linear_head(*tensors(digits["train_x"], digits["train_y"], digits["val_x"], digits["val_y"]), CLASSES, **options)


def sklearn_optimum(x: np.ndarray, y: np.ndarray, C: float, class_weight: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of scikit-learn's logistic regression, solved far past its default tolerance.

    It is given centred pixels, which have the same optimal weights (only the bias moves, by ``W @ mean``)
    and take L-BFGS a tenth of the iterations to get there; the bias is moved back for raw pixels.
    """
    mean = x.mean(0)
    model = LogisticRegression(C=C, class_weight=class_weight, tol=1e-10, max_iter=10_000).fit(x - mean, y)
    return torch.from_numpy(model.coef_), torch.from_numpy(model.intercept_ - model.coef_ @ mean)


def probabilities(weight: torch.Tensor, bias: torch.Tensor, x: np.ndarray) -> np.ndarray:
    return (torch.from_numpy(x).double() @ weight.double().T + bias.double()).softmax(1).numpy()


def objective(weight: torch.Tensor, bias: torch.Tensor, x: np.ndarray, y: np.ndarray, C: float, class_weight: str | None) -> float:
    """The problem both solve, written out: (weighted) mean cross-entropy + ||W||^2 / (2 C n)."""
    weight, bias = weight.double(), bias.double()
    weights = class_weights(torch.from_numpy(y), CLASSES, class_weight)
    loss = F.cross_entropy(torch.from_numpy(x) @ weight.T + bias, torch.from_numpy(y), weight=weights)
    return float(loss + weight.square().sum() / (2 * C * len(y)))


@pytest.mark.parametrize(("C", "class_weight"), [(0.001, None), (0.1, None), (10.0, None), (0.01, "balanced")])
def test_reaches_scikit_learns_optimum(digits, C, class_weight):
    head = solve(digits, class_weight=class_weight, grid=[C])
    weight, bias = sklearn_optimum(digits["train_x"], digits["train_y"], C, class_weight)
    ours, theirs = (
        objective(w, b, digits["train_x"], digits["train_y"], C, class_weight) for w, b in ((head.weight, head.bias), (weight, bias))
    )
    assert ours == pytest.approx(theirs, rel=1e-4)
    assert torch.linalg.norm(head.weight.double() - weight) <= 1e-2 * torch.linalg.norm(weight)
    assert torch.allclose(head.bias.double(), bias, atol=1e-2 * bias.abs().max().item())
    assert head.converged and head.grid[0].converged


def test_the_strength_with_the_lowest_validation_loss_is_chosen(digits):
    """The choice is scikit-learn's over the whole grid, though the sweep stops two strengths past the best."""
    grid = [0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    head = solve(digits, grid=grid)
    losses = [
        log_loss(digits["val_y"], probabilities(*sklearn_optimum(digits["train_x"], digits["train_y"], C), digits["val_x"])) for C in grid
    ]
    best = int(np.argmin(losses))
    assert head.C == grid[best] and 0 < best < len(grid) - 3  # a real choice, with strengths left to skip
    assert [p.C for p in head.grid] == grid[: best + 3]
    assert [p.val_loss for p in head.grid] == pytest.approx(losses[: best + 3], abs=1e-3)
    assert all(p.converged for p in head.grid)


def test_balanced_weights_raise_the_recall_of_a_rare_class(digits):
    """Class 8 cut to 6 training images of ~108: balanced weighting must find more of its test images.

    Each with its strength chosen on the (balanced) validation part, as a run would do it.
    """
    keep = (digits["train_y"] != 8) | (np.cumsum(digits["train_y"] == 8) <= 6)
    data = tensors(digits["train_x"][keep], digits["train_y"][keep], digits["val_x"], digits["val_y"])
    recalls = {}
    for class_weight in (None, "balanced"):
        head = fit_linear_head(*data, CLASSES, class_weight=class_weight)
        predicted = (torch.from_numpy(digits["test_x"]).float() @ head.weight.T + head.bias).argmax(1).numpy()
        recalls[class_weight] = recall_score(digits["test_y"], predicted, labels=[8], average="macro")
    assert recalls["balanced"] >= recalls[None] + 0.2


def test_copy_into_gives_an_nn_linear_that_predicts_like_scikit_learn(digits):
    head = solve(digits, grid=[0.1])
    linear = copy_into(head, nn.Linear(64, CLASSES))
    with torch.no_grad():
        predicted = linear(torch.from_numpy(digits["test_x"]).float()).argmax(1).numpy()
    expected = probabilities(*sklearn_optimum(digits["train_x"], digits["train_y"], 0.1), digits["test_x"]).argmax(1)
    assert (predicted == expected).mean() >= 0.995
    with pytest.raises(ValueError, match="cannot take"):
        copy_into(head, nn.Linear(64, 3))


def test_bad_arguments_are_refused(digits):
    data = tensors(digits["train_x"], digits["train_y"], digits["val_x"], digits["val_y"])
    with pytest.raises(ValueError, match="class_weight"):
        fit_linear_head(*data, CLASSES, class_weight="auto")
    with pytest.raises(ValueError, match="labels must lie"):
        fit_linear_head(*data, 5)
    with pytest.raises(ValueError, match="columns"):
        fit_linear_head(data[0], data[1], data[2][:, :10], data[3], CLASSES)

"""The linear head on cached features, solved to its optimum instead of trained for a few epochs.

A linear head on frozen features is multinomial logistic regression: a convex problem with one optimum
per L2 strength. A few epochs of AdamW stop somewhere short of it, at a strength set by weight decay and
early stopping rather than chosen. Here it is solved outright: full-batch L-BFGS (strong-Wolfe line
search) for each strength of a log-spaced grid, strongest regularisation first, each solve warm-started
from the previous one; the strength whose solution has the lowest validation loss wins, and is solved
once more, in float64, from there. The sweep stops :data:`PATIENCE` strengths past that minimum: the
validation loss then rises steadily with ``C`` (on every benchmark case), and the weakly regularised end
is the slowest to solve.

The objective is scikit-learn's ``LogisticRegression(C=C)`` (lbfgs, multinomial) on the raw features:

    sum_i w_i * CE(W x_i + b, y_i) / n  +  ||W||^2 / (2 * C * n)

with ``w_i`` 1, or ``n / (classes * n_class)`` for ``class_weight="balanced"``; the intercept is not
penalised. With two classes this is the symmetric softmax, which scikit-learn's binomial model matches at
twice the ``C``.

Measured choices (tf_efficientnet_lite0 features, benchmarks/solver.py; one busy core):
- The penalty on raw features, not standardised ones: standardising gives near-constant features the
  weight of informative ones, and its best strength scored 70.9% on Devanagari's test part against 72.5%
  here (30 images a class: 56.8% against 61.6%; Fashion-MNIST 5-9: 94.9% against 94.5%, well within the
  test part's 95% interval). Standardised coordinates with the raw penalty made L-BFGS slower still.
- Features centred on the training mean, folded back into the bias: the intercept then no longer fights
  the weights. On Devanagari's features at C=1 L-BFGS came within 1e-5 of the optimal loss in 113
  evaluations from zero, against 904 on the raw features.
- The sweep in float32, the chosen strength solved again in float64: on Devanagari (4,600 x 1,280, 46
  classes) 11 s against 45 s for a float64 sweep, the same choice, validation losses equal to four
  decimals. float32 alone ends 1e-5 to 1e-4 (relative) above scikit-learn's optimal loss on load_digits
  at weak regularisation; after the float64 solve it is within 5e-6, the weights within 0.2%.
- Gradient tolerance 1e-5, and at most 1e-3 of the penalty (the curvature every direction has at least):
  a weak penalty leaves flat directions, solved tighter so that the distance to the optimum stays small.

Which data trains and which selects: the weights come from the training part only, at the strength that
the validation part chose; there is no refit on training plus validation. The validation figures then
describe the very head returned (a refit would be a different model, its strength chosen for fewer
images), and the validation part plays the role it plays for early stopping in the epoch trainer.
"""

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# C in half-decade steps. On raw features the best C scales as 1 / feature variance: 0.3-1 for the default
# backbone's features, leaving three decades either side; PATIENCE keeps the unused weak end unsolved.
GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 3, 15))
PATIENCE = 2  # strengths past the lowest validation loss before the sweep stops
CLASS_WEIGHTS = (None, "balanced")
SWEEP_DTYPE = torch.float32  # the sweep; the chosen strength is solved once more in float64
GRADIENT_TOLERANCE = 1e-5  # largest gradient entry at the optimum (the loss is a mean: gradients start near 1)
RELATIVE_TOLERANCE = 1e-3  # and at most this share of the penalty (the least curvature there is): weak penalties solve tighter
MAX_ITERATIONS = 500  # per grid point; a solve that needs more is reported as not converged


@dataclass(frozen=True)
class GridPoint:
    C: float
    val_loss: float  # class-weighted by the validation part's own counts when class_weight="balanced"
    val_accuracy: float
    iterations: int
    converged: bool  # stopped before MAX_ITERATIONS: the gradient fell below tolerance, or float32 could lower the loss no further


@dataclass(frozen=True)
class SolvedHead:
    """The solved head, in the original feature space: ``logits = features @ weight.T + bias``."""

    weight: torch.Tensor  # (classes, features), float32
    bias: torch.Tensor  # (classes,), float32
    C: float  # the chosen strength (scikit-learn's C: larger is weaker regularisation)
    class_weight: str | None
    grid: tuple[GridPoint, ...]  # the float32 sweep's strengths, in order (it stops PATIENCE strengths past the best)
    iterations: int  # of the final float64 solve at the chosen strength
    converged: bool  # that solve stopped before MAX_ITERATIONS
    seconds: float

    def summary(self) -> dict:
        """Everything but the tensors, as JSON-ready values."""
        grid = [asdict(p) for p in self.grid]
        return {
            "C": self.C,
            "class_weight": self.class_weight,
            "grid": grid,
            "iterations": self.iterations,
            "converged": self.converged,
            "seconds": self.seconds,
        }


def copy_into(head: SolvedHead, linear: nn.Linear) -> nn.Linear:
    """Copy the solved weights into ``linear`` (keeping its dtype and device); returns it."""
    if tuple(linear.weight.shape) != tuple(head.weight.shape) or linear.bias is None:
        raise ValueError(
            f"nn.Linear of weight {tuple(linear.weight.shape)} (bias: {linear.bias is not None}) "
            f"cannot take a head of {tuple(head.weight.shape)} with bias"
        )
    with torch.no_grad():
        linear.weight.copy_(head.weight)
        linear.bias.copy_(head.bias)
    return linear


def class_weights(labels: torch.Tensor, num_classes: int, class_weight: str | None) -> torch.Tensor | None:
    """scikit-learn's ``class_weight``: None, or ``"balanced"``, ``n / (classes * count)`` for each class.

    ``classes`` counts the classes present, so the per-image weights sum to ``n`` (as in scikit-learn, where
    every class must be present) and the penalty keeps its meaning; an absent class, with no images, gets 0.
    """
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, not {class_weight!r}")
    if class_weight is None:
        return None
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = len(labels) / (int(present.sum()) * counts[present])
    return weights


@dataclass(frozen=True)
class _Centring:
    """Features minus the training part's mean: the intercept then no longer fights the weights."""

    mean: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> "_Centring":
        return cls(x.double().mean(0))

    def __call__(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (x.double() - self.mean).to(dtype)

    def fold(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights on centred features as weights on raw ones: ``W (x - m) + b = W x + (b - W m)``."""
        return weight, bias - weight @ self.mean


def _check(x: torch.Tensor, y: torch.Tensor, num_classes: int, part: str) -> None:
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"{part} features {tuple(x.shape)} and labels {tuple(y.shape)} must be (n, features) and (n,), n > 0")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"{part} labels must lie in 0..{num_classes - 1}")


def _solve(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor, sample_weights: torch.Tensor | None, penalty: float
) -> tuple[int, bool]:
    """Minimise the objective in place from the current ``weight`` and ``bias``; (iterations, converged)."""
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1,
        max_iter=MAX_ITERATIONS,
        tolerance_grad=min(GRADIENT_TOLERANCE, RELATIVE_TOLERANCE * penalty),
        tolerance_change=1e-12,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y, weight=sample_weights) + 0.5 * penalty * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    iterations = optimizer.state[weight]["n_iter"]
    return iterations, iterations < MAX_ITERATIONS


def fit_linear_head(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    *,
    class_weight: str | None = None,
    grid: Sequence[float] = GRID,
) -> SolvedHead:
    """Solve the head on the training part for each ``C`` of ``grid``; keep the lowest validation loss.

    Strengths are solved from the smallest ``C`` (strongest regularisation, fastest to solve) up, each
    starting from the previous solution, until :data:`PATIENCE` strengths in a row fail to lower the
    validation loss; the winner is then solved again in float64. The validation loss is weighted by
    ``class_weight`` computed on the validation part's own counts, so "balanced" selects on the mean
    per-class loss. The grid's figures are the float32 sweep's.
    """
    _check(train_x, train_y, num_classes, "training")
    _check(val_x, val_y, num_classes, "validation")
    strengths = sorted(float(c) for c in grid)
    if train_x.shape[1] != val_x.shape[1] or not strengths or strengths[0] <= 0:
        raise ValueError(f"validation features must have the training part's {train_x.shape[1]} columns and grid positive strengths")
    start = time.perf_counter()
    train_y, val_y = train_y.long(), val_y.long()
    centring = _Centring.fit(train_x)
    x, val = centring(train_x, SWEEP_DTYPE), centring(val_x, SWEEP_DTYPE)
    sample_weights, val_weights = (class_weights(y, num_classes, class_weight) for y in (train_y, val_y))
    sweep_weights, val_weights = (None if w is None else w.to(SWEEP_DTYPE) for w in (sample_weights, val_weights))
    weight = torch.zeros(num_classes, x.shape[1], dtype=SWEEP_DTYPE, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=SWEEP_DTYPE, requires_grad=True)
    points: list[GridPoint] = []
    best: tuple[GridPoint, torch.Tensor, torch.Tensor] | None = None
    for C in strengths:
        iterations, converged = _solve(weight, bias, x, train_y, sweep_weights, 1.0 / (C * len(train_y)))
        with torch.no_grad():
            logits = val @ weight.T + bias
            val_loss = F.cross_entropy(logits, val_y, weight=val_weights).item()
            accuracy = (logits.argmax(1) == val_y).double().mean().item()
        points.append(GridPoint(C, val_loss, accuracy, iterations, converged))
        if best is None or val_loss < best[0].val_loss:
            best = (points[-1], weight.detach().clone(), bias.detach().clone())
        elif points.index(best[0]) + PATIENCE < len(points):
            break
    chosen, weight, bias = best[0], best[1].double().requires_grad_(), best[2].double().requires_grad_()
    iterations, converged = _solve(weight, bias, centring(train_x, torch.float64), train_y, sample_weights, 1.0 / (chosen.C * len(train_y)))
    raw_weight, raw_bias = centring.fold(weight.detach(), bias.detach())
    return SolvedHead(
        raw_weight.float(), raw_bias.float(), chosen.C, class_weight, tuple(points), iterations, converged, time.perf_counter() - start
    )

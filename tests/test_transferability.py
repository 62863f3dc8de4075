"""LogME against an independent evaluation of the evidence, and the orderings any transferability score must respect."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from graft.transferability import _spectrum, evidence, logme, probe_accuracy


def brute_force_evidence(features: np.ndarray, y: np.ndarray) -> float:
    """max over (alpha, beta) of log N(y | 0, I/beta + F F^T/alpha), per sample, by a generic optimiser.

    This is the marginal likelihood written straight from the model (w ~ N(0, I/alpha), y = F w + noise of
    precision beta), with none of the SVD algebra or fixed-point updates that :func:`evidence` uses.
    """
    n = len(y)

    def negative(log_params: np.ndarray) -> float:
        alpha, beta = np.exp(log_params)
        covariance = np.eye(n) / beta + features @ features.T / alpha
        return -multivariate_normal(np.zeros(n), covariance).logpdf(y)

    best = min(
        (
            minimize(negative, start, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 5000})
            for start in ([0.0, 0.0], [2.0, -1.0], [-2.0, 2.0])
        ),
        key=lambda r: r.fun,
    )
    return -best.fun / n


@pytest.mark.parametrize(("n", "dim"), [(12, 3), (8, 20)])  # more samples than features, and fewer
def test_fixed_point_matches_a_direct_maximisation_of_the_evidence(n: int, dim: int) -> None:
    rng = np.random.default_rng(n + dim)
    features = rng.normal(size=(n, dim))
    y = (features @ rng.normal(size=dim) + rng.normal(scale=0.5, size=n) > 0).astype(float)
    u, s = _spectrum(features)
    fixed_point = evidence(u, s, dim, y)
    assert fixed_point.log_evidence == pytest.approx(brute_force_evidence(features, y), abs=1e-5)


def test_logme_is_the_mean_over_one_vs_rest_columns() -> None:
    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(30, 4)), np.repeat([0, 1, 2], 10)
    expected = np.mean([brute_force_evidence(features, (labels == c).astype(float)) for c in range(3)])
    assert logme(features, labels) == pytest.approx(expected, abs=1e-5)


def separable(rng: np.random.Generator, n_per_class: int, classes: int, dim: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random class centres; smaller ``spread`` separates the classes better."""
    centres = rng.normal(size=(classes, dim)) * 3
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(scale=spread, size=(labels.size, dim)), labels


def test_features_that_separate_the_classes_score_higher_than_noise() -> None:
    rng = np.random.default_rng(0)
    clean, labels = separable(rng, 60, 4, 16, spread=0.5)
    blurred, _ = separable(rng, 60, 4, 16, spread=6.0)
    noise = rng.normal(size=clean.shape)
    scores = [logme(f, labels) for f in (clean, blurred, noise)]
    assert scores[0] > scores[1] > scores[2]
    accuracies = [probe_accuracy(f, labels) for f in (clean, noise)]
    assert accuracies[0] > 0.95 and accuracies[1] < 0.5


def test_logme_does_not_reward_extra_noise_dimensions() -> None:
    """Evidence, unlike a training fit, pays for complexity: appending pure-noise columns must not help."""
    rng = np.random.default_rng(2)
    clean, labels = separable(rng, 50, 3, 8, spread=1.0)
    padded = np.hstack([clean, rng.normal(size=(clean.shape[0], 200))])
    assert logme(clean, labels) > logme(padded, labels)


def test_logme_is_invariant_to_the_order_of_samples_and_an_orthogonal_rotation() -> None:
    rng = np.random.default_rng(3)
    features, labels = separable(rng, 20, 3, 6, spread=1.5)
    order = rng.permutation(len(labels))
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    score = logme(features, labels)
    assert logme(features[order], labels[order]) == pytest.approx(score)
    assert logme(features @ rotation, labels) == pytest.approx(score)


def test_dead_features_score_as_no_information() -> None:
    """A stage whose activations are all zero (dead ReLUs) scores like features that explain nothing."""
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1], 25)
    useless = logme(np.zeros((50, 5)), labels)
    assert np.isfinite(useless)
    assert logme(separable(rng, 25, 2, 5, spread=0.5)[0], labels) > useless

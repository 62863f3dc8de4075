"""Transferability scores: how well frozen features suit a labelled target set, without any training.

Two measures, both from features alone:

- :func:`logme` (You et al., 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning"): the log marginal likelihood (evidence) of a Bayesian linear model from the features to each
  class's one-vs-rest target, maximised over its two hyper-parameters, per sample, averaged over classes.
  Evidence rewards features that explain the labels with a *simple* linear map, so unlike a training
  accuracy it does not grow just because there are more feature dimensions to fit noise with. The paper
  reports it correlating with fine-tuned accuracy across model zoos: a prior to rank candidates by, not an
  oracle.
- :func:`probe_accuracy`: the held-out accuracy of a logistic regression on standardised features, the
  "linear probe": slower and noisier on a few hundred images, but in accuracy units a user can read.
  Where the classes are uneven it is balanced accuracy (:func:`probe_metric`), as everywhere graft ranks.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from graft.errors import GraftError
from graft.metrics import is_imbalanced

MAX_ITERATIONS = 100
TOLERANCE = 1e-4  # relative change of alpha/beta below which the fixed point has converged (as the paper's code)


@dataclass(frozen=True)
class Evidence:
    """The maximised evidence of one target column, and the hyper-parameters that maximise it."""

    log_evidence: float  # per sample
    alpha: float  # precision of the Gaussian prior on the weights
    beta: float  # precision of the noise
    iterations: int


def _spectrum(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U, s)`` of the thin SVD ``F = U diag(s) V^T``, keeping only directions with ``s > 0``.

    Computed from the eigendecomposition of the smaller Gram matrix (``F F^T`` or ``F^T F``), as the
    paper's code does: on 1,000 x 1,280 features that is several times faster than an SVD, and the
    squared condition number does not matter to an evidence that is smooth in ``s^2``.
    """
    n, dim = features.shape
    if n <= dim:
        sigma, u = np.linalg.eigh(features @ features.T)
    else:
        sigma, v = np.linalg.eigh(features.T @ features)
    keep = sigma > sigma.max() * 1e-10
    s = np.sqrt(sigma[keep])
    if n > dim:
        u = features @ v[:, keep] / s
    else:
        u = u[:, keep]
    return u, s


def evidence(u: np.ndarray, s: np.ndarray, dim: int, y: np.ndarray) -> Evidence:
    """Maximise the evidence ``log p(y | F, alpha, beta)`` of ``y = F w + noise`` by fixed-point updates.

    Model: ``w ~ N(0, alpha^-1 I_D)``, ``y | F, w ~ N(F w, beta^-1 I_n)``. With ``sigma = s^2`` (the
    eigenvalues of ``F^T F``), ``x = U^T y`` and ``A = alpha I + beta F^T F``:

    - posterior mean ``m = beta A^-1 F^T y``, so ``|m|^2 = sum (beta s x / (alpha + beta sigma))^2`` and the
      residual ``|F m - y|^2 = sum (alpha x / (alpha + beta sigma))^2 + |y|^2 - |x|^2``;
    - ``gamma = sum beta sigma / (alpha + beta sigma)`` (the effective number of parameters), then
      MacKay's updates ``alpha = gamma / |m|^2`` and ``beta = (n - gamma) / |F m - y|^2`` until both settle;
    - ``log evidence = n/2 log beta + D/2 log alpha - n/2 log 2pi - beta/2 |F m - y|^2 - alpha/2 |m|^2
      - 1/2 log det A``, where ``log det A`` counts ``log alpha`` for the ``D - rank`` zero eigenvalues.

    Working in the SVD basis makes each iteration O(min(n, D)), so the cost is one SVD per feature matrix
    shared by every class (Algorithm 2 of the paper).
    """
    n = y.shape[0]
    if s.size == 0:  # features that are all zero: y is noise alone, beta its precision, alpha cancels out
        beta = n / max(float(y @ y), 1e-12)
        return Evidence(float(0.5 * np.log(beta) - 0.5 * np.log(2 * np.pi) - 0.5), float("inf"), beta, 0)
    sigma = s**2
    x = u.T @ y
    outside = max(float(y @ y - x @ x), 0.0)  # the part of y no feature direction reaches
    alpha, beta = 1.0, 1.0
    for iteration in range(1, MAX_ITERATIONS + 1):
        denominator = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / denominator))
        m2 = float(np.sum((beta * s * x / denominator) ** 2))
        residual = float(np.sum((alpha * x / denominator) ** 2)) + outside
        new_alpha = gamma / max(m2, 1e-12)
        new_beta = max(n - gamma, 1e-12) / max(residual, 1e-12)
        converged = abs(new_alpha - alpha) / alpha < TOLERANCE and abs(new_beta - beta) / beta < TOLERANCE
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    denominator = alpha + beta * sigma
    m2 = float(np.sum((beta * s * x / denominator) ** 2))
    residual = float(np.sum((alpha * x / denominator) ** 2)) + outside
    log_det = float(np.sum(np.log(denominator))) + (dim - sigma.size) * np.log(alpha)
    total = n / 2 * np.log(beta) + dim / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi) - beta / 2 * residual - alpha / 2 * m2 - log_det / 2
    return Evidence(float(total / n), alpha, beta, iteration)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of ``features`` (n x D) for integer ``labels``: mean over classes of the per-sample log evidence.

    Higher is better; values are comparable between feature sets for the *same* images and labels (that
    is what ranking backbones and cut points needs), not across data sets.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features {features.shape} and labels {labels.shape} do not match")
    classes = np.unique(labels)
    if classes.size < 2:
        raise GraftError("LogME needs images of at least two classes")
    u, s = _spectrum(features)
    scores = [evidence(u, s, features.shape[1], (labels == c).astype(np.float64)).log_evidence for c in classes]
    return float(np.mean(scores))


def probe_metric(labels: np.ndarray) -> str:
    """What :func:`probe_accuracy` measures on ``labels``: ``balanced accuracy`` where their classes are uneven, else ``accuracy``.

    On uneven classes a probe gains accuracy by favouring the large ones, so accuracy would rank backbones
    by how well they serve the majority; mean per-class recall ranks them by every class alike.
    """
    return "balanced accuracy" if is_imbalanced(np.unique(labels, return_counts=True)[1]) else "accuracy"


def probe_accuracy(features: np.ndarray, labels: np.ndarray, *, held_out: float = 0.3, seed: int = 0) -> float:
    """Accuracy (balanced where the classes are uneven: :func:`probe_metric`) on a stratified held-out part of
    a logistic regression trained on standardised features.

    Standardising puts every feature set on the same footing (activations of early stages are orders of
    magnitude apart from late ones); L2 regularisation at sklearn's default keeps 1,000-dimensional
    features on a few hundred images from overfitting outright.
    """
    train_x, test_x, train_y, test_y = train_test_split(features, labels, test_size=held_out, stratify=labels, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    probe.fit(train_x, train_y)
    score = balanced_accuracy_score if probe_metric(labels) == "balanced accuracy" else accuracy_score
    return float(score(test_y, probe.predict(test_x)))

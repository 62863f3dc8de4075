"""Post-hoc logit adjustment: a model trained on uneven classes, its decisions moved towards the rare ones.

A classifier trained on uneven classes learns their frequencies into its outputs, and the rare classes'
recall pays. Weighing the loss by class is the textbook answer and works for a convex head solved on
cached features, but a network that fits its training set (fine-tuning reaches 99.8% on ten images of a
class) has little error left to weigh, so weights change little in it (Byrd and Lipton 2019, "What is the
effect of importance weighting in deep learning?"); measured here, the weighted fine-tune's balanced
accuracy stayed within noise of the unweighted one's (docs/results.md, "Class imbalance").

Menon et al. 2021 ("Long-tail learning via logit adjustment") subtract ``tau * log(prior)`` from the logits
of a model trained without weights: at ``tau = 1`` and calibrated probabilities this is the decision that
maximises balanced accuracy. ``tau`` is chosen here on the validation part, from :data:`STRENGTHS` (0
included: where no adjustment scores better, none is made), and folded into the head's output bias, so
the saved model, ``predict``, ``evaluate`` and every export decide the same way with nothing to carry.

Never beyond 1: past it the rare classes are favoured beyond what the images say, which pays only for an
over-confident model, and a validation part with ten images of a class cannot tell that apart from luck.
Measured on the imbalanced case, a choice up to 2 took tau = 2 for the solved head: +0.4 points of balanced
accuracy over tau = 1 on the test images, for 3.5 points of accuracy and 5 of macro F1 (docs/results.md).
"""

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def log_prior(labels: list[int], num_classes: int) -> torch.Tensor:
    """The log of each class's share of ``labels``; a class without images counts as one (its log stays finite)."""
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=num_classes).clamp(min=1).double()
    return (counts / counts.sum()).log()


def choose_strength(logits: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor) -> tuple[float, dict[float, float]]:
    """The ``tau`` of :data:`STRENGTHS` whose adjusted ``logits`` score the highest balanced accuracy on ``labels``
    (a tie goes to the smaller: the model as trained, or nearer it), with each one's score."""
    truth = labels.cpu().numpy()
    shifted = logits.double().cpu()
    scores = {tau: float(balanced_accuracy_score(truth, (shifted - tau * prior).argmax(1).numpy())) for tau in STRENGTHS}
    best = max(scores.values())
    return min(tau for tau, value in scores.items() if np.isclose(value, best, rtol=0, atol=1e-9)), scores


def output_layer(head: nn.Module) -> nn.Linear:
    """The dense layer whose outputs are the logits: the head itself, or an MLP head's last layer."""
    layers = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise TypeError(f"a head without a dense layer ({type(head).__name__}) cannot take a logit adjustment")
    return layers[-1]


@torch.no_grad()
def fold_into(head: nn.Module, tau: float, prior: torch.Tensor) -> None:
    """Subtract ``tau * prior`` from the output layer's bias: the adjusted decision, in the model's own weights."""
    bias = output_layer(head).bias
    bias -= (tau * prior).to(bias.device, bias.dtype)

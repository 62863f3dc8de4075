"""Test-time augmentation: a prediction averaged over an image and its mirror image.

A model that learned "a shoe" from left- and right-facing shoes is less sure of a few test images than of
their mirror images; averaging the two softmax outputs (timm's and fastai's ``tta``) smooths that out, at
twice the inference cost. It is no free lunch: a mirrored character or digit is another (or no) symbol,
so the flip can hurt there. Hence three settings for a fit: ``none``, ``flip``, and ``auto``, which scores
both on the run's validation part when training ends and keeps the flip only where it scores higher
there (:func:`graft.evaluation.choose_tta`); the run records the choice and predicts with it from then on.

The wrapper returns log-probabilities, which are logits in every sense a caller uses: ``argmax`` is the
prediction, ``softmax`` gives the averaged probabilities back, and cross-entropy on them is the loss of
the averaged prediction.
"""

import torch
from torch import nn

TTAS = ("none", "flip")  # what a run predicts with
FIT_TTAS = (*TTAS, "auto")  # what a fit may ask for: auto chooses one of TTAS on the validation part


class FlipAverage(nn.Module):
    """``model`` whose output is the log of the mean softmax of each image and its horizontal mirror.

    Both go through the network as one batch of twice the size: one pass, which keeps batch-level speed-ups
    (compiled or int8 copies, :mod:`graft.inference`) and BatchNorm in eval mode unaffected.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        probs = self.model(torch.cat([x, x.flip(-1)])).float().softmax(1)
        return ((probs[:n] + probs[n:]) / 2).clamp_min(torch.finfo(torch.float32).tiny).log()  # a finite loss even at 0


def with_tta(model: nn.Module, tta: str) -> nn.Module:
    """``model`` as it predicts under ``tta`` (``none``: itself)."""
    if tta not in TTAS:
        raise ValueError(f"test-time augmentation {tta!r} is not one of {TTAS}")
    return FlipAverage(model) if tta == "flip" else model

"""Bottleneck features: a frozen backbone's outputs, computed once per image instead of once per epoch."""

import torch
from torch import nn
from torch.utils.data import DataLoader


@torch.inference_mode()
def extract(backbone: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` over ``loader`` in inference mode and return ``(features, labels)``.

    The backbone is put in ``eval()`` mode first: BatchNorm must use its running statistics, or the
    features differ between extraction and prediction (the classic "93% in training, 25% at prediction").
    """
    was_training = backbone.training
    backbone.eval()
    try:
        outputs, labels = [], []
        for images, targets in loader:
            outputs.append(backbone(images).float())
            labels.append(torch.as_tensor(targets))
        return torch.cat(outputs), torch.cat(labels)
    finally:
        backbone.train(was_training)


from graft.features.cache import FeatureCache, cached_features

__all__ = ["FeatureCache", "cached_features", "extract"]

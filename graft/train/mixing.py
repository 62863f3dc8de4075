"""Batch mixing (mixup, CutMix): each training batch blended with a shuffled copy of itself, labels alike.

Both are torchvision's own (``transforms.v2.MixUp`` and ``CutMix``, alpha 1 as torchvision's reference
recipes use); ``mixup-cutmix`` draws one of the two for each batch, as timm's ``--mixup``/``--cutmix``
pair does. The labels become class probabilities, which ``nn.CrossEntropyLoss`` takes as they are (with
its class weights and label smoothing). The draws come from torch's global generator, which every
checkpoint saves, so a resumed run mixes exactly as the uninterrupted one did.
"""

from collections.abc import Callable, Iterable, Iterator

import torch
from torchvision.transforms import v2

MIXES = ("none", "mixup", "cutmix", "mixup-cutmix")

Batch = tuple[torch.Tensor, torch.Tensor]


def mixer(mix: str, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], Batch] | None:
    """The transform that mixes one ``(images, labels)`` batch, or ``None`` for ``none``."""
    if mix == "none":
        return None
    mixup, cutmix = v2.MixUp(num_classes=num_classes), v2.CutMix(num_classes=num_classes)
    return {"mixup": mixup, "cutmix": cutmix, "mixup-cutmix": v2.RandomChoice([mixup, cutmix])}[mix]


def mixed(batches: Iterable[Batch], mix: Callable[[torch.Tensor, torch.Tensor], Batch] | None) -> Iterator[Batch]:
    """``batches`` with ``mix`` applied to each (unchanged where ``mix`` is ``None``)."""
    for images, labels in batches:
        yield mix(images, torch.as_tensor(labels)) if mix is not None else (images, labels)

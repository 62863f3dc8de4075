"""Preprocessing as data (as timm's pretrained configs are), and the torchvision transforms built from it."""

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

from graft.errors import GraftError

AUGMENTATIONS = ("none", "light", "strong", "trivial", "trivial-flip")


@dataclass(frozen=True)
class Preprocessing:
    """What a backbone expects of its input; saved in every run so prediction repeats it exactly.

    ``input_size`` is ``(channels, height, width)``; ``crop_pct`` < 1 resizes a little larger and
    centre-crops, as the backbone's pretraining did.
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.input_size[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Preprocessing":
        return cls(
            input_size=tuple(int(v) for v in raw["input_size"]),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in raw["mean"]),
            std=tuple(float(v) for v in raw["std"]),
            interpolation=str(raw.get("interpolation", "bilinear")),
            crop_pct=float(raw.get("crop_pct", 1.0)),
            extra=dict(raw.get("extra", {})),
        )


def build_transform(pre: Preprocessing, augment: str = "none") -> v2.Compose:
    """PIL image -> normalised float tensor; ``augment`` adds random changes for training only.

    ``light`` (small shifts, rotations and scale changes) suits characters and digits as well as photos;
    ``strong`` adds random crops, horizontal flips and colour changes, which only suit photos.
    ``trivial`` is TrivialAugment (Müller & Hutter 2021, torchvision's ``TrivialAugmentWide``): one
    random operation of random strength per image, with no setting to tune; it never mirrors, so it suits
    characters and digits, whose mirror image is another symbol or none. ``trivial-flip`` adds horizontal
    flips, for photos.
    """
    if augment not in AUGMENTATIONS:
        raise GraftError(f"unknown augmentation '{augment}'; choose one of {', '.join(AUGMENTATIONS)}")
    _, height, width = pre.input_size
    interpolation = InterpolationMode(pre.interpolation)
    if augment == "strong":
        geometry: list[Any] = [
            v2.RandomResizedCrop((height, width), scale=(0.6, 1.0), interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.3, 0.3, 0.3),
        ]
    else:
        scale_size = round(max(height, width) / pre.crop_pct)
        geometry = [
            v2.Resize(scale_size, interpolation=interpolation, antialias=True),
            v2.CenterCrop((height, width)),
        ]
        if augment == "light":
            geometry.append(v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)))
        if augment.startswith("trivial"):  # its affine operations on tensors take nearest or bilinear only
            warp = InterpolationMode.NEAREST if interpolation == InterpolationMode.NEAREST else InterpolationMode.BILINEAR
            geometry.append(v2.TrivialAugmentWide(interpolation=warp))
        if augment == "trivial-flip":
            geometry.append(v2.RandomHorizontalFlip())
    return v2.Compose(
        [
            v2.PILToTensor(),
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ]
    )

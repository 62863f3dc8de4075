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


def resize_side(pre: Preprocessing) -> int:
    """The shorter side an image is resized to before its centre crop (``crop_pct`` < 1 leaves a margin)."""
    _, height, width = pre.input_size
    return round(max(height, width) / pre.crop_pct)


class ShrinkTo(v2.Transform):
    """Resize so the shorter side is ``size`` pixels, only where it is longer: never enlarges an image.

    What ``strong`` augmentation keeps of an image before its random crop: enough pixels for any crop it
    draws, and no more, so a large photo is stored (:mod:`graft.data.decoded`) at the training resolution.
    """

    def __init__(self, size: int, interpolation: InterpolationMode) -> None:
        super().__init__()
        self.size, self.interpolation = size, interpolation

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if min(v2.functional.get_size(inpt)) <= self.size:
            return inpt
        return v2.functional.resize(inpt, self.size, interpolation=self.interpolation, antialias=True)


def decode_transform(pre: Preprocessing, augment: str = "none") -> v2.Compose:
    """The deterministic first half of :func:`build_transform`: PIL image -> uint8 tensor at the training resolution.

    Without ``strong`` augmentation that is the resized, centre-cropped input itself; with it, the image
    shrunk to the resize side, from which each epoch draws its own crop. Its output is what
    :mod:`graft.data.decoded` keeps in memory, so every epoch after the first starts here, not at the file.
    """
    _check_augment(augment)
    _, height, width = pre.input_size
    interpolation = InterpolationMode(pre.interpolation)
    if augment == "strong":
        return v2.Compose([v2.PILToTensor(), ShrinkTo(resize_side(pre), interpolation)])
    return v2.Compose(
        [v2.PILToTensor(), v2.Resize(resize_side(pre), interpolation=interpolation, antialias=True), v2.CenterCrop((height, width))]
    )


def random_transform(pre: Preprocessing, augment: str = "none") -> v2.Compose | None:
    """The random changes of ``augment``, on uint8 tensors (as they always have run in graft: the PIL image
    becomes a tensor before any of them); None for ``none``."""
    _check_augment(augment)
    _, height, width = pre.input_size
    interpolation = InterpolationMode(pre.interpolation)
    if augment == "strong":
        return v2.Compose(
            [
                v2.RandomResizedCrop((height, width), scale=(0.6, 1.0), interpolation=interpolation, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(0.3, 0.3, 0.3),
            ]
        )
    if augment == "light":
        return v2.Compose([v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))])
    if augment.startswith("trivial"):  # its affine operations on tensors take nearest or bilinear only
        warp = InterpolationMode.NEAREST if interpolation == InterpolationMode.NEAREST else InterpolationMode.BILINEAR
        flip = [v2.RandomHorizontalFlip()] if augment == "trivial-flip" else []
        return v2.Compose([v2.TrivialAugmentWide(interpolation=warp), *flip])
    return None


def normalize_transform(pre: Preprocessing) -> v2.Compose:
    """uint8 tensor -> float tensor scaled to [0, 1] and normalised: the last step, after augmentation."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(pre.mean), std=list(pre.std))])


def build_transform(pre: Preprocessing, augment: str = "none") -> v2.Compose:
    """PIL image -> normalised float tensor; ``augment`` adds random changes for training only.

    ``light`` (small shifts, rotations and scale changes) suits characters and digits as well as photos;
    ``strong`` adds random crops, horizontal flips and colour changes, which only suit photos.
    ``trivial`` is TrivialAugment (Müller & Hutter 2021, torchvision's ``TrivialAugmentWide``): one
    random operation of random strength per image, with no setting to tune; it never mirrors, so it suits
    characters and digits, whose mirror image is another symbol or none. ``trivial-flip`` adds horizontal
    flips, for photos. It is :func:`decode_transform`, :func:`random_transform` and :func:`normalize_transform`
    in turn: the split that lets images be decoded once (:mod:`graft.data.decoded`) and all but the random
    draws run in threads.
    """
    parts = (decode_transform(pre, augment), random_transform(pre, augment), normalize_transform(pre))
    return v2.Compose([t for part in parts if part is not None for t in part.transforms])


def _check_augment(augment: str) -> None:
    if augment not in AUGMENTATIONS:
        raise GraftError(f"unknown augmentation '{augment}'; choose one of {', '.join(AUGMENTATIONS)}")

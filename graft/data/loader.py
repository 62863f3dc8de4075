"""Streaming loaders: images are decoded on the fly, so a data set never has to fit in memory."""

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from graft import distributed
from graft.data.images import load_image
from graft.data.transforms import Preprocessing, build_transform


class ImageDataset(Dataset):
    """``(path, label)`` samples decoded and transformed one at a time (in DataLoader workers if any)."""

    def __init__(self, root: Path, samples: Sequence[tuple[str, int]], channels: int, transform: Callable):
        self.root, self.samples, self.channels, self.transform = Path(root), list(samples), channels, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        relative, label = self.samples[index]
        return self.transform(load_image(self.root / relative, self.channels)), label


def make_loader(
    root: Path,
    samples: Sequence[tuple[str, int]],
    pre: Preprocessing,
    *,
    batch_size: int,
    augment: str = "none",
    shuffle: bool = False,
    seed: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``samples``; a shuffled (training) one under torch.distributed gives each process its shard.

    The shuffle order comes from a generator seeded with ``seed``, so two runs with the same seed see the
    same batches, which is what makes a comparison between strategies fair. Workers are started afresh
    each epoch (not persistent): each new set draws its base seed, which seeds the torch, ``random`` and
    NumPy generators that augmentation uses in the workers, from that generator, so reseeding it before an
    epoch makes the epoch's augmentation a function of that seed alone, and a resumed run repeats it.
    ``pin_memory`` puts batches in page-locked memory, for a CUDA device to copy while it computes
    (:func:`graft.device.pin_memory`).
    """
    dataset = ImageDataset(root, samples, pre.channels, build_transform(pre, augment))
    sampler = distributed.sampler(dataset, seed) if shuffle else None  # evaluation is sharded by its caller, unpadded
    shuffle = shuffle and sampler is None
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=pin_memory,
    )

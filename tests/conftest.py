"""Shared fixtures: a private graft cache, and small real image folders made on the fly."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw


@pytest.fixture(scope="session", autouse=True)
def graft_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point graft's cache at a folder shared by this run's workers (and no other run), never the user's ~/.cache.

    Under xdist each worker's base folder sits in the run's own folder; without it the base folder is the run's.
    """
    base = tmp_path_factory.getbasetemp()
    home = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "graft-home"
    home.mkdir(exist_ok=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("GRAFT_HOME", str(home))
    yield home
    mp.undo()


def draw_shape(kind: str, rng: np.random.Generator, size: int = 28, mode: str = "L") -> Image.Image:
    """A noisy bar, cross or ring at a random offset: three classes a small CNN separates in a few epochs."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    dx, dy = rng.integers(-3, 4, size=2)
    c = size // 2
    if kind == "bar":
        draw.rectangle([c - 10 + dx, c - 2 + dy, c + 10 + dx, c + 2 + dy], fill=255)
    elif kind == "cross":
        draw.line([c - 8 + dx, c - 8 + dy, c + 8 + dx, c + 8 + dy], fill=255, width=3)
        draw.line([c - 8 + dx, c + 8 + dy, c + 8 + dx, c - 8 + dy], fill=255, width=3)
    else:
        draw.ellipse([c - 9 + dx, c - 9 + dy, c + 9 + dx, c + 9 + dy], outline=255, width=3)
    noisy = np.clip(np.asarray(img, dtype=np.float32) + rng.normal(0, 25, (size, size)), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, mode="L").convert(mode)


def make_shapes(root: Path, per_class: int = 20, seed: int = 0, mode: str = "L") -> Path:
    rng = np.random.default_rng(seed)
    for kind in ("bar", "cross", "ring"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_shape(kind, rng, mode=mode).save(root / kind / f"{i:03d}.png")
    return root


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    """A 3-class image folder of 20 grayscale PNGs a class."""
    return make_shapes(tmp_path / "shapes")

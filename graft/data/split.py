"""Seeded, stratified train/val/test splits, saved beside every run so comparisons share them exactly."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from graft.atomic import write_text
from graft.data.imageset import ImageSet
from graft.errors import GraftError

SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class Split:
    """Which sample goes where: lists of ``(relative path, label)`` per part, plus what they index into."""

    root: str
    classes: list[str]
    seed: int
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]

    def save(self, folder: Path) -> Path:
        path = Path(folder) / SPLIT_FILE
        write_text(path, json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: Path) -> "Split":
        try:
            raw = json.loads(Path(path).read_text())
            parts = {k: [(str(p), int(y)) for p, y in raw[k]] for k in ("train", "val", "test")}
            return cls(root=str(raw["root"]), classes=[str(c) for c in raw["classes"]], seed=int(raw["seed"]), **parts)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GraftError(f"cannot read split file {path}: {exc}") from exc

    def path(self, relative: str) -> Path:
        return Path(self.root) / relative


def make_split(
    images: ImageSet, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2, per_class: int | None = None
) -> Split:
    """Split ``images`` so that every class keeps its share in each part, the same way for the same seed.

    A predefined test part (``images.test_folder``, e.g. DHCD's ``Test/``) is the test split as it is, and
    ``val_fraction`` of the rest is held out for validation. ``per_class`` then keeps at most that many
    training images a class (see :func:`subsample`); validation and test stay the same whatever its value.
    """
    samples = images.samples
    if images.test_folder:
        prefix = images.test_folder + "/"
        test = [s for s in samples if s[0].startswith(prefix)]
        samples = [s for s in samples if not s[0].startswith(prefix)]
        n_test, n_val = len(test), round(len(samples) * val_fraction)
    else:
        n_test, n_val = round(len(samples) * test_fraction), round(len(samples) * val_fraction)
    labels = [y for _, y in samples]
    counts = {images.classes[c]: labels.count(c) for c in set(labels)}
    smallest = min(counts, key=counts.__getitem__)
    if counts[smallest] < (2 if images.test_folder else 3) or min(n_test, n_val) < len(images.classes):
        raise GraftError(
            f"too few images to split: class '{smallest}' has {counts[smallest]} and {len(samples)} images give "
            f"{n_val} validation / {n_test} test places for {len(images.classes)} classes; "
            "add images (at least 3 a class) or use fewer classes"
        )
    if not images.test_folder:
        samples, test = train_test_split(samples, test_size=n_test, stratify=labels, random_state=seed)
    train, val = train_test_split(samples, test_size=n_val, stratify=[y for _, y in samples], random_state=seed)
    if per_class is not None:
        train = subsample(train, per_class, seed)
    return Split(root=str(images.root.resolve()), classes=images.classes, seed=seed, train=train, val=val, test=test)


def subsample(samples: list[tuple[str, int]], per_class: int, seed: int = 0) -> list[tuple[str, int]]:
    """At most ``per_class`` samples of each class, the same for the same seed.

    Each class's samples are shuffled by a generator seeded with (seed, class) and cut, so a smaller size
    is a subset of a larger one: 10 a class are among the 100, which makes a learning curve a fair one.
    """
    if per_class < 1:
        raise GraftError(f"--per-class {per_class}: keep at least one training image a class")
    kept: list[tuple[str, int]] = []
    for label in sorted({y for _, y in samples}):
        members = sorted(s for s in samples if s[1] == label)
        order = np.random.default_rng([seed, label]).permutation(len(members))[:per_class]
        kept.extend(members[i] for i in sorted(order))
    return kept

"""A data set as a list of usable samples, and the one scan every source (a folder, a CSV) goes through.

Sources only say which images they offer and of which class; deciding what is usable, applying the
``--bad-images`` policy and listing what was left out happens here, so an image folder, a ``Train/``/``Test/``
tree and a CSV treat a damaged or missing image the same way.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from graft.data.images import image_problem
from graft.errors import GraftError

BAD_IMAGE_POLICIES = ("skip", "fail")
BAD_IMAGES = "bad_images.json"  # what a fit left out, written into its run directory


@dataclass(frozen=True)
class ImageSet:
    """Every usable image under ``root``, as ``(path relative to root, class index)`` pairs.

    Paths are kept relative so a split file stays valid when the data set folder moves. ``bad`` lists the
    images (or CSV rows) left out as unusable, ``(path, why)``; ``empty_classes`` the class folders left out
    because they hold no image file at all. ``test_folder`` names the sub-folder whose images are a
    predefined test part (``Test`` in DHCD's layout), if any.
    """

    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]
    bad: list[tuple[str, str]] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    test_folder: str | None = None

    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def path(self, relative: str) -> Path:
        return self.root / relative


@dataclass(frozen=True)
class Candidate:
    """An image a source offers: its path relative to the set's root and its class name.

    ``problem`` is set when the source already knows the entry cannot be used without decoding anything (a
    CSV row naming a missing file), with ``fix``, what the user can do about it, for the error under
    ``--bad-images fail``.
    """

    path: str
    label: str
    problem: str | None = None
    fix: str = "remove or replace it"


def check_policy(bad_images: str) -> None:
    """Refuse an unknown ``--bad-images`` value before any scanning, which can take minutes on a large set."""
    if bad_images not in BAD_IMAGE_POLICIES:
        raise GraftError(f"unknown --bad-images policy '{bad_images}'; choose one of {', '.join(BAD_IMAGE_POLICIES)}")


def parse_classes(spec: str, available: list[str]) -> list[str]:
    """Turn ``"7-9"``, ``"cat,dog"`` or ``"0-2,5"`` into class names, in the order given.

    A range ``a-b`` of integers stands for the classes named ``a`` to ``b``.
    """
    chosen: list[str] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        start, sep, end = token.partition("-")
        if sep and start.isdigit() and end.isdigit():
            if int(start) > int(end):
                raise GraftError(f"class range '{token}' in --classes runs backwards; write it as {end}-{start}")
            names = [str(i) for i in range(int(start), int(end) + 1)]
        else:
            names = [token]
        for name in names:
            if name not in available:
                raise GraftError(f"unknown class '{name}' in --classes {spec}; this data set has: {', '.join(available)}")
            if name not in chosen:
                chosen.append(name)
    if len(chosen) < 2:
        raise GraftError(f"--classes {spec} selects {len(chosen)} class; a classifier needs at least two")
    return chosen


def scan(
    root: Path, classes: list[str], candidates: list[Candidate], bad_images: str, listed_in: Path | None = None
) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """The usable ``candidates`` as ``(path, class index)`` samples in their order, and the rest as ``(path, why)``.

    Every image is decoded once here (in threads, one image at a time, nothing kept), so a damaged file is
    found before training rather than in its third epoch. ``bad_images="skip"`` leaves unusable entries
    out; ``"fail"`` raises on the first, entries the source already knows to be unusable first. Either way
    a class that has entries but none usable is an error: silently losing a class the user meant is worse.
    ``listed_in`` names the file that lists the candidates (a CSV), for messages; without it, each class
    is the folder ``root / class``. Each of ``classes`` has at least one candidate; a candidate whose label
    is not one of them can only be a bad one.
    """
    source = f" (listed in {listed_in})" if listed_in else ""
    known = [c for c in candidates if c.problem is not None]
    if known and bad_images == "fail":
        raise GraftError(
            f"cannot use {known[0].path}{source}: {known[0].problem}; {known[0].fix}, or pass --bad-images skip to leave such entries out"
        )
    to_decode = [c for c in candidates if c.problem is None]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = iter(list(pool.map(image_problem, (root / c.path for c in to_decode))))  # in to_decode's order
    whys = [c.problem if c.problem is not None else next(decoded) for c in candidates]
    unreadable = [(c, why) for c, why in zip(candidates, whys, strict=True) if why is not None and c.problem is None]
    if unreadable and bad_images == "fail":
        first, why = unreadable[0]
        raise GraftError(
            f"cannot read image {root / first.path}{source}: {why}; {first.fix}, or pass --bad-images skip to leave such files out"
        )
    entries: dict[str, list[tuple[Candidate, str | None]]] = {name: [] for name in classes}
    for c, why in zip(candidates, whys, strict=True):
        if c.label in entries:
            entries[c.label].append((c, why))
    for name, offered in entries.items():
        if all(why is not None for _, why in offered):
            place, remove = (f"class '{name}' in {listed_in}", "its rows") if listed_in else (f"class folder {root / name}", "the folder")
            first, why = offered[0]
            raise GraftError(
                f"{place} has {len(offered)} image file(s) and none can be read ({Path(first.path).name}: {why}); replace them or remove {remove}"
            )
    index = {name: i for i, name in enumerate(classes)}
    samples = [(c.path, index[c.label]) for c, why in zip(candidates, whys, strict=True) if why is None]
    bad = [(c.path, why) for c, why in zip(candidates, whys, strict=True) if why is not None]
    return samples, bad

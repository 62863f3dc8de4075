"""An image folder (one sub-folder a class) as the candidates of an :class:`ImageSet`.

A folder whose only sub-folders are ``Train/`` and ``Test/`` (DHCD's layout, also used for the built-in
Fashion-MNIST) holds one sub-folder a class in each; its ``Test/`` images are then the test split.
"""

import os
from pathlib import Path

from graft.data.images import is_image_file
from graft.data.imageset import Candidate, ImageSet, parse_classes, scan
from graft.errors import GraftError


def _train_test_folders(root: Path) -> tuple[Path, Path] | None:
    """``(Train, Test)`` when those two (any letter case) are ``root``'s only sub-folders and both hold class
    sub-folders; two classes that happen to be called train and test hold images, not folders."""
    folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if set(folders) == {"train", "test"} and all(_class_folders(folders[k]) for k in ("train", "test")):
        return folders["train"], folders["test"]
    return None


def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_folder_set(root: Path, classes: str | None = None, bad_images: str = "skip") -> ImageSet:
    """Scan ``root``'s class sub-folders for usable images, optionally keeping only ``classes``.

    Labels are re-indexed 0..N-1 in the order of the selection (or of sorted folder names). A class folder
    without any image file is left out under ``bad_images="skip"`` (recorded in ``empty_classes``) and an
    error under ``"fail"``, or when ``classes`` names it: silently losing a class the user meant is worse.
    Unreadable images go through :func:`graft.data.imageset.scan` like every source's.
    """
    parts = _train_test_folders(root)
    bases = list(parts) if parts else [root]  # where a class's images are: its folder, or its folders in Train/ and Test/
    available = _class_folders(bases[0])
    if not available:
        raise GraftError(f"{bases[0]} has no class sub-folders; put each class's images in a sub-folder named after it")
    if parts and (extra := sorted(set(_class_folders(parts[1])) - set(available))):
        raise GraftError(f"{parts[1]} has classes that {parts[0]} lacks: {', '.join(extra)}; every test class needs training images")
    names = parse_classes(classes, available) if classes else available
    found = {name: [image_files(base / name) for base in bases] for name in names}
    empty = [name for name in names if not found[name][0]]  # no training images (a class may lack test images)
    if empty and (bad_images == "fail" or classes):
        raise GraftError(f"class folder {bases[0] / empty[0]} has no images; add images or remove the folder")
    names = [name for name in names if name not in empty]
    if len(names) < 2:
        left_out = f" (left out for having no images: {', '.join(empty)})" if empty else ""
        raise GraftError(
            f"{root} has images for only {len(names)} class(es) ({', '.join(names) or 'none'}){left_out}; a classifier needs at least two"
        )
    candidates = [Candidate(path.relative_to(root).as_posix(), name) for name in names for part in found[name] for path in part]
    samples, bad = scan(root, names, candidates, bad_images)
    test_folder = parts[1].name if parts else None
    return ImageSet(root=root, classes=names, samples=samples, bad=bad, empty_classes=empty, test_folder=test_folder)


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, sorted; hidden entries skipped, symlinked folders not followed.

    Not following folder links is what keeps a link loop (``a/loop -> ..``) from recursing forever.
    Links to files are kept, even broken or looping ones, so the scan reports them as unreadable.
    """
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(parent) / n for n in names if is_image_file(Path(n)))
    return sorted(found)

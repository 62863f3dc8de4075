"""An image folder (one sub-folder a class) as a list of samples, and the ``--classes`` selection.

A folder whose only sub-folders are ``Train/`` and ``Test/`` (DHCD's layout, also used for the built-in
Fashion-MNIST) holds one sub-folder a class in each; its ``Test/`` images are then the test split.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from graft.data.images import image_problem, is_image_file
from graft.errors import GraftError

BAD_IMAGE_POLICIES = ("skip", "fail")
BAD_IMAGES = "bad_images.json"  # what a fit left out, written into its run directory


@dataclass(frozen=True)
class ImageSet:
    """Every usable image under ``root``, as ``(path relative to root, class index)`` pairs.

    Paths are kept relative so a split file stays valid when the data set folder moves. ``bad`` lists the
    image files left out as unreadable, ``(relative path, why)``; ``empty_classes`` the class folders
    left out because they hold no image file at all. ``test_folder`` names the sub-folder whose images
    are a predefined test part (``Test`` in DHCD's layout), if any.
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


def parse_classes(spec: str, available: list[str]) -> list[str]:
    """Turn ``"7-9"``, ``"cat,dog"`` or ``"0-2,5"`` into class names, in the order given.

    A range ``a-b`` of integers stands for the class folders named ``a`` to ``b``.
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
                raise GraftError(
                    f"unknown class '{name}' in --classes {spec}; this data set has: {', '.join(available)}"
                )
            if name not in chosen:
                chosen.append(name)
    if len(chosen) < 2:
        raise GraftError(f"--classes {spec} selects {len(chosen)} class; a classifier needs at least two")
    return chosen


def _train_test_folders(root: Path) -> tuple[Path, Path] | None:
    """``(Train, Test)`` when those two (any letter case) are ``root``'s only sub-folders and both hold class
    sub-folders; two classes that happen to be called train and test hold images, not folders."""
    folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if set(folders) == {"train", "test"} and all(_class_folders(folders[k]) for k in ("train", "test")):
        return folders["train"], folders["test"]
    return None


def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_image_set(root: Path, classes: str | None = None, bad_images: str = "skip") -> ImageSet:
    """Scan ``root`` for class sub-folders and their usable images, optionally keeping only ``classes``.

    Labels are re-indexed 0..N-1 in the order of the selection (or of sorted folder names). Every image
    is decoded once here (in threads, one image at a time, nothing kept), so a damaged file is found
    before training rather than in its third epoch. ``bad_images="skip"`` leaves unreadable files and
    class folders without any image out (recorded in ``bad`` and ``empty_classes``); ``"fail"`` raises on
    the first. Either way a class that has image files but none readable is an error, as is a class
    named in ``classes`` whose folder is empty: silently losing a class the user meant is worse.
    ``root`` may also be a CSV file of ``path,label`` rows (see :mod:`graft.data.csvlist`).
    """
    if bad_images not in BAD_IMAGE_POLICIES:
        raise GraftError(f"unknown --bad-images policy '{bad_images}'; choose one of {', '.join(BAD_IMAGE_POLICIES)}")
    root = Path(root)
    if not root.exists():
        raise GraftError(f"data path {root} does not exist; give an image folder (one sub-folder a class) or a built-in data set name")
    if root.is_file() and root.suffix.lower() == ".csv":
        from graft.data.csvlist import load_csv_set

        return load_csv_set(root, classes)
    if not root.is_dir():
        raise GraftError(f"data path {root} is a file; give the folder that holds one sub-folder a class, or a CSV of path,label rows")
    parts = _train_test_folders(root)
    bases = list(parts) if parts else [root]  # where a class's images are: its folder, or its folders in Train/ and Test/
    available = _class_folders(bases[0])
    if not available:
        raise GraftError(f"{bases[0]} has no class sub-folders; put each class's images in a sub-folder named after it")
    if parts and (extra := sorted(set(_class_folders(parts[1])) - set(available))):
        raise GraftError(f"{parts[1]} has classes that {parts[0]} lacks: {', '.join(extra)}; every test class needs training images")
    names = parse_classes(classes, available) if classes else available
    found = {name: [image_files(base / name) for base in bases] for name in names}
    files = {name: [path for part in found[name] for path in part] for name in names}
    empty = [name for name in names if not found[name][0]]  # no training images (a class may lack test images)
    if empty and (bad_images == "fail" or classes):
        raise GraftError(f"class folder {bases[0] / empty[0]} has no images; add images or remove the folder")
    names = [name for name in names if name not in empty]
    if len(names) < 2:
        left_out = f" (left out for having no images: {', '.join(empty)})" if empty else ""
        raise GraftError(f"{root} has images for only {len(names)} class(es) ({', '.join(names) or 'none'}){left_out}; a classifier needs at least two")
    candidates = [path for name in names for path in files[name]]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = dict(zip(candidates, pool.map(image_problem, candidates), strict=True))
    bad = [(path.relative_to(root).as_posix(), why) for path, why in problems.items() if why is not None]
    if bad and bad_images == "fail":
        raise GraftError(f"cannot read image {root / bad[0][0]}: {bad[0][1]}; remove or replace it, or pass --bad-images skip to leave such files out")
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(names):
        usable = [p for p in files[name] if problems[p] is None]
        if not usable:
            first = files[name][0]
            raise GraftError(
                f"class folder {root / name} has {len(files[name])} image file(s) and none can be read "
                f"({first.name}: {problems[first]}); replace them or remove the folder"
            )
        samples.extend((p.relative_to(root).as_posix(), label) for p in usable)
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

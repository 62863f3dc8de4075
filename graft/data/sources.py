"""Where a data set comes from: an image folder or a CSV of ``path,label`` rows, picked from the path given."""

from pathlib import Path

from graft.data.csvlist import load_csv_set
from graft.data.folder import load_folder_set
from graft.data.imageset import ImageSet, check_policy
from graft.errors import GraftError


def load_image_set(root: Path, classes: str | None = None, bad_images: str = "skip") -> ImageSet:
    """Every usable image of the data set at ``root``, optionally only the ``classes`` selected (``"7-9"``).

    ``root`` is a folder of class sub-folders (see :mod:`graft.data.folder`) or a CSV file of ``path,label``
    rows (see :mod:`graft.data.csvlist`). Labels are re-indexed 0..N-1 in the order of the selection (or of
    sorted class names). ``bad_images`` (``"skip"`` or ``"fail"``) says what an unusable image does: left
    out and listed in ``ImageSet.bad``, or an error naming it.
    """
    check_policy(bad_images)
    root = Path(root)
    if not root.exists():
        raise GraftError(f"data path {root} does not exist; give an image folder (one sub-folder a class) or a built-in data set name")
    if root.is_file() and root.suffix.lower() == ".csv":
        return load_csv_set(root, classes, bad_images)
    if not root.is_dir():
        raise GraftError(f"data path {root} is a file; give the folder that holds one sub-folder a class, or a CSV of path,label rows")
    return load_folder_set(root, classes, bad_images)

"""A data set as a user names it (a built-in name, a folder, a CSV), scanned, its problems said once."""

from graft.console import warn
from graft.data.builtin import dataset_root
from graft.data.imageset import ImageSet
from graft.data.sources import load_image_set


def load_data(data: str, classes: str | None = None, bad_images: str = "skip") -> ImageSet:
    """A built-in data set name, an image folder or a CSV list, narrowed to ``classes`` (e.g. ``"7-9"``).

    Unreadable images and empty class folders are left out with a one-line warning (``bad_images="skip"``)
    or stop everything with an error naming the first one (``"fail"``).
    """
    images = load_image_set(dataset_root(data), classes, bad_images)
    if images.bad:
        path, reason = images.bad[0]
        more = f" and {len(images.bad) - 1} more" if len(images.bad) > 1 else ""
        warn(f"skipped {len(images.bad)} unreadable image(s): {path} ({reason}){more}")
    if images.empty_classes:
        warn(f"ignored class folder(s) without images: {', '.join(images.empty_classes)}")
    return images

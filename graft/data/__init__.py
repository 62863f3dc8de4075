"""Images in, tensors out: data sets, class selection, seeded splits, preprocessing and loaders."""

from graft.data.imageset import ImageSet
from graft.data.sources import load_image_set
from graft.data.split import Split, make_split
from graft.data.transforms import Preprocessing

__all__ = ["ImageSet", "Preprocessing", "Split", "load_image_set", "make_split"]

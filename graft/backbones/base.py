"""What every backbone offers the rest of graft, whatever library it comes from."""

from abc import ABC, abstractmethod
from typing import Any

from torch import nn

from graft.data.transforms import Preprocessing


class Backbone(nn.Module, ABC):
    """An image -> feature-vector network.

    Strategies see only this face: ``blocks()`` (stages from input to output, for "unfreeze the last N"),
    ``num_features`` (the head's input width), ``preprocessing`` (what the input must look like) and
    ``spec`` (a JSON-able description that rebuilds the same architecture, saved in each run).
    """

    num_features: int
    preprocessing: Preprocessing
    spec: dict[str, Any]

    @abstractmethod
    def blocks(self) -> list[nn.Module]:
        """The backbone's stages in forward order; every parameter belongs to exactly one of them."""

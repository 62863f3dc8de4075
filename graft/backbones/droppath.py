"""Stochastic depth (``--drop-path``) on a backbone already built: timm's ``DropPath`` put into its residual blocks.

timm sets stochastic depth when it builds a model (``drop_path_rate``); graft's backbones are built before
the training settings are known (a source run, a weights file, a cut at ``--layer``), so the same modules
are put in afterwards. timm's residual blocks call ``self.drop_path`` (``drop_path1``/``drop_path2`` in
transformers) on their branch before adding the shortcut, holding an ``nn.Identity`` (or ``None`` in
ResNets) where the rate is 0; each gets ``DropPath`` at a rate rising linearly from 0 at the first block
to ``rate`` at the last, as timm's own models spread ``drop_path_rate``. In inference mode ``DropPath``
passes its input through, so frozen blocks, validation, prediction and every export are unchanged, and
the saved weights are the same tensors: a run reloads without it.
"""

from timm.layers import DropPath
from torch import nn

SLOTS = ("drop_path", "drop_path1", "drop_path2")


def set_drop_path(backbone: nn.Module, rate: float) -> int:
    """Give ``backbone``'s residual blocks stochastic depth up to ``rate``; the number of blocks that have it."""
    blocks = [module for module in backbone.modules() if any(_slot(module, name) for name in SLOTS)]
    for index, block in enumerate(blocks):
        block_rate = rate * index / max(len(blocks) - 1, 1)
        for name in SLOTS:
            if _slot(block, name):
                setattr(block, name, (DropPath(block_rate) if block_rate > 0 else nn.Identity()).train(block.training))
    return len(blocks)


def _slot(module: nn.Module, name: str) -> bool:
    """Whether ``module.name`` is a stochastic-depth slot: a ``DropPath``, an identity in its place, or ResNet's ``None``."""
    if not hasattr(module, name):
        return False
    value = getattr(module, name)
    return value is None or isinstance(value, DropPath | nn.Identity)

"""Where networks run: ``--device auto|cpu|cuda|cuda:N|mps``, through torch's own device machinery.

A run directory, a checkpoint and the feature cache's entries hold CPU tensors whatever the device (see
:mod:`graft.rundir`, :mod:`graft.train.checkpoint`), so a run trained on a GPU is evaluated, continued or
exported on a machine without one. Code that runs a network asks the network where it is
(:func:`module_device`) rather than carrying a device around: the model is moved once, by whoever loads or
builds it, and every batch follows it.
"""

import re
from functools import cache

import torch
from torch import nn

from graft.console import log
from graft.errors import GraftError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def parse_device(name: object) -> torch.device | None:
    """The device ``name`` asks for (``None`` for auto), checked for form only, not against this machine.

    A saved run names the device it was trained on, which the machine reading it may lack.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise GraftError(f"unknown --device {name!r}; choose {', '.join(DEVICES)}")
    return None if name == "auto" else torch.device(name)


def check_device(name: object) -> torch.device:
    """What ``name`` means on this machine, without a word: auto is CUDA, then Apple MPS, then the CPU.

    An accelerator the machine lacks is a :class:`GraftError` naming the torch check that said so.
    """
    device = parse_device(name)
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")
    fallback = "use --device cpu or auto"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GraftError(f"--device {name}: this machine has no CUDA device (torch.cuda.is_available() is False); {fallback}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise GraftError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; {fallback}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GraftError(f"--device {name}: this machine has no Apple MPS device (torch.backends.mps.is_available() is False); {fallback}")
    return device


def resolve_device(name: object) -> torch.device:
    """:func:`check_device`, saying in one line which accelerator ``auto`` picked (nothing when it is the CPU)."""
    device = check_device(name)
    if name == "auto" and device.type != "cpu":
        _announce(device)
    return device


@cache  # once a process: a fit resolves its device again for the test split and the report
def _announce(device: torch.device) -> None:
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else "Apple GPU"
    log(f"device: {device.type} ({what}), found by --device auto; --device cpu keeps to the CPU")


def module_device(module: nn.Module) -> torch.device:
    """Where ``module`` is: its first parameter's (or buffer's) device; the CPU for a module with neither."""
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def pin_memory(device: torch.device) -> bool:
    """Whether loaders for ``device`` should pin their batches: page-locked memory lets CUDA copy while computing."""
    return device.type == "cuda"

"""Training checkpoints as one safetensors file: tensors as tensors, everything else as JSON metadata.

A checkpoint holds nested state (optimizer and scheduler state dicts, RNG states, the metrics history)
mixing tensors with numbers, strings, tuples and dicts keyed by integers. Pickle would store all of that
directly, but unpickling a file someone handed you can run code. Here every tensor goes into the
safetensors body and the rest into a JSON document in its header, with the few types JSON lacks
(tensors, tuples, non-string dict keys, NumPy arrays) spelled as small tagged objects. Loading parses
JSON and reads raw tensor bytes: a crafted file can be refused, never executed.

Tensors are saved from the CPU and load onto it, whatever device trained them: the trainer then puts them
where the run goes on (``load_state_dict`` copies into the model's device, the optimizer's state follows its
parameters), so a run started on a GPU continues on a machine without one.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from graft.errors import GraftError
from graft.rundir import save_tensors

CHECKPOINT = "checkpoint.safetensors"
FORMAT = "graft-checkpoint-1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (the previous checkpoint stays readable until the rename)."""
    tensors: dict[str, torch.Tensor] = {}
    document = _encode(state, tensors)
    save_tensors(path, tensors, metadata={"format": FORMAT, "state": json.dumps(document)})


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint`; a :class:`GraftError` for anything else."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise GraftError(f"{path} is not a graft checkpoint (no '{FORMAT}' header); start the run again without --resume")
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        state = _decode(json.loads(metadata["state"]), tensors)
    except FileNotFoundError as exc:
        raise GraftError(f"no checkpoint in {path.parent} ({path.name} is missing); start the run again without --resume") from exc
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise GraftError(f"cannot read checkpoint {path}: {exc}; it is damaged or not a graft checkpoint") from exc
    if not isinstance(state, dict):
        raise GraftError(f"cannot read checkpoint {path}: its state is not a JSON object")
    return state


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().to("cpu", copy=True)  # a copy: the model trains on while it is written
        return {"$tensor": name}
    if isinstance(value, np.ndarray):
        return {"$ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {"$items": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "$tensor" in value:
        return tensors[value["$tensor"]]
    if "$ndarray" in value:
        return np.asarray(value["$ndarray"], dtype=np.dtype(str(value["dtype"])))
    if "$tuple" in value:
        return tuple(_decode(v, tensors) for v in value["$tuple"])
    if "$items" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["$items"]}
    return {k: _decode(v, tensors) for k, v in value.items()}

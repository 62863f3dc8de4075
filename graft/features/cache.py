"""The bottleneck feature cache on disk: a backbone runs at most once per image content, ever.

An entry is one ``.npy`` file (float32, read back with ``allow_pickle=False``) named by the SHA-256 of
the image file's bytes, in a folder named by everything else that decides the features: the backbone's
architecture spec (model, layer), a hash of its weights, the preprocessing, the precision the backbone
ran in (bf16 features differ from fp32 ones in the third decimal), the device type where it is not the
CPU (a GPU's kernels and autocast give other last digits), and this format's version.
A changed image has a new content hash and is recomputed; a different backbone, weights, layer or
preprocessing lands in another folder; the same image under another path or data set is a hit.
Entries are written to a temporary file and renamed into place, so a crash never leaves half an entry,
and a full disk stops the pass with :class:`graft.errors.DiskFull`, every finished entry intact.
"""

import hashlib
import io
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from graft import distributed
from graft.atomic import replacing
from graft.backbones.base import Backbone
from graft.backbones.weights import state_hash
from graft.data.loader import make_loader
from graft.device import module_device, pin_memory
from graft.inference import forward_batches, resolve
from graft.paths import cache_dir

FORMAT = 2  # 2: JPEGs at least twice the resize side are decoded in draft mode (graft.data.images)
KEY_FILE = "key.json"


def backbone_key(backbone: Backbone, precision: str = "auto") -> dict:
    """What decides a backbone's features, as JSON: spec without its provenance, weights hash, preprocessing, precision,
    and the device type where the backbone is not on the CPU (so that the CPU's folders stay what they were)."""
    spec = {k: v for k, v in backbone.spec.items() if k != "weights"}  # where weights came from is not what they are
    device = module_device(backbone)
    resolved = resolve(precision, device)
    key = {
        "format": FORMAT,
        "spec": spec,
        "weights_sha256": state_hash(backbone),
        "preprocessing": backbone.preprocessing.to_dict(),
        # auto's long passes may run in int8 (close to fp32, not equal): never served to an explicit fp32 or bf16
        "precision": f"auto/{resolved}" if precision == "auto" else resolved,
    }
    return key if device.type == "cpu" else {**key, "device": device.type}


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` whole or not at all, under a temporary name no other process filling the cache uses."""
    with replacing(path, path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")) as tmp:
        path.parent.mkdir(exist_ok=True)
        tmp.write_bytes(data)


def _npy(array: np.ndarray) -> bytes:
    """The ``.npy`` file of ``array`` in memory: NumPy's own file writer fails on a full disk without an errno."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@dataclass
class FeatureCache:
    """The cache folder of one backbone (as it is now, where it is now: its weights are hashed on creation).

    The backbone computes on its own device; its features come back to the CPU (:func:`graft.inference.forward_batches`)
    to be written, so an entry is the same file whichever device made it.
    """

    backbone: Backbone
    precision: str = "auto"  # see graft.inference: auto is bf16 on CPUs that compute it natively
    root: Path = field(default_factory=lambda: cache_dir() / "features")
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        key = backbone_key(self.backbone, self.precision)
        text = json.dumps(key, sort_keys=True)
        self.folder = Path(self.root) / hashlib.sha256(text.encode()).hexdigest()[:24]
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / KEY_FILE).is_file():  # for people looking into the cache, not read back
            _write_atomic(self.folder / KEY_FILE, json.dumps(key, indent=2, sort_keys=True).encode())

    def entry(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def fill(self, root: Path, samples: Sequence[tuple[str, int]], batch_size: int = 64, workers: int = 0) -> list[str]:
        """Compute and store the entries ``samples`` lack (or hold damaged); their content digests, in order.

        Holds one batch of features at a time: each entry is on disk before the next batch runs, so memory
        does not grow with the number of images, and an interrupted pass keeps every finished batch.

        Under torch.distributed every rank calls this with the same samples: each content belongs to one
        rank (a contiguous share of the distinct contents, whatever the cache holds), which computes it if
        missing; after a barrier every entry is on disk for every rank to read. A rank on another machine,
        whose cache folder is not this one, computes what it still lacks itself (point ``GRAFT_HOME`` at a
        shared folder to share the work across machines too).
        """
        root = Path(root)
        digests = [file_hash(root / path) for path, _ in samples]
        first: dict[str, int] = {}  # each content's first sample: duplicates are computed once
        for i, digest in enumerate(digests):
            first.setdefault(digest, i)
        missing = {d for d in first if not self._complete(d)}
        self.hits += sum(d not in missing for d in digests)
        self.misses += sum(d in missing for d in digests)
        distributed.barrier()  # every rank has looked before any writes: the same counts everywhere
        self._compute(root, samples, digests, [first[d] for d in distributed.shard(list(first)) if d in missing], batch_size, workers)
        distributed.barrier()
        if distributed.active():
            self._compute(root, samples, digests, sorted(first[d] for d in missing if not self._complete(d)), batch_size, workers)
        return digests

    def _compute(
        self, root: Path, samples: Sequence[tuple[str, int]], digests: list[str], indices: list[int], batch_size: int, workers: int
    ) -> None:
        """The entries of ``samples[i]`` for ``i`` in ``indices``, computed and written batch by batch."""
        if not indices:
            return
        pinned = pin_memory(module_device(self.backbone))
        loader = make_loader(
            root, [samples[i] for i in indices], self.backbone.preprocessing, batch_size=batch_size, workers=workers, pin_memory=pinned
        )
        rows = (row for outputs, _ in forward_batches(self.backbone, loader, self.precision) for row in outputs.numpy())
        for i, row in zip(indices, rows, strict=True):
            _write_atomic(self.entry(digests[i]), _npy(row))

    def features(
        self, root: Path, samples: Sequence[tuple[str, int]], batch_size: int = 64, workers: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, labels)`` for ``samples`` in order: cached entries read, the rest computed and stored."""
        digests = self.fill(root, samples, batch_size, workers)
        found = {d: np.load(self.entry(d), allow_pickle=False) for d in set(digests)}
        features = torch.from_numpy(np.stack([found[d] for d in digests])) if samples else torch.empty(0, self.backbone.num_features)
        return features, torch.tensor([label for _, label in samples], dtype=torch.long)

    def _complete(self, digest: str) -> bool:
        """Whether the entry exists with as many bytes as its header promises (a torn write has fewer)."""
        try:
            with self.entry(digest).open("rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(fh)
                return os.fstat(fh.fileno()).st_size == fh.tell() + int(np.prod(shape)) * dtype.itemsize and not dtype.hasobject
        except (OSError, ValueError):
            return False


def cached_features(
    backbone: Backbone, root: Path, samples: Sequence[tuple[str, int]], batch_size: int = 64, workers: int = 0, precision: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, labels)`` of ``samples`` (paths relative to ``root``) through the disk cache."""
    return FeatureCache(backbone, precision).features(root, samples, batch_size, workers)

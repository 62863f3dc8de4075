"""The bottleneck feature cache on disk: a backbone runs at most once per image content, ever.

An entry is one ``.npy`` file (float32, read back with ``allow_pickle=False``) named by the SHA-256 of
the image file's bytes, in a folder named by everything else that decides the features: the backbone's
architecture spec (model, layer), a hash of its weights, the preprocessing, and this format's version.
A changed image has a new content hash and is recomputed; a different backbone, weights, layer or
preprocessing lands in another folder; the same image under another path or data set is a hit.
Entries are written to a temporary file and renamed into place, so a crash never leaves half an entry.
"""

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from graft.backbones.base import Backbone
from graft.backbones.weights import state_hash
from graft.data.loader import make_loader
from graft.features import extract
from graft.paths import cache_dir

FORMAT = 1
KEY_FILE = "key.json"


def backbone_key(backbone: Backbone) -> dict:
    """What decides a backbone's features, as JSON: spec without its provenance, weights hash, preprocessing."""
    spec = {k: v for k, v in backbone.spec.items() if k != "weights"}  # where weights came from is not what they are
    return {"format": FORMAT, "spec": spec, "weights_sha256": state_hash(backbone), "preprocessing": backbone.preprocessing.to_dict()}


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class FeatureCache:
    """The cache folder of one backbone (as it is now: its weights are hashed on creation)."""

    backbone: Backbone
    root: Path = field(default_factory=lambda: cache_dir() / "features")
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        key = backbone_key(self.backbone)
        text = json.dumps(key, sort_keys=True)
        self.folder = Path(self.root) / hashlib.sha256(text.encode()).hexdigest()[:24]
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / KEY_FILE).is_file():  # for people looking into the cache, not read back
            tmp = self.folder / f".{KEY_FILE}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(key, indent=2, sort_keys=True))
            os.replace(tmp, self.folder / KEY_FILE)

    def entry(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def features(self, root: Path, samples: Sequence[tuple[str, int]], batch_size: int = 64, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, labels)`` for ``samples`` in order: cached entries read, the rest computed and stored."""
        root = Path(root)
        digests = [file_hash(root / path) for path, _ in samples]
        found: dict[str, np.ndarray] = {}
        for digest in set(digests):
            try:
                found[digest] = np.load(self.entry(digest), allow_pickle=False)
            except (FileNotFoundError, ValueError, OSError):
                pass  # missing or unreadable: compute it again
        todo = [i for i, d in enumerate(digests) if d not in found]
        self.hits += len(samples) - len(todo)
        self.misses += len(todo)
        if todo:
            # First occurrence of each missing content only: duplicates are computed once.
            first = list({digests[i]: i for i in reversed(todo)}.values())
            loader = make_loader(root, [samples[i] for i in first], self.backbone.preprocessing, batch_size=batch_size, workers=workers)
            computed, _ = extract(self.backbone, loader)
            for i, row in zip(first, computed.numpy(), strict=True):
                path = self.entry(digests[i])
                path.parent.mkdir(exist_ok=True)
                _write_atomic(path, row)
                found[digests[i]] = row
        features = torch.from_numpy(np.stack([found[d] for d in digests])) if samples else torch.empty(0, self.backbone.num_features)
        return features, torch.tensor([label for _, label in samples], dtype=torch.long)


def cached_features(
    backbone: Backbone, root: Path, samples: Sequence[tuple[str, int]], batch_size: int = 64, workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, labels)`` of ``samples`` (paths relative to ``root``) through the disk cache."""
    return FeatureCache(backbone).features(root, samples, batch_size, workers)

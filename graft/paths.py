"""Where graft keeps what it generates once and reuses: data sets and feature caches."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """graft's cache root: ``$GRAFT_HOME`` if set, else ``~/.cache/graft``.

    Tests point ``GRAFT_HOME`` at a temporary folder so that they never touch a user's cache.
    """
    root = os.environ.get("GRAFT_HOME") or Path.home() / ".cache" / "graft"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path

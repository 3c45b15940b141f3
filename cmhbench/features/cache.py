"""The feature cache: one safetensors file per (dataset, content revision, modality, encoder).

Layout: ``ROOT/features/<dataset>/<revision>/<modality>-<encoder id>.safetensors`` holding one
``(n, d)`` float32 tensor ``features`` and string metadata (encoder description, item count,
cmhbench version). ``<revision>`` digests the raw content (pixels, texts, labels), so changed data
never reads stale features; ``<encoder id>`` names the model and its weights (a checkpoint's
hash, a random seed, a Hub commit). Files are written to a temporary name and renamed, so a
crash never leaves a partial file; safetensors holds no code, unlike pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

import cmhbench
from cmhbench.files import temp_beside

CACHE_ENV = "CMHBENCH_CACHE"
KEY = "features"


def default_root() -> Path:
    """``$CMHBENCH_CACHE``, else ``~/.cache/cmhbench``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "cmhbench"


class FeatureCache:
    """Reads and writes cached feature matrices under ``root`` (default :func:`default_root`)."""

    def __init__(self, root: Optional[Path] = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def path(self, dataset: str, revision: str, modality: str, encoder_id: str) -> Path:
        """Where the features of one (dataset, revision, modality, encoder) live."""
        return self.root / "features" / dataset / revision / f"{modality}-{encoder_id}.safetensors"

    def load(self, path: Path, n_items: int) -> Optional[tuple[np.ndarray, dict[str, Any]]]:
        """``(features, metadata)`` when ``path`` holds ``n_items`` rows; None when absent or unreadable."""
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                features = f.get_tensor(KEY)
        except Exception:  # noqa: BLE001 - a damaged file is recomputed
            return None
        if features.ndim != 2 or features.shape[0] != n_items or features.dtype != np.float32:
            return None
        return features, {k: json.loads(v) for k, v in meta.items()}

    def save(self, path: Path, features: np.ndarray, metadata: dict[str, Any]) -> Path:
        """Write ``features`` ``(n, d)`` float32 with ``metadata`` (JSON-able values) atomically."""
        from safetensors.numpy import save_file

        fd, tmp = temp_beside(path)
        os.close(fd)
        meta = {k: json.dumps(v) for k, v in {**metadata, "cmhbench": cmhbench.__version__}.items()}
        try:
            save_file({KEY: np.ascontiguousarray(features, dtype=np.float32)}, tmp, metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

"""Text encoders through sentence-transformers: a Hugging Face Hub name or a local model folder.

A Hub name (``sentence-transformers/all-MiniLM-L6-v2``; a bare name gets the
``sentence-transformers/`` prefix, as sentence-transformers does) is resolved with
``huggingface_hub.snapshot_download``, which honours ``HF_HUB_OFFLINE``; its revision is the Hub
commit. A local folder's revision is a SHA-256 over its files. Embeddings are whatever the
model's own pipeline produces (all-MiniLM-L6-v2: 384-d, mean-pooled, L2-normalised).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cmhbench.errors import DataError, DownloadError
from cmhbench.features.image import safe_id


def folder_sha256(folder: Path) -> str:
    """Hex SHA-256 over every file below ``folder`` (relative names and bytes, in sorted order)."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode("utf-8") + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def resolve_model(name: str) -> tuple[Path, str]:
    """``(local folder, revision)`` of a sentence-transformers model name or folder."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path, f"folder sha256 {folder_sha256(path)}"
    if path.exists() or name.startswith((".", "/", "~")):
        raise DataError(f"--text-encoder {name!r}: not a model folder")
    repo = name if "/" in name else f"sentence-transformers/{name}"
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id=repo))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, http errors
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        raise DownloadError(
            f"cannot get sentence-transformers model {repo!r} from the Hugging Face Hub ({type(exc).__name__}: {first}); "
            "without network pass a local model folder to --text-encoder"
        ) from None
    return folder, f"hub {repo}@{folder.name}"


class SentenceTextEncoder:
    """A sentence-transformers model as a frozen text feature extractor."""

    kind = "sentence-transformers"

    def __init__(self, name: str, device: torch.device | str = "cpu") -> None:
        self.folder, self.revision = resolve_model(name)
        self.name = name
        self.device = str(device)
        self.model = None
        self.dim: int | None = None
        label = self.folder.name if Path(name).expanduser().is_dir() else name
        self.id = safe_id(f"st-{label}-{hashlib.sha256(self.revision.encode()).hexdigest()[:12]}")

    def load(self) -> None:
        """Load the model; done on first use, so that a cache hit costs no model loading."""
        if self.model is not None:
            return
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            self.model = SentenceTransformer(str(self.folder), device=self.device)
        except Exception as exc:  # noqa: BLE001 - broken or incomplete model folders
            text = str(exc).strip()
            raise DataError(f"--text-encoder {self.name!r}: cannot load the model ({type(exc).__name__}: "
                            f"{text.splitlines()[0] if text else ''})") from None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def describe(self) -> dict[str, Any]:
        """What a result records about this encoder."""
        return {"kind": self.kind, "model": self.name, "revision": self.revision, "dim": self.dim}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 embeddings."""
        self.load()
        out = self.model.encode(list(texts), batch_size=max(1, len(texts)), convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

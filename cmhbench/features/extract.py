"""Batched feature extraction with a cache: a :class:`RawData` becomes a :class:`CrossModalData`.

Every item's features are computed once per (dataset, content revision, encoder) and stored by
:class:`~cmhbench.features.cache.FeatureCache`; later runs read them back without loading the
model. Extraction runs on the GPU when one is present (``device="auto"``), in batches, with a
progress bar per modality.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from cmhbench.data.dataset import CrossModalData, RawData
from cmhbench.errors import ConfigError, DataError
from cmhbench.features.bow import TagBagOfWords, parse_bow
from cmhbench.features.cache import FeatureCache
from cmhbench.features.image import PRETRAINED, TimmImageEncoder
from cmhbench.features.text import SentenceTextEncoder
from cmhbench.interfaces import NullProgress, Progress

DEFAULT_IMAGE_ENCODER = "vgg19.tv_in1k"
DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class FeatureRequest:
    """How raw items become features.

    ``image_encoder``: a timm model name (default :data:`DEFAULT_IMAGE_ENCODER`, VGG19 whose 4096-d
    fc7 output is what UGACH and UCCH use); ``image_weights``: ``pretrained``, ``random`` or a
    checkpoint path; ``text_encoder``: a sentence-transformers name or folder (default
    :data:`DEFAULT_TEXT_ENCODER`), or ``bow`` / ``bow:min=N`` for a tag bag-of-words; used only when
    the dataset has raw texts. ``batch_size`` items per forward pass; ``device`` auto, cpu or cuda;
    ``cache_dir`` the cache root (default ``$CMHBENCH_CACHE`` or ``~/.cache/cmhbench``); ``seed``
    initialises random weights.
    """

    image_encoder: Optional[str] = None
    image_weights: str = PRETRAINED
    text_encoder: Optional[str] = None
    batch_size: int = 64
    device: str = "auto"
    cache_dir: Optional[Path] = None
    seed: int = 0


@dataclass(frozen=True)
class Extraction:
    """What happened to one modality: ``status`` is ``extracted``, ``cached`` or ``given`` (the
    files already held features); ``seconds`` and ``items_per_s`` time the extraction (0 when cached)."""

    modality: str
    encoder: str
    items: int
    dim: int
    status: str
    seconds: float
    path: Optional[Path]

    @property
    def items_per_s(self) -> float:
        """Throughput of the extraction (0 when nothing was computed)."""
        return self.items / self.seconds if self.status == "extracted" and self.seconds > 0 else 0.0


def pick_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a :class:`ConfigError`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def text_encoder(spec: str, texts: Sequence[str], device: torch.device) -> Any:
    """The text encoder named by ``spec``: ``bow[:min=N]`` fitted on ``texts``, else sentence-transformers."""
    if spec == "bow" or spec.startswith("bow:"):
        return TagBagOfWords(texts, parse_bow(spec))
    return SentenceTextEncoder(spec, device=device)


def encode_all(
    encoder: Any, n_items: int, batch: Callable[[range], Sequence[Any]], batch_size: int,
    progress: Progress, description: str,
) -> np.ndarray:
    """Run ``encoder.encode`` over items ``0..n_items-1`` in batches (``batch(range)`` gives the inputs)."""
    starts = range(0, n_items, batch_size)
    parts = []
    for start in progress.track(starts, len(starts), description):
        parts.append(encoder.encode(batch(range(start, min(start + batch_size, n_items)))))
    out = np.concatenate(parts).astype(np.float32, copy=False)
    bad = ~np.isfinite(out)
    if bad.any():
        raise DataError(f"{description}: the encoder produced {int(bad.sum())} NaN or infinite values")
    return out


def cached_features(
    cache: FeatureCache, dataset: str, revision: str, modality: str, encoder: Any, n_items: int,
    batch: Callable[[range], Sequence[Any]], batch_size: int, progress: Progress,
) -> tuple[np.ndarray, Extraction, dict[str, Any]]:
    """Features of one modality from the cache, or extracted and stored; with the encoder's description."""
    path = cache.path(dataset, revision, modality, encoder.id)
    hit = cache.load(path, n_items)
    if hit is not None:
        features, meta = hit
        described = meta.get("encoder", {})
        return features, Extraction(modality, encoder.id, n_items, features.shape[1], "cached", 0.0, path), described
    if hasattr(encoder, "load"):
        encoder.load()  # model loading is not part of the timed extraction
    t0 = time.perf_counter()
    features = encode_all(encoder, n_items, batch, batch_size, progress, f"{modality} features ({encoder.id})")
    seconds = time.perf_counter() - t0
    described = encoder.describe()
    cache.save(path, features, {"encoder": described, "dataset": dataset, "revision": revision, "items": n_items,
                                "seconds": seconds})
    return features, Extraction(modality, encoder.id, n_items, features.shape[1], "extracted", seconds, path), described


def materialize(
    raw: RawData, request: FeatureRequest = FeatureRequest(), progress: Progress = NullProgress(),
) -> tuple[CrossModalData, list[Extraction]]:
    """Features for every item of ``raw`` (from the cache when present) as a :class:`CrossModalData`.

    The result's ``details["features"]`` records each encoder (model, weights, revision) and
    ``details["raw_revision"]`` the raw content's revision.
    """
    if request.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {request.batch_size}")
    device = pick_device(request.device)
    cache = FeatureCache(request.cache_dir)
    revision = raw.revision
    n = len(raw)
    image_enc = TimmImageEncoder(
        request.image_encoder or DEFAULT_IMAGE_ENCODER, request.image_weights, device=device, seed=request.seed
    )
    image, image_report, image_desc = cached_features(
        cache, raw.name, revision, "image", image_enc, n, raw.images.load, request.batch_size, progress
    )
    reports = [image_report]
    described = {"image": image_desc}
    if raw.texts is not None:
        texts = raw.texts
        enc = text_encoder(request.text_encoder or DEFAULT_TEXT_ENCODER, texts, device)
        text, text_report, text_desc = cached_features(
            cache, raw.name, revision, "text", enc, n, lambda r: [texts[i] for i in r], request.batch_size, progress
        )
        reports.append(text_report)
        described["text"] = text_desc
    else:
        text = raw.text
        reports.append(Extraction("text", "(given by the files)", n, text.shape[1], "given", 0.0, None))
        described["text"] = {"kind": "given"}
    data = CrossModalData(
        name=raw.name,
        image=image,
        text=text,
        labels=raw.labels,
        splits=raw.splits,
        origin=raw.origin,
        class_names=raw.class_names,
        details={**raw.details, "features": described, "raw_revision": revision},
    )
    return data, reports

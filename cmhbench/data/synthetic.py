"""A deterministic synthetic dataset shaped like MIRFlickr-25K; needs no files.

Every item gets 1-5 of 24 labels (frequencies skewed as in MIRFlickr), a latent vector mixing its
labels' prototypes with item-specific noise, a 512-d non-negative "CNN-like" image feature and a
1386-d binary tag vector (about ten tags per item) drawn from that latent. The two modalities see
the latent through different random maps and independent noise, so neither view alone recovers
the labels exactly. Generated with a fixed seed by numpy's PCG64 generator; values that pass
through BLAS are rounded (features to 1e-4, tag logits to 1e-6) so that last-bit differences
between BLAS builds do not change the arrays, whose checksum is the dataset revision. Results on it are always marked synthetic; it exists to run everything offline
in seconds, not to rank methods.

Protocol ``synthetic``: 6000 items; 1000 random queries, the other 5000 the database, 1000 of
them (random) the training set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from cmhbench.data.dataset import CrossModalData, DatasetSpec, Splits

N_ITEMS = 6000
N_QUERY = 1000
N_TRAIN = 1000
N_CLASSES = 24
IMAGE_DIM = 512
TEXT_DIM = 1386
LATENT_DIM = 64
SEED = 2025
TAGS_PER_ITEM = 10.0


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    freq = 1.0 / np.arange(1, N_CLASSES + 1) ** 0.7
    freq = freq / freq.sum()
    counts = np.clip(1 + rng.poisson(0.9, size=n), 1, 5)
    # Gumbel top-k: the first k classes of each row are a draw without replacement, weighted by freq.
    keys = np.log(freq) + rng.gumbel(size=(n, N_CLASSES))
    order = np.argsort(-keys, axis=1)
    labels = np.zeros((n, N_CLASSES), dtype=np.uint8)
    chosen = np.arange(N_CLASSES)[None, :] < counts[:, None]
    np.put_along_axis(labels, order, chosen.astype(np.uint8), axis=1)
    return labels


def generate(n_items: int = N_ITEMS, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image (n, 512) float32, text (n, 1386) float32 0/1, labels (n, 24) uint8)``, deterministic."""
    rng = np.random.default_rng(seed)
    labels = _labels(rng, n_items)
    prototypes = rng.standard_normal((N_CLASSES, LATENT_DIM))
    mix = labels / labels.sum(1, keepdims=True)
    latent = mix @ prototypes + 0.8 * rng.standard_normal((n_items, LATENT_DIM))

    image_map = rng.standard_normal((LATENT_DIM, IMAGE_DIM)) / np.sqrt(LATENT_DIM)
    image = np.maximum(latent @ image_map + 1.3 * rng.standard_normal((n_items, IMAGE_DIM)), 0.0)
    image = np.round(image, 4)

    text_map = rng.standard_normal((LATENT_DIM, TEXT_DIM)) / np.sqrt(LATENT_DIM)
    logits = np.round(2.5 * (latent + 0.5 * rng.standard_normal(latent.shape)) @ text_map, 6)
    logits -= np.quantile(logits, 1.0 - TAGS_PER_ITEM / TEXT_DIM, axis=1, keepdims=True)
    tags = rng.random(logits.shape) < 1.0 / (1.0 + np.exp(-4.0 * logits))
    tags[np.arange(n_items), logits.argmax(1)] = True
    return image.astype(np.float32), tags.astype(np.float32), labels


def synthetic_splits(n_items: int = N_ITEMS, seed: int = SEED) -> Splits:
    """The fixed ``synthetic`` protocol: 1000 queries, 5000 database, 1000 training from the database."""
    perm = np.random.default_rng(seed + 1).permutation(n_items).astype(np.int64)
    query, database = perm[:N_QUERY], np.sort(perm[N_QUERY:])
    train = np.sort(np.random.default_rng(seed + 2).choice(database, size=N_TRAIN, replace=False))
    return Splits(query=query, database=database, train=train, protocol="synthetic", seed=seed)


def load_synthetic(data_dir: Optional[Path] = None) -> CrossModalData:
    """The synthetic MIRFlickr-shaped dataset (``data_dir`` is ignored)."""
    image, text, labels = generate()
    return CrossModalData(
        name="synthetic",
        image=image,
        text=text,
        labels=labels,
        splits=synthetic_splits(),
        synthetic=True,
        origin="generated (cmhbench.data.synthetic, seed 2025)",
        class_names=tuple(f"concept{i:02d}" for i in range(N_CLASSES)),
    )


SYNTHETIC = DatasetSpec(
    name="synthetic",
    load=load_synthetic,
    description="SYNTHETIC, generated offline, shaped like MIRFlickr-25K: 6000 pairs, 24 multi-hot labels, "
    "512-d image and 1386-d binary tag features; for smoke runs, not for ranking methods",
    paper="(synthetic; no paper)",
    synthetic=True,
    default_protocol="synthetic",
    items=N_ITEMS,
    classes=N_CLASSES,
)

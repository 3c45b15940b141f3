"""Datasets as the harness sees them: aligned features, multi-hot labels and named splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from cmhbench.errors import DataError


@dataclass(frozen=True)
class Splits:
    """Index lists (int64, into the dataset's items) of one split protocol.

    ``query`` items are never trained on; ``database`` items are ranked for each query; ``train``
    items are what methods learn from (they may overlap the database, as in every CMH protocol,
    but never the queries). ``protocol`` names the rule that made them and ``seed`` its seed.
    """

    query: np.ndarray
    database: np.ndarray
    train: np.ndarray
    protocol: str
    seed: Optional[int] = None

    def checksum(self) -> str:
        """SHA-256 (first 16 hex digits) of the three index lists, in order."""
        h = hashlib.sha256()
        for name in ("query", "database", "train"):
            arr = np.ascontiguousarray(getattr(self, name), dtype=np.int64)
            h.update(name.encode())
            h.update(arr.tobytes())
        return h.hexdigest()[:16]

    def validate(self, n_items: int) -> None:
        """Check ranges, uniqueness and that queries touch neither training nor database."""
        for name in ("query", "database", "train"):
            idx = getattr(self, name)
            if idx.ndim != 1 or idx.size == 0:
                raise DataError(f"split {self.protocol!r}: {name} must be a non-empty 1-D index list")
            if idx.min() < 0 or idx.max() >= n_items:
                raise DataError(f"split {self.protocol!r}: {name} indexes outside 0..{n_items - 1}")
            if np.unique(idx).size != idx.size:
                raise DataError(f"split {self.protocol!r}: {name} holds repeated items")
        for other in ("train", "database"):
            if np.intersect1d(self.query, getattr(self, other)).size:
                raise DataError(f"split {self.protocol!r}: query items also appear in {other}")

    def sizes(self) -> dict[str, int]:
        """Number of items per split."""
        return {"query": int(self.query.size), "database": int(self.database.size), "train": int(self.train.size)}


@dataclass(frozen=True)
class CrossModalData:
    """A loaded dataset: ``image`` ``(N, d_i)`` and ``text`` ``(N, d_t)`` float32 features, row
    ``k`` of each describing item ``k``; ``labels`` ``(N, c)`` uint8 multi-hot; ``splits`` of its
    protocol. ``synthetic`` is True for generated data (always shown as such); ``origin`` says
    where it came from (a path or "generated").
    """

    name: str
    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray
    splits: Splits
    synthetic: bool = False
    origin: str = ""
    class_names: tuple[str, ...] = ()
    _revision: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.image.shape[0]
        if self.text.shape[0] != n or self.labels.shape[0] != n:
            raise DataError(
                f"{self.name}: image, text and labels hold different numbers of items "
                f"({n}, {self.text.shape[0]}, {self.labels.shape[0]})"
            )
        self.splits.validate(n)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @property
    def revision(self) -> str:
        """SHA-256 (first 16 hex digits) of the features and labels: the data's content revision."""
        if "sha" not in self._revision:
            h = hashlib.sha256()
            for arr in (self.image, self.text, self.labels):
                a = np.ascontiguousarray(arr)
                h.update(str((a.shape, a.dtype.str)).encode())
                h.update(a.tobytes())
            self._revision["sha"] = h.hexdigest()[:16]
        return self._revision["sha"]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary recorded in every result."""
        return {
            "name": self.name,
            "synthetic": self.synthetic,
            "origin": self.origin,
            "revision": self.revision,
            "items": len(self),
            "image_dim": int(self.image.shape[1]),
            "text_dim": int(self.text.shape[1]),
            "classes": int(self.labels.shape[1]),
            "protocol": self.splits.protocol,
            "split_seed": self.splits.seed,
            "split_checksum": self.splits.checksum(),
            "split_sizes": self.splits.sizes(),
        }


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    ``load(data_dir)`` returns a :class:`CrossModalData` (``data_dir`` is the ``--data-dir``
    option or None); it raises :class:`~cmhbench.errors.DataError` for missing or bad files.
    ``files`` lists the file names it looks for, ``paper`` cites the dataset.
    """

    name: str
    load: Callable[[Optional[Path]], CrossModalData]
    description: str
    paper: str = ""
    files: tuple[str, ...] = ()
    synthetic: bool = False
    source: str = ""
    version: str = ""

    def metadata(self) -> dict[str, Any]:
        """A JSON-ready description (``cmhbench list --json``)."""
        return {
            "name": self.name,
            "kind": "dataset",
            "paper": self.paper,
            "description": self.description,
            "files": list(self.files),
            "synthetic": self.synthetic,
            "source": self.source,
            "version": self.version,
        }

"""Datasets as the harness sees them: aligned features, multi-hot labels and named splits."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, Union

import numpy as np

from cmhbench.errors import DataError, FilesNotFoundError


@dataclass(frozen=True)
class Splits:
    """Index lists (int64, into the dataset's items) of one split protocol.

    ``query`` items are never trained on; ``database`` items are ranked for each query; ``train``
    items are what methods learn from (they may overlap the database, as in every CMH protocol,
    but never the queries). The order of ``database`` is the order in which equal-distance items
    are ranked. ``protocol`` names the rule that made them (with its sizes when they differ from
    the defaults, e.g. ``dcmh-query100-train400``), ``version`` its version, ``seed`` its seed
    (None for rules that draw nothing at random), ``rule`` the rule in words and ``params`` its
    sizes (see :mod:`cmhbench.data.protocols`).
    """

    query: np.ndarray
    database: np.ndarray
    train: np.ndarray
    protocol: str
    seed: Optional[int] = None
    version: int = 1
    rule: str = ""
    params: dict = field(default_factory=dict)

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
    details: dict = field(default_factory=dict, compare=False)
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

    def with_splits(self, splits: Splits) -> "CrossModalData":
        """The same items under other splits (validated against the item count)."""
        return dataclasses.replace(self, splits=splits, _revision=dict(self._revision))

    @property
    def revision(self) -> str:
        """SHA-256 (first 16 hex digits) of the features and labels: the data's content revision."""
        if "sha" not in self._revision:
            h = hashlib.sha256()
            for arr in (self.image, self.text, self.labels):
                h.update(str((arr.shape, arr.dtype.str)).encode())
                _hash_rows(h, arr)
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
            "protocol_version": self.splits.version,
            "protocol_rule": self.splits.rule,
            "protocol_params": dict(self.splits.params),
            "split_seed": self.splits.seed,
            "split_checksum": self.splits.checksum(),
            "split_sizes": self.splits.sizes(),
            "details": dict(self.details),
        }


class ImageSource(Protocol):
    """Raw images of a dataset's items, read on demand (see :mod:`cmhbench.data.images`)."""

    def __len__(self) -> int:
        """Number of images."""
        ...

    def load(self, indices: Sequence[int]) -> list:
        """The images of ``indices`` as RGB ``PIL.Image`` objects, in that order."""
        ...

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the images' content, stable across machines."""
        ...


@dataclass(frozen=True)
class RawData:
    """A dataset whose images (and possibly texts) are not features yet.

    ``images`` gives the ``N`` items' pixels; the text side is either ``text``, ``(N, d)`` float32
    features the files already hold (e.g. a tag bag-of-words), or ``texts``, ``N`` strings for a
    text encoder. ``labels``, ``splits``, ``origin``, ``class_names`` and ``details`` are as in
    :class:`CrossModalData`. :func:`cmhbench.features.extract.materialize` turns it into one.
    """

    name: str
    images: Any
    labels: np.ndarray
    splits: Splits
    text: Optional[np.ndarray] = None
    texts: Optional[tuple[str, ...]] = None
    origin: str = ""
    class_names: tuple[str, ...] = ()
    details: dict = field(default_factory=dict, compare=False)
    _revision: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.images)
        if (self.text is None) == (self.texts is None):
            raise DataError(f"{self.name}: give either text features or raw texts")
        n_text = self.text.shape[0] if self.text is not None else len(self.texts)
        if n_text != n or self.labels.shape[0] != n:
            raise DataError(
                f"{self.name}: images, texts and labels hold different numbers of items ({n}, {n_text}, {self.labels.shape[0]})"
            )
        self.splits.validate(n)

    def __len__(self) -> int:
        return len(self.images)

    def with_splits(self, splits: Splits) -> "RawData":
        """The same items under other splits (validated against the item count)."""
        return dataclasses.replace(self, splits=splits, _revision=dict(self._revision))

    @property
    def revision(self) -> str:
        """SHA-256 (first 16 hex digits) of images, texts and labels: the raw content's revision."""
        if "sha" not in self._revision:
            h = hashlib.sha256()
            h.update(self.images.fingerprint().encode())
            if self.text is not None:
                a = np.ascontiguousarray(self.text)
                h.update(str((a.shape, a.dtype.str)).encode())
                h.update(a.tobytes())
            else:
                for t in self.texts:
                    h.update(t.encode("utf-8"))
                    h.update(b"\0")
            h.update(np.ascontiguousarray(self.labels).tobytes())
            self._revision["sha"] = h.hexdigest()[:16]
        return self._revision["sha"]


Loaded = Union[CrossModalData, RawData]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    ``load(data_dir)`` returns a :class:`CrossModalData`, or a :class:`RawData` when the files hold
    pixels (``data_dir`` is the ``--data-dir`` option or None); it raises
    :class:`~cmhbench.errors.DataError` for missing or bad files. ``load_raw(data_dir)``, where
    given, prefers the layouts with pixels (used when an image encoder is asked for).
    ``files`` lists the file names it looks for, ``layouts`` the
    :class:`~cmhbench.data.locate.FileLayout` forms it reads (in order of preference), ``subdir``
    the folder below ``$CMHBENCH_DATA``, ``paper`` cites the dataset. ``default_protocol`` names
    the split protocol ``load`` applies; ``protocol_params`` maps a protocol name to the sizes this
    dataset uses with it (e.g. ``{"ucch": {"query": 2100}}``). ``sources`` are the public
    addresses ``cmhbench data fetch`` knows (:class:`~cmhbench.data.fetch.Source`). ``items`` and
    ``classes`` are the expected counts after the usual filtering (None where they vary).
    ``protocol_aware`` loaders take a ``protocol=`` keyword (a selection such as ``"dcmh"`` or
    ``"dcmh:query=100,train=400"``) and split with it; the splits of other loaders are replaced
    after loading (:meth:`open`).
    """

    name: str
    load: Callable[[Optional[Path]], Loaded]
    description: str
    paper: str = ""
    files: tuple[str, ...] = ()
    synthetic: bool = False
    source: str = ""
    version: str = ""
    subdir: str = ""
    layouts: tuple = ()
    default_protocol: str = ""
    protocol_params: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    load_raw: Optional[Callable[[Optional[Path]], Loaded]] = None
    sources: tuple = ()
    items: Optional[int] = None
    classes: Optional[int] = None
    protocol_aware: bool = False

    def open(self, data_dir: Optional[Path] = None, protocol: Optional[str] = None, raw: bool = False) -> Loaded:
        """Load the dataset under ``protocol`` (None: its default); ``raw`` prefers pixel layouts and
        falls back to the other layouts when no pixel files are there (a broken pixel file is an
        error, not a reason to fall back). Missing files raise a :class:`FilesNotFoundError` that
        says how to get them."""
        try:
            return self._open(data_dir, protocol, raw)
        except FilesNotFoundError as exc:
            raise FilesNotFoundError(f"{exc}; {self.how_to_get()}") from None

    def how_to_get(self) -> str:
        """One sentence on how to obtain the dataset's files."""
        if self.sources:
            return f"`cmhbench data fetch {self.name}` downloads them (`cmhbench data info {self.name}` lists the files)"
        return (f"`cmhbench data info {self.name}` lists the files it needs; they have no public address "
                f"`cmhbench data fetch` can download from, so place them by hand")

    def _open(self, data_dir: Optional[Path], protocol: Optional[str], raw: bool) -> Loaded:
        if raw and self.load_raw is not None:
            try:
                return self._open_with(self.load_raw, data_dir, protocol)
            except FilesNotFoundError as pixel_error:
                try:
                    return self._open_with(self.load, data_dir, protocol)
                except FilesNotFoundError:
                    raise pixel_error from None
        return self._open_with(self.load, data_dir, protocol)

    def _open_with(self, loader: Callable, data_dir: Optional[Path], protocol: Optional[str]) -> Loaded:
        from cmhbench.data.protocols import PROTOCOLS, resolve

        if protocol is None or (protocol == self.default_protocol and protocol not in PROTOCOLS):
            return loader(data_dir)  # the default, possibly a split the files define (wiki)
        if self.protocol_aware:
            return loader(data_dir, protocol=protocol)

        data = loader(data_dir)
        return data.with_splits(resolve(protocol, self.protocol_params).splits(data.labels))

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
            "items": self.items,
            "classes": self.classes,
            "default_protocol": self.default_protocol,
            "protocol_params": {k: dict(v) for k, v in self.protocol_params.items()},
            "layouts": [{"name": l.name, "files": list(l.files), "holds": l.holds} for l in self.layouts],
            "fetchable": bool(self.sources),
        }


def _hash_rows(h: "hashlib._Hash", arr: np.ndarray, block_bytes: int = 1 << 26) -> None:
    """Feed ``h`` the C-order bytes of ``arr`` (what ``np.ascontiguousarray(arr).tobytes()`` gives) in row
    blocks of about ``block_bytes``, without a copy of the whole matrix: a C-contiguous array is hashed in
    place, other layouts one block at a time."""
    if arr.ndim == 0 or arr.shape[0] == 0:
        h.update(np.ascontiguousarray(arr).tobytes())
        return
    row_bytes = max(1, arr[:1].nbytes)
    step = max(1, block_bytes // row_bytes)
    for start in range(0, arr.shape[0], step):
        block = arr[start:start + step]
        h.update(memoryview(block) if block.flags.c_contiguous else np.ascontiguousarray(block).tobytes())

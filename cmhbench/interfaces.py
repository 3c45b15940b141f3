"""The contracts between the harness and method plugins.

A *teacher* learns hash functions without labels; a *strategy* turns a trained teacher (or, for
the supervised upper bound, the labels) into a :class:`Supervision`, an n x n similarity over the
training pairs that a :class:`SimilarityOperator` computes block by block (or a dense matrix where n
is small); a *student* learns hash functions from that supervision, reading blocks of it. Both teachers and students expose ``encode``, whose real-valued
output is turned into ``{-1,+1}`` codes by ``sign`` (with ``sign(0) = +1``) in the harness.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Protocol, TypeVar, runtime_checkable

from cmhbench.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

T = TypeVar("T")


class Modality(str, enum.Enum):
    """The two sides of a cross-modal pair."""

    IMAGE = "image"
    TEXT = "text"


@dataclass(frozen=True)
class PairedFeatures:
    """Row-aligned features of ``n`` image-text pairs.

    ``image`` is ``(n, d_image)`` float32, ``text`` is ``(n, d_text)`` float32, both on the run's
    device. ``labels`` is ``(n, c)`` multi-hot float32 and is ``None`` for everything except
    strategies that declare ``uses_labels`` (the supervised upper bound).
    """

    image: Tensor
    text: Tensor
    labels: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.image.ndim != 2 or self.text.ndim != 2:
            raise ValueError("image and text features must be 2-D (items x dimensions)")
        if self.image.shape[0] != self.text.shape[0]:
            raise ValueError(
                f"image and text features hold different numbers of items "
                f"({self.image.shape[0]} vs {self.text.shape[0]})"
            )
        if self.labels is not None and self.labels.shape[0] != self.image.shape[0]:
            raise ValueError("labels and features hold different numbers of items")

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def get(self, modality: Modality) -> Tensor:
        """The ``(n, d)`` feature matrix of one modality."""
        return self.image if Modality(modality) is Modality.IMAGE else self.text

    def without_labels(self) -> "PairedFeatures":
        """The same pairs with ``labels`` removed (what teachers and students receive)."""
        return PairedFeatures(self.image, self.text, None)


# A Supervision keeps its (n, n) float32 similarity dense, and serves blocks by slicing it, when the
# matrix takes at most this many bytes (2 GiB: n <= 23,170 training pairs); above, blocks are computed
# on demand by the strategy's operator. Read at call time, so tests may change it.
DENSE_CACHE_BYTES = 2 * 1024**3
# Passes over the whole matrix (assembling ``dense()``, ``mean()``) compute row blocks of at most
# this many entries (64 MiB of float32).
CHUNK_ENTRIES = 1 << 24
# With ``data_relative_cache_bytes``: the dense matrix is kept whatever the data's size up to this
# many bytes (256 MiB: n <= 8,192 training pairs).
DENSE_FLOOR_BYTES = 256 * 1024**2


def dense_bytes(n: int) -> int:
    """Bytes of an ``(n, n)`` float32 matrix."""
    return 4 * n * n


def dense_is_cached(n: int, limit: Optional[int] = None) -> bool:
    """Whether a :class:`Supervision` over ``n`` pairs keeps its similarity dense (``limit`` bytes;
    :data:`DENSE_CACHE_BYTES` when None)."""
    return dense_bytes(n) <= (DENSE_CACHE_BYTES if limit is None else limit)


def feature_bytes(train: PairedFeatures) -> int:
    """Bytes of the image and text feature matrices of ``train``, as held."""
    return sum(t.numel() * t.element_size() for t in (train.image, train.text))


def data_relative_cache_bytes(train: PairedFeatures) -> int:
    """A ``cache_bytes`` for :class:`Supervision` bounded by the data as well: the ``(n, n)`` float32
    matrix is kept dense only when it takes at most :data:`DENSE_CACHE_BYTES` and at most the larger
    of :data:`DENSE_FLOOR_BYTES` and the bytes of the training features ``train`` (image and text, as
    held), i.e. beyond n = 8,192 only while ``n <= d_image + d_text`` for float32 features.

    For strategies whose operator blocks are exactly the dense matrix's entries (0/1 similarities
    such as ``labels``): students then read the same values either way, so the rule changes memory
    and speed only (and the float32 mean a strategy reports, which above it is the exact float64
    mean). Without it the kept matrix of n = 17,900 pairs (1.28 GB) is 3.3 times their 4096-d +
    1000-d features, and a student that copies ``S^T`` (``dcmh``) holds it twice. Deterministic: it
    does not depend on the memory free when the run starts, so results never do."""
    return min(DENSE_CACHE_BYTES, max(DENSE_FLOOR_BYTES, feature_bytes(train)))


def free_memory_bytes(device: Any) -> Optional[int]:
    """Bytes free on ``device``: CUDA's free memory, or the host's ``MemAvailable``; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_dense_fits(n: int, device: Any) -> None:
    """Raise :class:`MemoryError`, naming the size, when an ``(n, n)`` float32 matrix would not fit in
    the memory free on ``device``."""
    need, free = dense_bytes(n), free_memory_bytes(device)
    if free is not None and need > free:
        raise MemoryError(
            f"the dense similarity of n = {n:,} training pairs is an (n, n) float32 matrix of "
            f"{need / 1e9:,.1f} GB, more than the {free / 1e9:,.1f} GB free on {device}; read it in blocks "
            f"with supervision.block(rows, cols) or supervision.rows() instead of dense() / .similarity"
        )


def row_chunks(n: int, device: Any = None, entries: Optional[int] = None) -> Iterator[Tensor]:
    """``arange`` index tensors (int64, on ``device``) covering rows ``0 .. n-1`` in order, each of at
    most ``max(1, entries // n)`` rows (``entries``: :data:`CHUNK_ENTRIES` when None), so that a row block
    of the n x n matrix stays small."""
    for rows in row_slices(n, entries):
        yield torch.arange(rows.start, rows.stop, device=device)


def row_slices(n: int, entries: Optional[int] = None, width: Optional[int] = None) -> list[slice]:
    """Consecutive row slices covering rows ``0 .. n-1`` in order, each of at most
    ``max(1, entries // width)`` rows (``entries``: :data:`CHUNK_ENTRIES` when None; ``width``: the
    rows' length, ``n`` when None, as for a row block of the n x n matrix): the chunks of
    :func:`row_chunks`, as slices, for views of a matrix held whole."""
    step_rows = max(1, (CHUNK_ENTRIES if entries is None else entries) // max(1, n if width is None else width))
    return [slice(start, min(n, start + step_rows)) for start in range(0, n, step_rows)]


def as_index(idx: Any, n: int, device: Any) -> Tensor:
    """``idx`` (an integer tensor, sequence or slice over ``0 .. n-1``) as a 1-D int64 tensor on ``device``."""
    if isinstance(idx, slice):
        return torch.arange(n, device=device)[idx]
    idx = torch.as_tensor(idx, device=device)
    if idx.ndim != 1 or idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
        raise TypeError(f"block indices must be a 1-D integer tensor, got {tuple(idx.shape)} {idx.dtype}")
    return idx.to(device=device, dtype=torch.long)


def exactly_symmetric(m: Tensor) -> bool:
    """Whether the square matrix ``m`` equals ``m^T`` bit for bit (``-0.0`` and ``0.0`` differ), compared
    by row tiles of at most :data:`CHUNK_ENTRIES` entries against the matching column tiles."""
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        return False
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    bits = m.view(ints[m.element_size()]) if m.is_floating_point() and m.element_size() in ints else m
    n = m.shape[0]
    step = max(1, CHUNK_ENTRIES // max(1, n))
    return all(torch.equal(bits[start : start + step], bits[:, start : start + step].T) for start in range(0, n, step))


def check_similarity_values(s: Tensor) -> None:
    """Raise :class:`ValueError` unless every entry of the similarity (block) ``s`` is finite and in [0, 1]
    (a matrix of more than :data:`CHUNK_ENTRIES` entries is checked by row blocks, so that no
    ``(n, n)`` bool mask is made)."""
    step = max(1, CHUNK_ENTRIES // max(1, s[0].numel())) if s.ndim >= 2 and s.numel() > CHUNK_ENTRIES else None
    parts = [s] if step is None else [s[start : start + step] for start in range(0, s.shape[0], step)]
    if not all(bool(torch.isfinite(part).all()) for part in parts):
        raise ValueError("similarity holds NaN or infinite values")
    if s.numel() and (s.min() < 0 or s.max() > 1):
        raise ValueError("similarity entries must lie in [0, 1]")


class SimilarityOperator:
    """The ``(n, n)`` similarity of the ``n`` training pairs, computed block by block on demand.

    Entries are float32 in ``[0, 1]`` (1: the pair ``(i, j)`` should get close codes, 0: far codes),
    one matrix for every modality combination. A strategy subclasses this to keep only what the
    similarity is computed from (labels, codes, factors, neighbour bits) and hands it over as
    ``Supervision(operator)``; students read it through :class:`Supervision`. Subclasses set ``n``
    and implement :meth:`block`; ``symmetric = True`` promises ``S = S^T`` (then a column block is read
    as the row block of the same indices); :meth:`dense` assembles the whole matrix from row blocks
    and may be overridden to compute it in one piece.
    """

    n: int = 0
    symmetric: bool = False

    @property
    def device(self) -> torch.device:
        """Where :meth:`block` returns its tensors (CPU unless a subclass says otherwise)."""
        return torch.device("cpu")

    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols))`` float32 entries ``S[rows][:, cols]`` (``cols`` None: all ``n``
        columns, ``(len(rows), n)``), on :attr:`device`. ``rows``, ``cols``: 1-D int64 index tensors."""
        raise NotImplementedError

    def columns(self, cols: Tensor) -> Tensor:
        """``(len(cols), n)`` float32 rows of ``S^T``, i.e. ``S[:, cols].T``: the row block of ``cols``
        when :attr:`symmetric`, else the columns of the block of every row (a subclass may compute
        them directly)."""
        if self.symmetric:
            return self.block(cols)
        return self.block(torch.arange(self.n, device=self.device), cols).T

    def dense(self) -> Tensor:
        """The ``(n, n)`` float32 matrix on :attr:`device`, assembled from row blocks; raises
        :class:`MemoryError` naming its size when it would not fit in the free memory."""
        check_dense_fits(self.n, self.device)
        out = torch.empty(self.n, self.n, dtype=torch.float32, device=self.device)
        for rows in row_chunks(self.n, device=self.device):
            out[rows[0] : rows[-1] + 1] = self.block(rows)
        return out

    def mean(self) -> float:
        """The mean of all ``n^2`` entries: a float64 sum over row blocks divided by ``n^2`` (exact for
        0/1 entries)."""
        total = sum(float(self.block(rows).double().sum()) for rows in row_chunks(self.n, device=self.device))
        return total / (self.n * self.n) if self.n else 0.0


class DenseSimilarity(SimilarityOperator):
    """A similarity given as a dense ``(n, n)`` matrix (what ``Supervision(similarity=tensor)`` wraps)."""

    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"similarity must be a square matrix, got shape {tuple(matrix.shape)}")
        check_similarity_values(matrix)
        self.matrix = matrix
        self.n = int(matrix.shape[0])

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """Entries of the stored matrix, as float32."""
        m = self.matrix
        rows = as_index(rows, self.n, m.device)
        out = m[rows] if cols is None else m[rows[:, None], as_index(cols, self.n, m.device)[None, :]]
        return out.to(torch.float32)

    def dense(self) -> Tensor:
        """The stored matrix itself (no copy, its own dtype)."""
        return self.matrix


class SimilarityRows:
    """``S`` (or ``S^T`` when ``transposed``) read by rows only, for students written against a dense
    ``S``: ``view[idx]`` is the ``(len(idx), n)`` float32 row block on the view's device, ``view.T``
    the transposed view, ``view.shape == (n, n)``, ``view.to(device, torch.float32)`` the view on
    another device. With a dense-kept supervision the rows are slices of that matrix, moved to the
    device once (exactly what ``supervision.similarity.to(device, torch.float32)[idx]`` gave; ``.T``
    and ``.contiguous()`` then act on it as on a tensor: ``view.T.contiguous()`` copies ``S^T`` once
    for fast row reads); otherwise each read is a block from the operator and ``.contiguous()`` is
    the view itself. Where the kept matrix is exactly symmetric (every entry's bits equal its
    mirror's, checked once: :attr:`Supervision.kept_symmetric`), ``S^T`` is read from ``S`` itself
    and ``view.T.contiguous()`` copies nothing (the same values: 1.28 GB saved at n = 17,900)."""

    def __init__(self, supervision: "Supervision", device: Any = None, transposed: bool = False) -> None:
        self.supervision = supervision
        self.device = torch.device(device) if device is not None else supervision.operator.device
        self.transposed = transposed
        kept = supervision.kept_dense
        self.matrix = None if kept is None else kept.to(self.device, torch.float32)
        if self.matrix is not None and transposed and not supervision.kept_symmetric:
            self.matrix = self.matrix.T

    def _with(self, matrix: Optional[Tensor], transposed: bool) -> "SimilarityRows":
        view = SimilarityRows.__new__(SimilarityRows)
        view.supervision, view.device, view.matrix, view.transposed = self.supervision, self.device, matrix, transposed
        return view

    @property
    def shape(self) -> tuple[int, int]:
        return (self.supervision.n, self.supervision.n)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def T(self) -> "SimilarityRows":  # noqa: N802 - mirrors Tensor.T
        """The transposed view; where the kept matrix equals its transpose bit for bit
        (:attr:`Supervision.kept_symmetric`), the same matrix, so ``.contiguous()`` copies nothing."""
        if self.matrix is None or self.supervision.kept_symmetric:
            return self._with(self.matrix, not self.transposed)
        return self._with(self.matrix.T, not self.transposed)

    def contiguous(self) -> "SimilarityRows":
        """The view with its kept matrix made contiguous (as ``Tensor.contiguous``; no-op without one)."""
        return self if self.matrix is None else self._with(self.matrix.contiguous(), self.transposed)

    def to(self, device: Any = None, dtype: Any = None) -> "SimilarityRows":
        """The view on ``device`` (``dtype`` may only be float32)."""
        if dtype is not None and dtype != torch.float32:
            raise TypeError("a similarity view is float32 only")
        if device is None or torch.device(device) == self.device:
            return self
        return SimilarityRows(self.supervision, device, self.transposed)

    def __len__(self) -> int:
        return self.supervision.n

    def __getitem__(self, idx: Any) -> Tensor:
        """``(len(idx), n)`` float32 rows ``idx`` of ``S`` (of ``S^T`` when transposed)."""
        if self.matrix is not None:
            return self.matrix[idx]
        sup = self.supervision
        out = sup.columns(idx) if self.transposed else sup.block(idx)
        return out.to(self.device)


class Supervision:
    """What a strategy hands to a student instead of labels.

    The similarity over the ``n`` training pairs, ``S`` ``(n, n)`` float32 with entries in ``[0, 1]``
    (1: the pair ``(i, j)`` should get close codes, 0: far codes), used for every modality
    combination (image i vs text j, image i vs image j, ...). It is given either as a dense tensor,
    ``Supervision(similarity=S)`` (checked: square, finite, in [0, 1]), or as a
    :class:`SimilarityOperator` that computes any block on demand, ``Supervision(operator)``, so
    that no one needs the n x n matrix (136 GB at n = 184,477). ``soft_labels`` is an optional
    ``(n, k)`` float32 matrix of pseudo-labels for students that need a label vector per item
    (SSAH-style); ``None`` when the strategy provides none. ``info`` holds scalar statistics the
    result file records (for example the fraction of similar pairs).

    Students read ``S`` through :meth:`block` (any block), :meth:`rows` (a row view) and
    :meth:`columns`; :meth:`dense` / ``similarity`` materialise it (small n only). When the dense
    matrix takes at most ``cache_bytes`` (default :data:`DENSE_CACHE_BYTES`), it is computed once at
    construction (``operator.dense()``) and kept, and every block is a slice of it, so at small n
    all reads give exactly the entries of that matrix; above, blocks come from the operator. A
    strategy whose blocks are exactly the dense entries may bound the cache by the data as well,
    ``cache_bytes=data_relative_cache_bytes(train)`` (``labels`` does).
    """

    def __init__(self, similarity: Any, soft_labels: Optional[Tensor] = None, info: Optional[dict[str, Any]] = None,
                 *, cache_bytes: Optional[int] = None) -> None:
        op = similarity if isinstance(similarity, SimilarityOperator) else DenseSimilarity(similarity)
        self.operator = op
        self.soft_labels = soft_labels
        self.info: dict[str, Any] = {} if info is None else info
        if isinstance(op, DenseSimilarity):
            self.kept_dense: Optional[Tensor] = op.matrix
        elif dense_is_cached(op.n, cache_bytes):
            self.kept_dense = op.dense()
            if tuple(self.kept_dense.shape) != (op.n, op.n):
                raise ValueError(f"similarity operator's dense() has shape {tuple(self.kept_dense.shape)}, not ({op.n}, {op.n})")
            check_similarity_values(self.kept_dense)
        else:
            self.kept_dense = None
            probe = op.block(torch.arange(min(op.n, 8), device=op.device))
            if tuple(probe.shape) != (min(op.n, 8), op.n):
                raise ValueError(f"similarity operator's block of {min(op.n, 8)} rows has shape {tuple(probe.shape)}, not ({min(op.n, 8)}, {op.n})")
            check_similarity_values(probe)
        self._kept_symmetric: Optional[bool] = None
        if soft_labels is not None and (soft_labels.ndim != 2 or soft_labels.shape[0] != op.n):
            raise ValueError(f"soft_labels must be an (n, k) matrix with n = {op.n}, got shape {tuple(soft_labels.shape)}")

    def __repr__(self) -> str:
        return f"Supervision(n={self.n}, operator={type(self.operator).__name__}, dense kept: {self.kept_dense is not None}, info={self.info})"

    @property
    def n(self) -> int:
        """The number of training pairs (``S`` is ``(n, n)``)."""
        return self.operator.n

    @property
    def kept_symmetric(self) -> bool:
        """Whether the kept dense matrix equals its transpose bit for bit (False when none is kept);
        checked on first use, by row tiles of at most :data:`CHUNK_ENTRIES` entries."""
        if self._kept_symmetric is None:
            self._kept_symmetric = self.kept_dense is not None and exactly_symmetric(self.kept_dense)
        return self._kept_symmetric

    def block(self, rows: Any, cols: Any = None) -> Tensor:
        """``(len(rows), len(cols))`` float32 block ``S[rows][:, cols]`` (``cols`` None: all ``n`` columns),
        on the operator's device; ``rows``, ``cols`` are 1-D integer index tensors (or slices)."""
        m = self.kept_dense
        if m is None:
            op = self.operator
            rows = as_index(rows, op.n, op.device)
            return op.block(rows, None if cols is None else as_index(cols, op.n, op.device))
        rows = as_index(rows, self.n, m.device)
        out = m[rows] if cols is None else m[rows[:, None], as_index(cols, self.n, m.device)[None, :]]
        return out.to(torch.float32)

    def columns(self, cols: Any) -> Tensor:
        """``(len(cols), n)`` float32 rows of ``S^T``, i.e. ``S[:, cols].T``."""
        m = self.kept_dense
        if m is not None:
            return m.T[as_index(cols, self.n, m.device)].to(torch.float32)
        op = self.operator
        return op.columns(as_index(cols, op.n, op.device))

    def rows(self, device: Any = None) -> SimilarityRows:
        """A :class:`SimilarityRows` view of ``S`` on ``device`` (default: the operator's)."""
        return SimilarityRows(self, device)

    def dense(self) -> Tensor:
        """The ``(n, n)`` matrix (the kept one, else ``operator.dense()``, which raises
        :class:`MemoryError` naming the size when it would not fit in memory)."""
        return self.kept_dense if self.kept_dense is not None else self.operator.dense()

    @property
    def similarity(self) -> Tensor:
        """The dense ``(n, n)`` matrix, :meth:`dense` (for students not yet reading blocks)."""
        return self.dense()

    def mean(self) -> float:
        """The mean of all ``n^2`` entries: ``float(S.mean())`` of the kept dense matrix (float32, as
        strategies always reported it), else ``operator.mean()`` (a float64 pass over row blocks)."""
        if self.kept_dense is not None:
            return float(self.kept_dense.mean())
        return self.operator.mean()


class Progress(Protocol):
    """Progress reporting handed to plugins; the CLI renders it as rich progress bars."""

    def track(self, iterable: Iterable[T], total: Optional[int], description: str) -> Iterator[T]:
        """Yield from ``iterable`` while advancing a bar of ``total`` steps."""
        ...


class NullProgress:
    """A :class:`Progress` that shows nothing (tests, libraries, quiet runs)."""

    def track(self, iterable: Iterable[T], total: Optional[int], description: str) -> Iterator[T]:
        """Yield from ``iterable`` unchanged."""
        return iter(iterable)


@dataclass(frozen=True)
class RunContext:
    """What the harness gives every method it builds.

    ``device`` is where tensors live; ``seed`` is this stage's seed (the harness has already seeded
    torch's global generator with it, and ``generator()`` gives a private generator);
    ``progress`` reports training progress.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    progress: Progress = field(default_factory=NullProgress)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded with ``seed + offset`` (for permutations, init)."""
        g = torch.Generator()
        g.manual_seed(self.seed + offset)
        return g


@runtime_checkable
class Teacher(Protocol):
    """An unsupervised cross-modal hashing method."""

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Learn hash functions of ``bits`` bits from unlabelled training pairs."""
        ...

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """Map ``(n, d)`` features of ``modality`` to ``(n, bits)`` real values; ``sign`` gives codes."""
        ...


@runtime_checkable
class Strategy(Protocol):
    """A distillation strategy: turns a trained teacher into supervision for a student."""

    def distill(self, teacher: Optional[Teacher], train: PairedFeatures) -> Supervision:
        """Build the supervision over the ``n`` training pairs (``teacher`` is None when unused):
        ``Supervision(similarity=dense)`` with an ``(n, n)`` tensor, or ``Supervision(operator)``
        with a :class:`SimilarityOperator`, which never needs the n x n matrix."""
        ...


@runtime_checkable
class Student(Protocol):
    """A supervised cross-modal hashing method trained on a :class:`Supervision`."""

    def fit(self, train: PairedFeatures, supervision: Supervision, bits: int) -> None:
        """Learn hash functions of ``bits`` bits from training pairs and the given supervision (read it
        by blocks, ``supervision.block(rows, cols)`` or ``supervision.rows(device)[idx]``, so that
        large n works; ``supervision.similarity`` materialises the n x n matrix)."""
        ...

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """Map ``(n, d)`` features of ``modality`` to ``(n, bits)`` real values; ``sign`` gives codes."""
        ...


Builder = Callable[[Any, RunContext], Any]

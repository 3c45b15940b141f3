"""Neighbours and selections over the rows of a matrix, without n x n float matrices: kNN
orders, masks, packed bit matrices and per-row radii (the ``ukd`` strategy, ``ugach``'s
correlation graph), exact k-th selection by rows and over chunked values (``sakdh``'s
threshold), all with ties to the lower index as a stable sort gives them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

from cmhbench import interfaces
from cmhbench.interfaces import SimilarityOperator
from cmhbench.lazy import no_grad, torch
from cmhbench.training import fill_block_diagonal_, l2_normalize

if TYPE_CHECKING:
    from torch import Tensor


def knn_chunk_rows(n: int) -> int:
    """Rows of a :func:`knn_orders` block over ``n`` items, at least 1: ``CHUNK_ENTRIES / 4`` entries,
    32 MiB per ``(rows, n)`` float64 or int64 array. A block holds at most three (the distances, the
    sort's values and its indices: under 100 MiB)."""
    return max(1, (interfaces.CHUNK_ENTRIES // 4) // max(1, n))


@no_grad
def knn_orders(features: Tensor, k: int, metric: str = "euclidean", chunk: Optional[int] = None) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, order)`` per block of ``chunk`` consecutive rows of ``(n, d)`` ``features``
    (default :func:`knn_chunk_rows`: each ``(chunk, n)`` array at most 32 MiB): ``order`` ``(m, k)``
    int64 holds, for rows ``start .. start+m-1``, the indices of their k nearest rows (themselves
    included) by Euclidean distance (squared, from float64 inner products) or cosine similarity,
    nearest first; ties go to the lower index (stable sort). :func:`knn_mask` is this. The block's
    distances are formed in place, ``sq_i - 2 z_i.z_j + sq_j`` with the same roundings as before.
    The block size can change an order only where two keys tie to their last bit and the product's
    rounding depends on its shape (cosine keys of exactly tied directions, e.g. integer outputs and
    blocks of a few rows); Euclidean keys of float32 features sum exact float64 products (same bits
    at 4096-row and byte-sized blocks in the tests and on 6000 x 128 outputs, K = 0.55 n)."""
    z, sq = _knn_space(features, metric)
    n = z.shape[0]
    chunk = knn_chunk_rows(n) if chunk is None else chunk
    for start in range(0, n, chunk):
        order = torch.sort(_knn_keys(z[start : start + chunk], sq[start : start + chunk], z, sq, metric),
                           dim=1, stable=True).indices
        yield start, order[:, :k]
        del order


def _knn_space(features: Tensor, metric: str) -> tuple[Tensor, Tensor]:
    """``(z, sq)``: the float64 rows the keys are formed from (unit-normalised for cosine) and their
    squared norms."""
    z = features.double()
    if metric == "cosine":
        z = l2_normalize(z)
    return z, (z * z).sum(1)


def _knn_keys(z_rows: Tensor, sq_rows: Tensor, z_cols: Tensor, sq_cols: Tensor, metric: str) -> Tensor:
    """``(rows, cols)`` float64 ranking keys of :func:`knn_orders` (smaller is nearer): squared
    Euclidean distances ``(-2 z_i.z_j + sq_i) + sq_j`` clamped at 0, or minus the cosine."""
    return _keys_of(z_rows @ z_cols.T, sq_rows, sq_cols, metric)


def _keys_of(products: Tensor, sq_rows: Tensor, sq_cols: Tensor, metric: str, clamp: bool = True) -> Tensor:
    """:func:`_knn_keys` from the ``(rows, cols)`` inner products, in place. ``clamp=False`` leaves
    negative Euclidean keys (rounding below 0) unclamped: they compare the same against any radius
    >= 0 except where the radius is 0 and a key ties it (:func:`among_k_smallest` clamps tied rows)."""
    if metric == "cosine":
        return products.neg_()
    # sq_i + (-2) p rounds once as (-2 p + sq_i) did (-2 p is exact); IEEE addition commutes
    keys = torch.add(sq_rows[:, None], products, alpha=-2.0, out=products).add_(sq_cols[None, :])
    return keys.clamp_(min=0.0) if clamp else keys


KEY_TILE = 8  # rows of every key product behind the kNN bits and radii: a multiple of any GEMM kernel's row tile
KEY_PANEL = 2048  # columns of every such product: panels at fixed offsets 0, 2048, ... (the last one shorter)


def _tiled_keys(z: Tensor, sq: Tensor, rows: Tensor, metric: str, clamp: bool = True,
                buffers: Optional[Buffers] = None) -> Tensor:
    """``(len(rows), n)`` keys of ``rows`` against every row, from products of whole
    :data:`KEY_TILE`-row tiles (the last one padded with its first row) with fixed panels of
    :data:`KEY_PANEL` columns (:func:`_tiled_products`). A float64 key's rounding depends on the shape
    of the product it comes from (measured: the same row against a subset of the columns, or in a
    product of 1 or 7 rows, sums in another order), not on the other rows of whole tiles against
    the same panel: so a key has the same bits whichever block asks for it.
    ``buffers``: the product is written into its ``"keys"`` array."""
    return _keys_of(_tiled_products(z, rows, buffers), sq[rows], sq, metric, clamp)


def _tiles(rows: Tensor) -> Tensor:
    """``rows`` padded with its first index to whole :data:`KEY_TILE`-row tiles."""
    pad = -len(rows) % KEY_TILE
    return rows if pad == 0 else torch.cat([rows, rows[:1].expand(pad)])


def _tiled_products(z: Tensor, rows: Tensor, buffers: Optional[Buffers] = None) -> Tensor:
    """``(len(rows), n)`` inner products ``z[rows] @ z.T`` from whole :data:`KEY_TILE`-row tiles, one
    product per :data:`KEY_PANEL`-column panel ``z[j : j + KEY_PANEL]`` (the shapes every key of
    :class:`KnnRadiusSimilarity`'s reads comes from). With ``buffers`` the products are written into
    its reused ``"keys"`` array and a view of it is returned, valid until the next use of that array."""
    n = z.shape[0]
    tiled = _tiles(rows)
    a = z[tiled]
    out = torch.empty(len(tiled), n, dtype=z.dtype, device=z.device) if buffers is None \
        else buffers.get("keys", len(tiled), n, z.dtype, z.device)
    for j in range(0, n, KEY_PANEL):
        torch.mm(a, z[j : j + KEY_PANEL].T, out=out[:, j : j + KEY_PANEL])
    return out[: len(rows)]


class Buffers:
    """Named ``(rows, n)`` arrays reused from one block of rows to the next, each kept at the most rows
    asked of it so far (a view of its first ``rows`` is handed out). A fresh array of that size is
    mapped anew by the allocator at every block, and writing it costs page faults: at n = 184,477 a
    ``(96, n)`` float64 product took 149 ms into a fresh array against 87 ms into a reused one (one
    thread, a scratch timing at stop 33). A view is valid until the next :meth:`get` of its name."""

    def __init__(self) -> None:
        self._arrays: dict[str, Tensor] = {}

    def get(self, name: str, rows: int, n: int, dtype, device) -> Tensor:
        """A contiguous ``(rows, n)`` array of ``dtype`` on ``device``, its values left as they were."""
        kept = self._arrays.get(name)
        if kept is None or kept.shape[0] < rows or kept.shape[1] != n or kept.dtype != dtype or kept.device != device:
            kept = self._arrays[name] = torch.empty(rows, n, dtype=dtype, device=device)
        return kept[:rows]

    def nbytes(self) -> int:
        """The bytes of every array kept."""
        return sum(a.numel() * a.element_size() for a in self._arrays.values())


KEY_CHUNK_ROWS = 64  # rows of keys selected at a time by the kNN bits and radii (94 MB at n = 184,477)


def _tile_chunk(chunk: Optional[int]) -> int:
    """``chunk`` (None: :data:`KEY_CHUNK_ROWS`, the fastest measured: at n = 30,000 the radii took
    43 s with 64-row chunks, 53 s with 16 and 67 s with 136) rounded down to a multiple of
    :data:`KEY_TILE` (at least one tile). The tiles and panels make the keys, hence the bits, the same for any chunk."""
    chunk = KEY_CHUNK_ROWS if chunk is None else chunk
    return max(KEY_TILE, chunk - chunk % KEY_TILE)


LANE_GROUP = 2040  # bytes summed as 255 int64 words: each of a word's 8 byte lanes stays <= 255


def count_true(mask: Tensor) -> Tensor:
    """``(m,)`` int64 number of True entries per row of the ``(m, n)`` bool ``mask`` (any strides).
    Long rows are copied into a zero-padded buffer and counted by :func:`_count_padded`: at 64 x
    184,477, 10 ms against 34 ms for a byte sum and 65 ms for ``mask.sum(1)`` (one thread)."""
    m, n = mask.shape
    if n < 4 * LANE_GROUP or m == 0:
        return mask.view(torch.uint8).sum(1, dtype=torch.int32).long()
    buffer = _padded_bools(m, n, mask.device)
    buffer[:, :n] = mask
    return _count_padded(buffer)


def _padded_bools(m: int, n: int, device: torch.device) -> Tensor:
    """``(m, w)`` bool zeros, ``w`` >= n the next multiple of :data:`LANE_GROUP`: write a mask into
    ``[:, :n]`` and :func:`_count_padded` counts its rows."""
    return torch.zeros(m, -(-n // LANE_GROUP) * LANE_GROUP, dtype=torch.bool, device=device)


_EVEN_BYTES = 0x00FF00FF00FF00FF
_SUM_LANES = 0x0001000100010001


def _count_padded(buffer: Tensor) -> Tensor:
    """``(m,)`` int64 True entries per row of a contiguous ``(m, w)`` bool ``buffer``, ``w`` a
    multiple of :data:`LANE_GROUP`: its bytes read as int64 words, 255 words summed at a time (each
    byte lane then holds at most 255, so no carry crosses lanes), the 8 lanes folded into 4 of 16
    bits (<= 510) and those summed by one multiply into the top 16 bits (<= 2040)."""
    m = buffer.shape[0]
    words = buffer.view(torch.int64).view(m, -1, LANE_GROUP // 8).sum(2)
    words = (words & _EVEN_BYTES) + ((words >> 8) & _EVEN_BYTES)
    return ((words * _SUM_LANES) >> 48).sum(1)


SELECT_SAMPLE = 1024  # rows of more than 8 x this many keys: select_kth brackets the k-th by a sample
SELECT_SAMPLE_MAX = 4  # of at most this many times SELECT_SAMPLE evenly spaced keys (and at most n / 8)


def select_kth(keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``keys.kthvalue(k, dim=1)`` of ``(m, n)`` ``keys``, exactly (the same values; an index of an
    entry equal to each), faster on long rows: the k-th of ``min(4 SELECT_SAMPLE, n / 8)`` evenly
    spaced columns, +- 4 standard deviations of a sample quantile, brackets it; one pass each marks the keys
    below the bracket and those up to its top, and the k-th is selected among the few inside (6% of a
    row at n = 184,477 and k = 0.555 n, fewer for smaller or larger k). Rows the bracket misses (keys
    ordered along the row, say) fall back to ``kthvalue``: the result never depends on the sample,
    only the time. At n = 184,477 (64 rows of float64 keys, one thread) 130 ms against
    ``kthvalue``'s 262 ms (k = 102,402) and 135 against 282 ms (k = 4,981); rows of at most ``8 SELECT_SAMPLE``
    keys use ``kthvalue``."""
    values, indices, _ = _select_kth(keys, k)
    return values, indices


def _select_kth(keys: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`select_kth` and, per row, the number of keys equal to the k-th (int64, >= 1): every such
    key lies inside the bracket, so they are counted among the bracketed few."""
    m, n = keys.shape
    if n <= 8 * SELECT_SAMPLE or m == 0:
        values, indices = keys.kthvalue(k, dim=1)
        return values, indices, count_true(keys == values[:, None])
    sample = keys[:, :: n // min(SELECT_SAMPLE_MAX * SELECT_SAMPLE, n // 8)]
    s = sample.shape[1]
    q = (k - 0.5) / n
    margin = 4.0 * math.sqrt(s * q * (1.0 - q)) + 2.0
    r_lo, r_hi = math.floor(q * s - margin), math.ceil(q * s + margin)
    inf = torch.full((m,), math.inf, dtype=keys.dtype, device=keys.device)
    lo = sample.kthvalue(r_lo, dim=1).values if r_lo >= 1 else -inf
    hi = sample.kthvalue(r_hi, dim=1).values if r_hi <= s else inf
    below, inside = _padded_bools(m, n, keys.device), _padded_bools(m, n, keys.device)
    torch.lt(keys, lo[:, None], out=below[:, :n])
    torch.le(keys, hi[:, None], out=inside[:, :n])
    count_below = _count_padded(below)
    count = _count_padded(inside) - count_below
    inside = inside.logical_xor_(below)[:, :n]  # lo <= hi: a key below lo is <= hi
    del below
    need = k - count_below  # the k-th's place among the bracketed keys, 1-based
    hit = (need >= 1) & (need <= count)
    values = torch.empty(m, dtype=keys.dtype, device=keys.device)
    indices = torch.empty(m, dtype=torch.long, device=keys.device)
    equal = torch.empty(m, dtype=torch.long, device=keys.device)
    missed = (~hit).nonzero().flatten()
    if len(missed):
        values[missed], indices[missed] = keys[missed].kthvalue(k, dim=1)
        equal[missed] = count_true(keys[missed] == values[missed, None])
    rows = hit.nonzero().flatten()
    if len(rows):
        r, c = (inside if len(rows) == m else inside[rows]).nonzero(as_tuple=True)  # row-major
        bracketed = keys[rows[r], c]
        ends = count[rows].cumsum(0).tolist()
        start = 0
        for row, end, place in zip(rows.tolist(), ends, need[rows].tolist()):
            v, j = bracketed[start:end].kthvalue(place)
            values[row], indices[row] = v, c[start + j]
            start = end
        ties = torch.bincount(r[bracketed == values[rows][r]], minlength=len(rows))
        equal[rows] = ties
    return values, indices, equal


def kth_smallest(keys: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(radius, last, tied)`` per row of ``(m, n)`` ``keys``: the k-th smallest key, the index of
    the item at place k of the stable ascending order (ties to the lower index), i.e. ``sort(keys,
    stable=True)``'s ``values[:, k-1]`` and ``indices[:, k-1]``, by a selection instead of a sort, and
    whether another key equals the k-th (bool). Only rows with such ties need more than the
    selection: elsewhere the k-th key is unique and the selection's index is its place."""
    radius, last, equal = _select_kth(keys, k)
    tied = equal > 1
    rows = tied.nonzero().flatten()
    if len(rows):
        sub, r = keys[rows], radius[rows, None]
        equal = sub == r
        need = k - count_true(sub < r)  # >= 1: the k-th place is among the tied
        place = equal.cumsum(1)
        place.masked_fill_(~equal, 0)
        last[rows] = (place == need[:, None]).to(torch.uint8).argmax(1)
    return radius, last, tied


def among_k_smallest(keys: Tensor, radius: Tensor, last: Tensor, tied: Tensor, cols: Optional[Tensor] = None,
                     floor: Optional[float] = None, out: Optional[Tensor] = None) -> Tensor:
    """``(m, len(cols))`` bool: column j (index ``cols``; None: ``0 .. n-1``, the whole row) is among
    the row's k nearest given its :func:`kth_smallest` ``(radius, last, tied)``: ``key < radius``, or
    ``key == radius`` and ``j <= last``, or ``j = last`` (the k-th itself, whatever the rounding of a
    key recomputed in another product). In a row without ties at the k-th key that is ``key <=
    radius``. ``floor``: the clamp the keys skipped (``_keys_of(clamp=False)``: 0 for Euclidean keys);
    tied rows compare their keys raised to it, and untied rows need no clamp against a radius >= floor.
    ``out``: a bool array of the result's shape to write it into (returned)."""
    out = torch.le(keys, radius[:, None], out=out) if out is not None else keys <= radius[:, None]
    rows = tied.nonzero().flatten()
    if len(rows):
        sub, r = keys[rows], radius[rows, None]
        if floor is not None:
            sub.clamp_(min=floor)
        index = torch.arange(keys.shape[1], device=keys.device) if cols is None else cols
        out[rows] = (sub < r) | ((sub == r) & (index[None, :] <= last[rows, None]))
    if cols is None:
        out[torch.arange(len(last), device=out.device), last] = True
        return out
    return out.logical_or_(cols[None, :] == last[:, None])


def _among_k_smallest_by_column(keys: Tensor, radius: Tensor, last: Tensor, tied: Tensor, cols: Tensor,
                                 floor: Optional[float] = None, out: Optional[Tensor] = None) -> Tensor:
    """:func:`among_k_smallest` of the keys ``keys.T``, in their ``(len(cols), n)`` layout: entry
    ``(q, i)`` says whether column ``cols[q]`` is among row i's k nearest, given row i's ``(radius,
    last, tied)`` (each ``(n,)``). ``out``: a bool array of that shape to write the result into."""
    out = torch.le(keys, radius[None, :], out=out) if out is not None else keys <= radius[None, :]
    rows = tied.nonzero().flatten()
    if len(rows):
        sub, r = keys[:, rows], radius[None, rows]
        if floor is not None:
            sub.clamp_(min=floor)
        out[:, rows] = (sub < r) | ((sub == r) & (cols[:, None] <= last[None, rows]))
    return out.logical_or_(cols[:, None] == last[None, :])


def _knn_member_chunks(prepared: Sequence[tuple[Tensor, Tensor]], k: int, metric: str,
                       chunk: Optional[int]) -> Iterator[tuple[Tensor, Tensor, list[tuple[Tensor, Tensor, Tensor]]]]:
    """The one pass behind :func:`knn_row_bits` and :class:`KnnRadiusSimilarity`: per chunk of rows
    (:func:`_tile_chunk`), ``(rows, member, kth)`` with ``rows`` the int64 row indices, ``member``
    ``(len(rows), n)`` bool (j among the row's k nearest in some space of ``prepared``, the
    :func:`_knn_space` pairs, or on the diagonal) and ``kth`` each space's :func:`kth_smallest`.
    ``member`` is a view of an array reused by the next chunk: read it before asking for the next
    (:class:`Buffers`: the keys and masks of every chunk are written into the same arrays)."""
    n = prepared[0][0].shape[0]
    every = torch.arange(n, device=prepared[0][0].device)
    step = _tile_chunk(chunk)
    buffers = Buffers()
    for start in range(0, n, step):
        rows = every[start : start + step]
        member = buffers.get("member", len(rows), n, torch.bool, every.device)
        kth = []
        for s, (z, sq) in enumerate(prepared):
            keys = _tiled_keys(z, sq, rows, metric, buffers=buffers)
            kth.append(kth_smallest(keys, k))
            space = member if s == 0 else buffers.get("space", len(rows), n, torch.bool, every.device)
            among_k_smallest(keys, *kth[-1], out=space)
            if s:
                member.logical_or_(space)
            del keys
        yield rows, fill_block_diagonal_(member, rows, value=True), kth


@no_grad
def knn_mask(features: Tensor, k: int, metric: str = "euclidean", chunk: Optional[int] = None) -> Tensor:
    """``(n, n)`` bool: row i marks the k nearest rows of ``(n, d)`` ``features`` (itself
    included), by Euclidean distance or cosine similarity; ties go to the lower index."""
    n = features.shape[0]
    mask = torch.zeros(n, n, dtype=torch.bool, device=features.device)
    for start, order in knn_orders(features, k, metric, chunk):
        mask[start : start + order.shape[0]].scatter_(1, order, True)
    return mask


def pack_bits(mask: Tensor) -> Tensor:
    """``(m, w)`` bool -> ``(m, ceil(w / 8))`` uint8; column j is bit ``j % 8`` (least significant
    first) of byte ``j // 8``; the padding bits are 0."""
    m, w = mask.shape
    out = torch.zeros(m, (w + 7) // 8, dtype=torch.uint8, device=mask.device)
    for bit in range(8):
        plane = mask[:, bit::8].to(torch.uint8)
        out[:, : plane.shape[1]] |= plane << bit
    return out


def unpack_bits(packed: Tensor, width: Optional[int] = None) -> Tensor:
    """``(m, b)`` uint8 from :func:`pack_bits` -> ``(m, width)`` bool (``width`` default ``8 b``)."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = ((packed.unsqueeze(-1) >> shifts) & 1).bool().reshape(packed.shape[0], -1)
    return bits if width is None else bits[:, :width]


@no_grad
def symmetrise_bits_(packed: Tensor, n: int, tile: int = 4096) -> Tensor:
    """In place, the ``(n, ceil(n / 8))`` packed 0/1 matrix ``M`` becomes ``M | M^T``, tile pair by
    tile pair (``tile`` a multiple of 8; two ``(tile, tile)`` bool tiles at a time). Returns it."""
    if tile % 8:
        raise ValueError("tile must be a multiple of 8")
    for a in range(0, n, tile):
        ta = min(tile, n - a)
        for b in range(a, n, tile):
            tb = min(tile, n - b)
            ab = unpack_bits(packed[a : a + ta, b // 8 : (b + tb + 7) // 8], tb)
            ba = unpack_bits(packed[b : b + tb, a // 8 : (a + ta + 7) // 8], ta)
            both = ab | ba.T
            packed[a : a + ta, b // 8 : (b + tb + 7) // 8] = pack_bits(both)
            if b != a:
                packed[b : b + tb, a // 8 : (a + ta + 7) // 8] = pack_bits(both.T)
    return packed


class BitSimilarity(SimilarityOperator):
    """A 0/1 similarity kept as an ``(n, ceil(n / 8))`` uint8 bit matrix (:func:`pack_bits`): n^2 / 8
    bytes (4.25 GB at n = 184,477) whatever the share of similar pairs. ``block`` unpacks the
    requested entries as float32 exactly."""

    def __init__(self, packed: Tensor, n: int, symmetric: bool = False) -> None:
        if packed.dtype != torch.uint8 or tuple(packed.shape) != (n, (n + 7) // 8):
            raise ValueError(f"packed bits must be uint8 of shape ({n}, {(n + 7) // 8}), got {packed.dtype} {tuple(packed.shape)}")
        self.packed = packed
        self.n = n
        self.symmetric = symmetric

    @property
    def device(self) -> torch.device:
        return self.packed.device

    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols) or n)`` float32 0/1 entries."""
        if cols is None:
            return unpack_bits(self.packed[rows], self.n).float()
        byte = self.packed[rows[:, None], (cols >> 3)[None, :]]
        return ((byte >> (cols & 7).to(torch.uint8)[None, :]) & 1).float()

    def mean(self) -> float:
        """The share of 1 entries, :meth:`count` / n^2."""
        return self.count() / (self.n * self.n) if self.n else 0.0

    def count(self) -> int:
        """The number of 1 entries (a popcount over the bytes, in row chunks of ``CHUNK_ENTRIES / 8``
        bytes: the int64 index and count arrays of a chunk take 16 MiB each)."""
        table = torch.tensor([bin(v).count("1") for v in range(256)], dtype=torch.int64, device=self.device)
        step_rows = max(1, (interfaces.CHUNK_ENTRIES // 8) // max(1, self.packed.shape[1]))
        return sum(int(table[self.packed[s : s + step_rows].long()].sum()) for s in range(0, self.n, step_rows))


@no_grad
def knn_row_bits(spaces: Sequence[Tensor], k: int, metric: str = "euclidean", chunk: Optional[int] = None) -> BitSimilarity:
    """The per-row 0/1 similarity ``M``, ``M_ij = 1`` iff j is among i's k nearest rows in any of the
    ``(n, d_s)`` matrices ``spaces`` (and ``M_ii = 1``), not symmetrised (UKD's ``setting.py:70-72``):
    the rows of :func:`knn_mask`, ties included, from the keys of a ``chunk`` of rows at a time
    (default :data:`KEY_CHUNK_ROWS`; whole :data:`KEY_TILE`-row tiles: :func:`_tiled_keys`), selected by their k-th
    key (:func:`kth_smallest`: no sort of whole rows), into an n^2 / 8-byte bit matrix (never an
    n x n tensor)."""
    n = spaces[0].shape[0]
    packed = torch.zeros(n, (n + 7) // 8, dtype=torch.uint8, device=spaces[0].device)
    for rows, member, _ in _knn_member_chunks([_knn_space(z, metric) for z in spaces], k, metric, chunk):
        packed[rows] = pack_bits(member)
    return BitSimilarity(packed, n, symmetric=False)


KNN_LIST_COLUMNS = 4096  # columns of the float64 copies behind one block of knn_union_lists' keys


@no_grad
def knn_union_lists(spaces: Sequence[Tensor], k: int, rows_per_block: Optional[int] = None) -> Tensor:
    """``(n, w)`` int64: row i lists, in increasing order and padded with -1, the j that are among
    i's k nearest rows by Euclidean distance in any of the ``(n, d_s)`` matrices ``spaces``, and i itself: the rows of
    ``knn_mask(s_1) | knn_mask(s_2) | ... | I`` as index lists, ties to the lower index, ``w`` the
    longest row (at most ``len(spaces) k + 1``). Linear memory in n: the float64 keys of a block of
    ``rows_per_block`` rows (default :data:`KEY_CHUNK_ROWS`) are formed from float64 copies of
    :data:`KNN_LIST_COLUMNS` columns at a time, never of a whole matrix (a float64 copy of
    184,477 x 4096 features is 6 GB). Each key is computed once, so no tiling is needed; keys of
    float32 inputs sum exact float64 products, so the lists are :func:`knn_mask`'s (tested, ties
    included)."""
    n = spaces[0].shape[0]
    dev = spaces[0].device
    step = rows_per_block or KEY_CHUNK_ROWS
    every = torch.arange(n, device=dev)
    norms = [_squared_norms(z) for z in spaces]
    lists, width = [], 1
    for start in range(0, n, step):
        rows = every[start : start + step]
        member = torch.zeros(len(rows), n, dtype=torch.bool, device=dev)
        for z, sq in zip(spaces, norms):
            z_rows = z[rows].double()
            products = torch.empty(len(rows), n, dtype=torch.float64, device=dev)
            for c in range(0, n, KNN_LIST_COLUMNS):
                products[:, c : c + KNN_LIST_COLUMNS] = z_rows @ z[c : c + KNN_LIST_COLUMNS].double().T
            keys = _keys_of(products, sq[rows], sq, "euclidean")
            member |= among_k_smallest(keys, *kth_smallest(keys, k))
            del keys, products
        member[torch.arange(len(rows), device=dev), rows] = True
        counts = count_true(member)
        width = max(width, int(counts.max()))
        block = torch.full((len(rows), int(counts.max())), -1, dtype=torch.long, device=dev)
        r, c = member.nonzero(as_tuple=True)
        block[r, member.cumsum(1)[r, c] - 1] = c  # j at its rank among the row's members
        lists.append(block)
    out = torch.full((n, width), -1, dtype=torch.long, device=dev)
    start = 0
    for block in lists:
        out[start : start + block.shape[0], : block.shape[1]] = block
        start += block.shape[0]
    return out


def _squared_norms(features: Tensor) -> Tensor:
    """``(n,)`` float64 squared norms of the float64 rows of ``features``, one block at a time
    (the ``sq`` of :func:`_knn_space` for Euclidean keys, without its float64 copy)."""
    sq = torch.empty(features.shape[0], dtype=torch.float64, device=features.device)
    for c in range(0, features.shape[0], KNN_LIST_COLUMNS):
        z = features[c : c + KNN_LIST_COLUMNS].double()
        sq[c : c + KNN_LIST_COLUMNS] = (z * z).sum(1)
    return sq


def knn_union_bits(spaces: Sequence[Tensor], k: int, metric: str = "euclidean", chunk: Optional[int] = None) -> BitSimilarity:
    """The symmetric 0/1 similarity ``S = M | M^T`` with unit diagonal, ``M`` the per-row matrix of
    :func:`knn_row_bits`: exactly ``(knn_mask(s_1) | knn_mask(s_2) | ...)`` symmetrised, ties included,
    as an n^2 / 8-byte bit matrix (never an n x n tensor)."""
    rows = knn_row_bits(spaces, k, metric, chunk)
    return BitSimilarity(symmetrise_bits_(rows.packed, rows.n), rows.n, symmetric=True)


class KnnRadiusSimilarity(SimilarityOperator):
    """The per-row 0/1 similarity of :func:`knn_row_bits` computed on demand instead of kept as
    n^2 / 8 bits: ``M_ij = 1`` iff j is among i's k nearest rows in some space (ties to the lower
    index), or ``i = j``.

    Kept per space: the float64 rows the keys are formed from and their squared norms, and per row
    ``i`` the key of its k-th neighbour, ``radius_i``, that neighbour's index, ``last_i``, and whether
    another key ties it. The
    stable order puts ties at the lower index first, so j is among i's k nearest exactly when
    ``key_ij < radius_i``, or ``key_ij == radius_i`` and ``j <= last_i`` (:func:`kth_smallest`).
    That is ``8 n (d + 3)`` bytes per space (about 390 MB for two 128-d spaces at n = 184,477,
    against 4.25 GB of bits); a block costs one ``(rows, n, d)`` product per space, formed panel by
    panel (:meth:`_members`). Reads write their masks into arrays kept from one read to the next
    (:class:`Buffers`): two bytes per entry of the largest block read so far (two bool masks: 33 MB
    for ``dadh``'s 90-row blocks at n = 184,477, 47 MB for 128 rows) and one panel of keys, which a
    fresh array per read would allocate and fault in again every time.

    Row blocks are exact: every key, when the radii are found and when a block is read, comes from a
    product of whole :data:`KEY_TILE`-row tiles with one fixed :data:`KEY_PANEL`-column panel
    (:func:`_tiled_products`), as the keys of :func:`knn_row_bits` do, so they hold exactly its
    entries (tested, ties included, with panels of all columns and of 7 to 16); a column
    subset is cut from the full rows. Rows of ``M^T`` (:meth:`columns`, what ``dcmh`` reads for its
    text step) take the keys from the products of the columns' own tiles, transposed: an inner
    product can round differently there (float64 sums of float32 products in another order), so an
    entry could differ where a key other than the k-th's equals the k-th key to its last bit. Measured
    with Euclidean keys: none of 64 million entries at n = 8,000 (128-d tanh outputs, also
    saturated ones), none with integer outputs full of exact ties (tested); with cosine keys of
    integer outputs, 1 to 4 of 4,900 (the ``ukd`` strategy keeps bits for cosine). Not symmetrised:
    ``M | M^T`` would need both reads in every block (``knn_union_bits`` keeps bits)."""

    symmetric = False

    def __init__(self, spaces: Sequence[Tensor], k: int, metric: str = "euclidean", chunk: Optional[int] = None) -> None:
        self.n = int(spaces[0].shape[0])
        self.k, self.metric = k, metric
        self._floor = 0.0 if metric == "euclidean" else None  # reads skip the keys' clamp (among_k_smallest)
        self.chunk = _tile_chunk(chunk)
        self._buffers = Buffers()
        prepared = [_knn_space(features, metric) for features in spaces]
        device = prepared[0][0].device
        radii = [(torch.empty(self.n, dtype=torch.float64, device=device),
                  torch.empty(self.n, dtype=torch.int64, device=device),
                  torch.empty(self.n, dtype=torch.bool, device=device)) for _ in prepared]
        self._count = 0  # the 1 entries, counted in the same pass (a later mean() needs no other)
        for rows, member, kth in _knn_member_chunks(prepared, k, metric, self.chunk):
            for kept, found in zip(radii, kth):
                for whole, part in zip(kept, found):
                    whole[rows] = part
            self._count += int(torch.count_nonzero(member))
        self.spaces = [(z, sq, *kept) for (z, sq), kept in zip(prepared, radii)]

    @property
    def device(self) -> torch.device:
        return self.spaces[0][0].device

    def count(self) -> int:
        """The number of 1 entries."""
        return self._count

    def mean(self) -> float:
        """The share of 1 entries, :meth:`count` / n^2 (exact)."""
        return self._count / (self.n * self.n) if self.n else 0.0

    @no_grad
    def columns(self, cols: Tensor) -> Tensor:
        """``(len(cols), n)`` float32 0/1 rows of ``M^T``: the keys of every row against ``cols``,
        from the products of ``cols``' own whole tiles against all n rows (one ``(cols, n, d)``
        product per space, never every row's), kept in that ``(cols, n)`` layout: entry ``(q, i)``
        is the key of row i against column ``cols[q]``, the same sums as :func:`_keys_of`'s."""
        return fill_block_diagonal_(self._members(cols, by_column=True), cols).float()

    @no_grad
    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols) or n)`` float32 0/1 entries."""
        out = fill_block_diagonal_(self._members(rows, by_column=False), rows)
        return (out if cols is None else out[:, cols]).float()

    def _members(self, idx: Tensor, by_column: bool) -> Tensor:
        """``(len(idx), n)`` bool, a view of a reused array: rows ``idx`` of ``M`` (``by_column``
        False) or of ``M^T``, the diagonal not yet set. Per space and :data:`KEY_PANEL`-column panel,
        the product of ``idx``'s tiles with the panel (the shapes of :func:`_tiled_products`, so the
        same bits) becomes keys and 0/1 entries while it is in cache: :func:`_keys_of` unclamped, then
        :func:`among_k_smallest` (rows) or :func:`_among_k_smallest_by_column` on that panel, instead
        of whole ``(rows, n)`` float64 keys passed over once per step (``benchmarks/knn_speed.py``
        times both)."""
        m, n = len(idx), self.n
        tiled = _tiles(idx)
        panel = self._buffers.get("panel", len(tiled), min(n, KEY_PANEL), torch.float64, self.device)
        out = self._buffers.get("member", m, n, torch.bool, self.device)
        for s, (z, sq, radius, last, tied) in enumerate(self.spaces):
            mask = out if s == 0 else self._buffers.get("space", m, n, torch.bool, self.device)
            a, sq_idx = z[tiled], sq[idx][:, None]
            if not by_column:
                r, last_idx = radius[idx][:, None], last[idx]
                tied_rows = tied[idx].nonzero().flatten()
            for j in range(0, n, KEY_PANEL):
                w = min(KEY_PANEL, n - j)
                keys = torch.mm(a, z[j : j + w].T, out=panel[:, :w])[:m]
                if self.metric == "cosine":
                    keys.neg_()
                elif by_column:  # entry (q, i): row i's key against column idx[q], (sq_i + (-2) p) + sq_q
                    torch.add(sq[None, j : j + w], keys, alpha=-2.0, out=keys).add_(sq_idx)
                else:
                    torch.add(sq_idx, keys, alpha=-2.0, out=keys).add_(sq[None, j : j + w])
                dest = mask[:, j : j + w]
                if by_column:
                    _among_k_smallest_by_column(keys, radius[j : j + w], last[j : j + w], tied[j : j + w], idx,
                                                self._floor, out=dest)
                    continue
                torch.le(keys, r, out=dest)
                if len(tied_rows):  # among_k_smallest's rule for rows whose k-th key is tied
                    sub, rt = keys[tied_rows], r[tied_rows]
                    if self._floor is not None:
                        sub.clamp_(min=self._floor)
                    at = torch.arange(j, j + w, device=keys.device)
                    dest[tied_rows] = (sub < rt) | ((sub == rt) & (at[None, :] <= last_idx[tied_rows, None]))
            if not by_column:
                mask[torch.arange(m, device=mask.device), last_idx] = True
            if s:
                out.logical_or_(mask)
        return out




def kth_largest(chunks: Callable[[], Iterator[Tensor]], k: int) -> float:
    """The exact k-th largest (1-based) of all the float32 values that ``chunks()`` yields, over two
    passes (``chunks`` is called twice and must yield the same values), without holding them: a
    radix selection on the values' order-preserving int32 keys, the upper 16 bits in the first
    pass, the lower 16 among the values that share the selected upper bits in the second. No NaN."""
    return kth_largest_and_count(chunks, k)[0]


def kth_largest_and_count(chunks: Callable[[], Iterator[Tensor]], k: int) -> tuple[float, Optional[int]]:
    """:func:`kth_largest`'s value ``t`` and, from the same two passes, how many of the values are ``>= t``
    (float comparison: ``k`` plus the ties of ``t`` ranked after it), so that a caller thresholding at
    ``t`` needs no third pass to count. The count is None only where the keys' order and ``>=`` part:
    ``t`` is ``+0.0`` (then ``-0.0`` values, below it in key order, compare equal to it)."""
    def keys(x: Tensor) -> Tensor:
        i = x.float().contiguous().view(torch.int32).flatten()
        return i ^ ((i >> 31) & 0x7FFFFFFF)  # signed order = float order (-0.0 just below +0.0)

    hi_counts = None
    for x in chunks():
        h = torch.bincount((keys(x) >> 16) + 32768, minlength=1 << 16)
        hi_counts = h if hi_counts is None else hi_counts + h
    if hi_counts is None or k < 1 or k > int(hi_counts.sum()):
        raise ValueError(f"k = {k} is outside 1 .. the number of values")
    above = torch.flip(torch.cumsum(torch.flip(hi_counts, [0]), 0), [0])  # above[b] = count(hi >= b)
    hi = int(torch.nonzero(above >= k).max())
    rank = k - (int(above[hi + 1]) if hi + 1 < (1 << 16) else 0)  # rank within the bucket hi
    lo_counts = torch.zeros(1 << 16, dtype=torch.int64, device=hi_counts.device)
    for x in chunks():
        key = keys(x)
        lo_counts += torch.bincount(key[(key >> 16) == hi - 32768] & 0xFFFF, minlength=1 << 16)
    above_lo = torch.flip(torch.cumsum(torch.flip(lo_counts, [0]), 0), [0])
    lo = int(torch.nonzero(above_lo >= rank).max())
    key = (hi - 32768) * 65536 + lo
    bits = key if key >= 0 else key ^ 0x7FFFFFFF  # back to the float's int32 bit pattern
    value = float(torch.tensor([bits], dtype=torch.int32).view(torch.float32).item())
    at_least = k - rank + int(above_lo[lo])  # the keys above the bucket hi, then those in it from lo up
    return value, (None if key == 0 else at_least)

"""Reading MATLAB files (v5 via scipy, v7.3/HDF5 via h5py) and checking what they hold.

Public CMH code ships the same numbers in many layouts: items as rows or as columns, labels as
class ids or one-hot rows, MAT v5 or v7.3. The functions here normalise them to items-as-rows
float32 features and uint8 multi-hot labels, and name the offending variable when something is off.

Memory: :func:`read_features` reads a v7.3 (HDF5) feature matrix block by block straight into one
preallocated items-as-rows float32 array, so a load peaks at the matrix plus one block of about
:data:`READ_BLOCK_BYTES` (never a whole transient copy); :func:`as_features` converts and checks
in row blocks of at most :data:`CHECK_BLOCK_ENTRIES` entries and does not copy an array that is
already C-ordered float32. A v5 file is read whole by scipy, so there the load holds the matrix as
stored plus the float32 result (if it is not float32 C-ordered already).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from cmhbench.errors import DataError
from cmhbench.lazy import lazy_import

h5py = lazy_import("h5py")
scipy_io = lazy_import("scipy.io")  # 0.3 s, only when a MAT file is read

READ_BLOCK_BYTES = 16 * 2**20
"""Bytes (as stored) of the block of items :func:`read_features` reads from a v7.3 file at a time
(rounded to whole HDF5 chunks along the items, at least one chunk)."""
CHECK_BLOCK_ENTRIES = 1 << 22
"""Entries :func:`as_features` converts and checks for NaN / infinity at a time (16 MiB of float32)."""


def read_mat(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Read the variables ``names`` from a MAT file of either version.

    Arrays come back as MATLAB shows them (``rows x columns``): h5py's reversed axis order for
    v7.3 files is undone here. A missing variable, or a file that is neither format, raises a
    :class:`DataError` naming the file and the variable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                missing = [n for n in names if n not in f]
                if missing:
                    raise DataError(
                        f"{path}: variable(s) {', '.join(missing)} not found (it holds {', '.join(sorted(f.keys()))})"
                    )
                out = {}
                for n in names:
                    node = f[n]
                    if not isinstance(node, h5py.Dataset):
                        raise DataError(f"{path}: variable {n} is not a numeric array")
                    out[n] = np.asarray(node[()]).T
                return out
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - h5py raises many kinds on corrupt files
            raise DataError(f"{path}: cannot read as MAT v7.3/HDF5 ({type(exc).__name__}: {exc})") from None
    try:
        content = scipy_io.loadmat(str(path), variable_names=list(names))
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError, MatReadError, OSError, ...
        raise DataError(f"{path}: not a readable MAT file, v5 or v7.3 ({type(exc).__name__}: {exc})") from None
    missing = [n for n in names if n not in content]
    if missing:
        try:
            held = sorted(w[0] for w in scipy_io.whosmat(str(path)))
        except Exception:  # noqa: BLE001
            held = []
        raise DataError(f"{path}: variable(s) {', '.join(missing)} not found (it holds {', '.join(held) or 'nothing'})")
    return {n: np.asarray(content[n]) for n in names}


def common_item_count(arrays: Mapping[str, np.ndarray]) -> int:
    """The number of items shared by arrays stored either as rows or as columns.

    The item count is the axis length every array has; where two lengths qualify, the larger one
    (items outnumber feature dimensions in every CMH dataset).
    """
    shapes = {name: set(np.shape(a)) | ({1} if np.ndim(a) == 1 else set()) for name, a in arrays.items()}
    common = set.intersection(*shapes.values()) - {1} if shapes else set()
    if not common:
        desc = ", ".join(f"{n} {tuple(np.shape(a))}" for n, a in arrays.items())
        raise DataError(f"variables do not agree on a number of items: {desc}")
    return max(common)


def to_rows(name: str, arr: np.ndarray, n_items: int) -> np.ndarray:
    """``arr`` as ``(n_items, d)``, transposing when the items are its columns."""
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 2-D matrix, got shape {arr.shape}")
    if arr.shape[0] == n_items:
        return arr
    if arr.shape[1] == n_items:
        return arr.T
    raise DataError(f"{name}: shape {arr.shape} has no axis of {n_items} items")


def as_features(name: str, arr: np.ndarray, n_items: int) -> np.ndarray:
    """Features as ``(n_items, d)`` float32; rejects non-numeric, empty, NaN or infinite values."""
    arr = to_rows(name, arr, n_items)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{name}: expected numeric features, got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise DataError(f"{name}: features have zero dimensions")
    same = arr.dtype == np.float32 and arr.flags.c_contiguous  # kept as it is, as np.ascontiguousarray does
    out = arr if same else np.empty(arr.shape, dtype=np.float32)
    step = max(1, CHECK_BLOCK_ENTRIES // arr.shape[1])
    bad = _NonFinite(name)
    for start in range(0, arr.shape[0], step):
        if not same:
            out[start : start + step] = arr[start : start + step]  # numpy's cast, as np.ascontiguousarray
        bad.check(out[start : start + step], start)
    bad.raise_if_any()
    return out


class _NonFinite:
    """Counts NaN / infinite entries over consecutive row blocks of a features matrix, remembering
    the first (row-major order); raises the :class:`DataError` the whole-matrix check raised."""

    def __init__(self, name: str) -> None:
        self.name, self.count, self.first = name, 0, None

    def check(self, block: np.ndarray, start: int) -> None:
        """Look at ``block``, the rows ``start ..`` of the matrix."""
        bad = ~np.isfinite(block)
        count = int(np.count_nonzero(bad))
        if count and self.first is None:
            r, c = np.argwhere(bad)[0]
            self.first = (start + int(r), int(c))
        self.count += count

    def raise_if_any(self) -> None:
        if self.count:
            r, c = self.first
            raise DataError(f"{self.name}: {self.count} NaN or infinite value(s), first at item {r}, dimension {c}")


def read_features(path: Path, name: str, n_items: int) -> np.ndarray:
    """``as_features(name, read_mat(path, [name])[name], n_items)``: the variable ``name`` as
    ``(n_items, d)`` C-ordered float32, checked, with the same values and the same errors.

    A 2-D variable of a v7.3 (HDF5) file is read a block of items at a time (whole HDF5 chunks, about
    :data:`READ_BLOCK_BYTES` as stored) into one preallocated float32 array, each block converted
    with numpy's cast and checked for NaN / infinity as it arrives: the load holds the result plus
    one block. A v5 file (read whole by scipy) goes through :func:`read_mat` and :func:`as_features`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if not h5py.is_hdf5(path):
        return as_features(name, read_mat(path, [name])[name], n_items)
    try:
        with h5py.File(path, "r") as f:
            if name not in f:
                raise DataError(f"{path}: variable(s) {name} not found (it holds {', '.join(sorted(f.keys()))})")
            node = f[name]
            if not isinstance(node, h5py.Dataset):
                raise DataError(f"{path}: variable {name} is not a numeric array")
            if node.ndim != 2:
                return as_features(name, np.asarray(node[()]).T, n_items)
            return _read_h5_features(name, node, n_items)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises many kinds on corrupt files
        raise DataError(f"{path}: cannot read as MAT v7.3/HDF5 ({type(exc).__name__}: {exc})") from None


def _read_h5_features(name: str, node, n_items: int) -> np.ndarray:
    """The 2-D HDF5 dataset ``node`` (h5py's axes: MATLAB's reversed) as checked ``(n_items, d)``
    float32, read block by block along its items; the checks and messages of :func:`as_features`."""
    shape = tuple(node.shape)[::-1]  # as MATLAB shows it (rows x columns)
    if shape[0] == n_items:  # items are MATLAB's rows: h5py's axis 1
        axis, d = 1, shape[1]
    elif shape[1] == n_items:  # items are MATLAB's columns: h5py's axis 0
        axis, d = 0, shape[0]
    else:
        raise DataError(f"{name}: shape {shape} has no axis of {n_items} items")
    if not (np.issubdtype(node.dtype, np.number) or node.dtype == np.bool_):
        raise DataError(f"{name}: expected numeric features, got dtype {node.dtype}")
    if d == 0:
        raise DataError(f"{name}: features have zero dimensions")
    per_chunk = node.chunks[axis] if node.chunks else 1
    step = max(1, READ_BLOCK_BYTES // max(1, d * node.dtype.itemsize)) // per_chunk * per_chunk or per_chunk
    out = np.empty((n_items, d), dtype=np.float32)
    bad = _NonFinite(name)
    for start in range(0, n_items, step):
        stop = min(n_items, start + step)
        out[start:stop] = node[:, start:stop].T if axis == 1 else node[start:stop, :]
        bad.check(out[start:stop], start)
    bad.raise_if_any()
    return out


def as_multi_hot(name: str, arr: np.ndarray, n_items: int, class_ids: Iterable[int] | None = None) -> np.ndarray:
    """Labels as ``(n_items, c)`` uint8 multi-hot.

    Accepts a vector of integer class ids (any base, e.g. 1..10; ``class_ids`` fixes the class
    order when several arrays must agree) or a 0/1 matrix with items as rows or columns.
    """
    arr = np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{name}: expected numeric labels, got dtype {arr.dtype}")
    if arr.size and not np.isfinite(arr.astype(np.float64)).all():
        raise DataError(f"{name}: labels hold NaN or infinite values")
    if arr.ndim == 1 or 1 in arr.shape[:2] and arr.size == n_items:
        ids = arr.reshape(-1)
        if ids.size != n_items:
            raise DataError(f"{name}: {ids.size} class ids for {n_items} items")
        if not np.all(np.equal(np.mod(ids, 1), 0)):
            raise DataError(f"{name}: class ids must be integers")
        ids = ids.astype(np.int64)
        classes = np.array(sorted(set(class_ids) if class_ids is not None else set(ids.tolist())), dtype=np.int64)
        pos = np.searchsorted(classes, ids)
        if (pos >= classes.size).any() or (classes[np.minimum(pos, classes.size - 1)] != ids).any():
            raise DataError(f"{name}: class ids outside the known classes {classes.tolist()}")
        out = np.zeros((n_items, classes.size), dtype=np.uint8)
        out[np.arange(n_items), pos] = 1
        return out
    mat = to_rows(name, arr, n_items)
    values = np.unique(mat)
    if not np.isin(values, (0, 1)).all():
        raise DataError(f"{name}: a label matrix must hold only 0 and 1 (found {values[:5].tolist()})")
    return np.ascontiguousarray(mat, dtype=np.uint8)


def variable_shape(path: Path, name: str) -> tuple[int, ...]:
    """The shape MATLAB shows for variable ``name`` of a MAT file of either version, without reading it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                if name not in f:
                    raise DataError(f"{path}: variable(s) {name} not found (it holds {', '.join(sorted(f.keys()))})")
                return tuple(f[name].shape)[::-1]
        held = {w[0]: tuple(w[1]) for w in scipy_io.whosmat(str(path))}
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a readable MAT file, v5 or v7.3 ({type(exc).__name__}: {exc})") from None
    if name not in held:
        raise DataError(f"{path}: variable(s) {name} not found (it holds {', '.join(sorted(held)) or 'nothing'})")
    return held[name]


def check_nonnegative(name: str, arr: np.ndarray) -> np.ndarray:
    """``arr`` unchanged; a bag-of-words or tag matrix with negative entries raises a :class:`DataError`."""
    if arr.size and arr.min() < 0:
        r, c = np.argwhere(arr < 0)[0]
        raise DataError(f"{name}: a bag-of-words matrix must not hold negative values (first at item {r}, dimension {c})")
    return arr


def check_classes(name: str, labels: np.ndarray, expected: int | None) -> np.ndarray:
    """``labels`` unchanged when they have ``expected`` columns (any number when None)."""
    if expected is not None and labels.shape[1] != expected:
        raise DataError(f"{name}: expected {expected} label columns, got {labels.shape[1]}")
    return labels

"""Reading MATLAB files (v5 via scipy, v7.3/HDF5 via h5py) and checking what they hold.

Public CMH code ships the same numbers in many layouts: items as rows or as columns, labels as
class ids or one-hot rows, MAT v5 or v7.3. The functions here normalise them to items-as-rows
float32 features and uint8 multi-hot labels, and name the offending variable when something is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from cmhbench.errors import DataError
from cmhbench.lazy import lazy_import

h5py = lazy_import("h5py")
scipy_io = lazy_import("scipy.io")  # 0.3 s, only when a MAT file is read


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
    out = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{name}: {int(bad.sum())} NaN or infinite value(s), first at item {r}, dimension {c}")
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

"""Binary codes: turning real outputs into ``{-1,+1}``, checking arrays, Hamming distances."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cmhbench.errors import DataError
from cmhbench.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor


def sign_codes(x: Tensor) -> Tensor:
    """``(n, bits)`` real values -> ``(n, bits)`` int8 codes in ``{-1,+1}`` (``sign(0) = +1``)."""
    if not torch.isfinite(x).all():
        raise ValueError("cannot binarise NaN or infinite outputs")
    return torch.where(x >= 0, 1, -1).to(torch.int8)


def check_codes(name: str, arr: np.ndarray) -> np.ndarray:
    """Validate a ``(n, bits)`` array of ``{-1,+1}`` codes of any numeric dtype; return int8.

    Raises :class:`DataError` naming ``name`` for a wrong rank, an empty array, NaN, or any value
    other than -1 and +1.
    """
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 2-D (items x bits) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: empty array of shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{name}: expected numeric codes, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise DataError(f"{name}: holds NaN or infinite values")
    bad = (arr != 1) & (arr != -1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{name}: values must be -1 or +1, found {arr[r, c].item()!r} at row {r}, bit {c}")
    return arr.astype(np.int8)


def check_labels(name: str, arr: np.ndarray) -> np.ndarray:
    """Validate a ``(n, c)`` 0/1 multi-hot label array; return uint8."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: expected a non-empty 2-D (items x classes) array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{name}: expected numeric labels, got dtype {arr.dtype}")
    as_float = arr.astype(np.float64, copy=False)
    if not np.isfinite(as_float).all():
        raise DataError(f"{name}: holds NaN or infinite values")
    if ((as_float != 0) & (as_float != 1)).any():
        raise DataError(f"{name}: labels must be 0 or 1 (multi-hot)")
    return arr.astype(np.uint8)


def hamming_distances(query: Tensor, database: Tensor) -> Tensor:
    """``(q, bits)`` and ``(n, bits)`` ``{-1,+1}`` codes -> ``(q, n)`` int32 Hamming distances.

    Computed as ``(bits - q . b) / 2`` with a float32 matrix product, exact for any code length
    below 2**24 bits.
    """
    bits = query.shape[1]
    inner = query.to(torch.float32) @ database.to(torch.float32).T
    return ((bits - inner) * 0.5).round_().to(torch.int32)

"""From checked arrays to a dataset: the usual filtering of unlabelled items and the default splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from cmhbench.data.dataset import CrossModalData, Loaded, RawData
from cmhbench.data.images import mat_images
from cmhbench.data.protocols import resolve


def labelled_items(labels: np.ndarray, tags: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices of the items with at least one label (and, when ``tags`` is given, at least one tag).

    ``labels`` ``(n, c)`` multi-hot, ``tags`` ``(n, d)`` bag-of-words; returns sorted int64 indices.
    """
    keep = labels.sum(axis=1) > 0
    if tags is not None:
        keep &= (tags != 0).any(axis=1)
    return np.flatnonzero(keep).astype(np.int64)


def assemble(
    name: str,
    labels: np.ndarray,
    protocol: str,
    protocol_params: Mapping[str, Mapping[str, int]],
    *,
    image: Optional[np.ndarray] = None,
    images: Any = None,
    text: Optional[np.ndarray] = None,
    texts: Optional[tuple[str, ...]] = None,
    origin: str = "",
    details: Optional[dict] = None,
    class_names: tuple[str, ...] = (),
) -> Loaded:
    """A :class:`CrossModalData` (``image`` features given) or :class:`RawData` (``images`` given)
    under the split protocol ``protocol`` with this dataset's sizes ``protocol_params``.

    Arrays must already be filtered and row-aligned: ``image`` ``(n, d_i)`` float32 or ``images``
    an :class:`~cmhbench.data.dataset.ImageSource` of n images; ``text`` ``(n, d_t)`` float32 or
    ``texts`` n strings; ``labels`` ``(n, c)`` uint8.
    """
    splits = resolve(protocol, protocol_params).splits(labels)
    common = dict(name=name, labels=labels, splits=splits, origin=origin, class_names=class_names, details=dict(details or {}))
    if image is not None:
        return CrossModalData(image=image, text=text, **common)
    return RawData(images=images, text=text, texts=texts, **common)


def from_files(
    name: str,
    layout: str,
    files: Mapping[str, Path],
    protocol: str,
    protocol_params: Mapping[str, Mapping[str, int]],
    labels: np.ndarray,
    text: np.ndarray,
    keep: np.ndarray,
    filter_rule: str,
    image: Optional[np.ndarray] = None,
    images_from: Optional[tuple[Path, str]] = None,
    **extra: Any,
) -> Loaded:
    """A dataset read from ``files`` in ``layout``: keeps the items ``keep`` (the others fail the
    dataset's ``filter_rule``) and records the layout, file names and filtering in ``details``.

    ``image`` holds ``(n, d)`` features, or ``images_from`` names ``(file, variable)`` of a 4-D
    pixel array (read lazily); ``text`` ``(n, d_t)`` and ``labels`` ``(n, c)`` cover all n items.
    """
    n = labels.shape[0]
    details = {
        "layout": layout,
        "files": sorted({Path(p).name for p in files.values()}),
        "items_in_files": int(n),
        "filtered_out": int(n - keep.size),
        "filter": filter_rule,
        **extra,
    }
    common = dict(text=kept_rows(text, keep), origin=str(Path(next(iter(files.values()))).parent), details=details)
    if image is not None:
        return assemble(name, kept_rows(labels, keep), protocol, protocol_params, image=kept_rows(image, keep), **common)
    path, variable = images_from
    return assemble(name, kept_rows(labels, keep), protocol, protocol_params,
                    images=mat_images(path, variable, n, keep=keep), **common)


def kept_rows(arr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``arr[keep]`` for the row indices ``keep``; ``arr`` itself (no copy of the whole matrix) when
    ``keep`` is every row in order (``0 .. n-1``), as in the public files, which are already filtered."""
    keep = np.asarray(keep)
    n = arr.shape[0]
    if keep.ndim == 1 and keep.size == n and keep.dtype.kind in "iu" and (n == 0 or (keep[0] == 0 and keep[-1] == n - 1)):
        if np.array_equal(keep, np.arange(n, dtype=keep.dtype)):
            return arr
    return arr[keep]

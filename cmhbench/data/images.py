"""Raw images of a dataset, read on demand: 4-D pixel arrays in MAT/HDF5 files, or image files.

DCMH-lineage files store images as MATLAB ``H x W x 3 x N`` uint8 arrays (``IAll`` in
``mirflickr25k-iall.mat``, ``images`` in ``FLICKR-25K.mat``); MAT v7.3 files hold them in HDF5,
where h5py shows the axes reversed (``N x 3 x W x H``). :class:`ArrayImages` reads such arrays a
batch at a time without loading the whole file (25,000 images are 3.7 GB), whichever axis holds
the items. :class:`FileImages` reads image files named by the raw JSONL layout.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional, Sequence

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError

from cmhbench.errors import DataError

HASH_BATCH = 256


def image_axes(name: str, matlab_shape: tuple[int, ...], n_items: int) -> tuple[int, int, int, int]:
    """Axes ``(item, height, width, channel)`` of a 4-D image array as MATLAB shows it.

    The item axis is the one of length ``n_items`` (the last, as MATLAB stores ``H x W x C x N``,
    when several qualify); the channel axis the remaining one of length 3 or 1; height and width
    the other two, in order.
    """
    if len(matlab_shape) != 4:
        raise DataError(f"{name}: expected a 4-D image array (H x W x 3 x N), got shape {matlab_shape}")
    items = [a for a in (3, 0, 1, 2) if matlab_shape[a] == n_items]
    if not items:
        raise DataError(f"{name}: shape {matlab_shape} has no axis of {n_items} items")
    item = items[0]
    rest = [a for a in range(4) if a != item]
    channels = [a for a in rest if matlab_shape[a] in (3, 1)]
    if not channels:
        raise DataError(f"{name}: shape {matlab_shape} has no colour axis of length 3 (or 1)")
    channel = channels[-1]
    height, width = [a for a in rest if a != channel]
    return item, height, width, channel


class ArrayImages:
    """Images stored in one 4-D array of a MAT v5 file (``array``, a numpy array) or of a MAT
    v7.3/HDF5 file (``path`` and ``variable``, read lazily). ``keep`` selects and orders the items
    (after filtering); ``n_items`` is the number of items in the file.
    """

    def __init__(
        self,
        name: str,
        n_items: int,
        array: Optional[np.ndarray] = None,
        path: Optional[Path] = None,
        variable: str = "",
        keep: Optional[np.ndarray] = None,
    ) -> None:
        self.name = name
        self.array = array
        self.path = Path(path) if path is not None else None
        self.variable = variable
        if array is not None:
            storage_shape = tuple(array.shape)
            matlab_shape = storage_shape
        else:
            with h5py.File(self.path, "r") as f:
                node = f[variable]
                if not isinstance(node, h5py.Dataset):
                    raise DataError(f"{name}: not a numeric array")
                storage_shape = tuple(node.shape)
            matlab_shape = storage_shape[::-1]
        item, height, width, channel = image_axes(name, matlab_shape, n_items)
        if array is None:  # h5py shows MATLAB's axes reversed
            item, height, width, channel = (3 - a for a in (item, height, width, channel))
        self._item_axis = item
        self._perm = (item, height, width, channel)
        self.keep = np.arange(n_items) if keep is None else np.asarray(keep, dtype=np.int64)
        self.shape = tuple(storage_shape[a] for a in (height, width, channel))

    def __len__(self) -> int:
        return int(self.keep.size)

    def _read(self, source: Any, rows: np.ndarray) -> np.ndarray:
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        index: list[Any] = [slice(None)] * 4
        index[self._item_axis] = sorted_rows
        block = np.asarray(source[tuple(index)])
        block = np.transpose(block, self._perm)
        out = np.empty_like(block)
        out[order] = block
        return out

    def pixels(self, indices: Sequence[int]) -> np.ndarray:
        """``(len(indices), H, W, 3)`` uint8 pixels of the given items."""
        rows = self.keep[np.asarray(indices, dtype=np.int64)]
        if rows.size == 0:
            return np.zeros((0, *self.shape[:2], 3), dtype=np.uint8)
        try:
            if self.array is not None:
                block = self._read(self.array, rows)
            else:
                with h5py.File(self.path, "r") as f:
                    block = self._read(f[self.variable], rows)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - h5py raises many kinds on damaged files
            raise DataError(f"{self.name}: cannot read images ({type(exc).__name__}: {exc})") from None
        return _as_uint8(self.name, block)

    def load(self, indices: Sequence[int]) -> list[Image.Image]:
        """The images of ``indices`` as RGB ``PIL.Image`` objects."""
        return [Image.fromarray(p) for p in self.pixels(indices)]

    def fingerprint(self) -> str:
        """SHA-256 of the kept items' pixels (``N x H x W x 3`` uint8, in item order)."""
        h = hashlib.sha256(str(self.shape).encode())
        for start in range(0, len(self), HASH_BATCH):
            h.update(self.pixels(range(start, min(start + HASH_BATCH, len(self)))).tobytes())
        return h.hexdigest()


def _as_uint8(name: str, block: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(block.dtype, np.number) or block.dtype == np.bool_):
        raise DataError(f"{name}: expected numeric pixels, got dtype {block.dtype}")
    if block.dtype != np.uint8:
        values = block.astype(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{name}: pixels hold NaN or infinite values")
        if values.min() < 0 or values.max() > 255:
            raise DataError(f"{name}: pixel values must lie in 0..255 (found {values.min():g}..{values.max():g})")
        block = np.rint(values).astype(np.uint8)
    if block.shape[-1] == 1:
        block = np.repeat(block, 3, axis=-1)
    return np.ascontiguousarray(block)


class FileImages:
    """Images stored as files (any format Pillow reads), one path per item."""

    def __init__(self, root: Path, names: Sequence[str]) -> None:
        self.root = Path(root)
        self.names = list(names)
        missing = [n for n in self.names if not (self.root / n).is_file()]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DataError(f"image file {self.root / missing[0]} not found{more}")

    def __len__(self) -> int:
        return len(self.names)

    def load(self, indices: Sequence[int]) -> list[Image.Image]:
        """The images of ``indices`` as RGB ``PIL.Image`` objects."""
        out = []
        for i in indices:
            path = self.root / self.names[int(i)]
            try:
                with Image.open(path) as img:
                    out.append(img.convert("RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
        return out

    def fingerprint(self) -> str:
        """SHA-256 over every image file's name and bytes, in item order."""
        h = hashlib.sha256()
        for name in self.names:
            h.update(name.encode("utf-8") + b"\0")
            with open(self.root / name, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()


def mat_images(path: Path, variable: str, n_items: int, keep: Optional[np.ndarray] = None) -> ArrayImages:
    """The 4-D image array ``variable`` of a MAT file: read lazily from MAT v7.3/HDF5, in memory from v5."""
    from cmhbench.data.matfile import read_mat

    name = f"{Path(path).name}:{variable}"
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if variable not in f:
                raise DataError(f"{path}: variable(s) {variable} not found (it holds {', '.join(sorted(f.keys()))})")
        return ArrayImages(name, n_items, path=path, variable=variable, keep=keep)
    return ArrayImages(name, n_items, array=read_mat(path, [variable])[variable], keep=keep)

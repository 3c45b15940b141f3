"""Writers of small dataset files in the formats public CMH code ships (same names, layouts, dtypes).

Sizes are small (a hundred items, narrow features) but every variable has the name, orientation
and dtype of the public release: MATLAB ``-v7.3`` files are HDF5 with a 512-byte MAT header and
axes reversed as h5py shows them; MAT v5 files come from scipy; DCMH-lineage pixels are
``H x W x 3 x N`` uint8.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

MAT73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def write_mat(path: Path, arrays: dict, version: str = "v5", columns: bool = False) -> None:
    """Write ``arrays`` as MATLAB would: ``v5`` (scipy) or ``v73`` (HDF5). ``columns`` stores every
    2-D matrix transposed (items as columns), as some public files do."""
    arrays = {k: (np.asarray(v).T if columns and np.ndim(v) == 2 else np.asarray(v)) for k, v in arrays.items()}
    if version == "v5":
        scipy.io.savemat(path, arrays)
        return
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in arrays.items():
            f[k] = v.T  # h5py shows MATLAB's axes reversed
    with open(path, "r+b") as fh:
        fh.write(MAT73_HEADER.ljust(128, b" "))


def write_h5py(path: Path, arrays: dict, columns: bool = False) -> None:
    """Write ``arrays`` as a Python program does with h5py (items as rows unless ``columns``)."""
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = np.asarray(v).T if columns else np.asarray(v)


def multi_labels(rng: np.random.Generator, n: int, c: int, unlabelled: int = 0) -> np.ndarray:
    """``(n, c)`` float64 0/1 labels, every item labelled except the first ``unlabelled``."""
    labels = (rng.random((n, c)) < 0.2).astype(np.float64)
    labels[np.arange(n), rng.integers(0, c, n)] = 1.0
    labels[:unlabelled] = 0.0
    return labels


def mir_arrays(rng: np.random.Generator, n: int = 120, unlabelled: int = 4, untagged: int = 3,
               image_dim: int = 32, text_dim: int = 50, pixels: tuple[int, int] = (0, 0)) -> dict:
    """MIRFlickr-shaped arrays: ``XAll`` single (N x d), ``YAll`` double 0/1 tags, ``LAll`` double
    0/1 (N x 24), and ``IAll`` uint8 H x W x 3 x N when ``pixels`` is given. The first
    ``unlabelled`` items have no label and the next ``untagged`` no tag (both get filtered)."""
    labels = multi_labels(rng, n, 24, unlabelled)
    tags = (rng.random((n, text_dim)) < 0.15).astype(np.float64)
    tags[np.arange(n), rng.integers(0, text_dim, n)] = 1.0
    tags[unlabelled : unlabelled + untagged] = 0.0
    out = {"XAll": rng.random((n, image_dim)).astype(np.float32), "YAll": tags, "LAll": labels}
    if pixels != (0, 0):
        out["IAll"] = rng.integers(0, 256, (*pixels, 3, n), dtype=np.uint8)
    return out


def write_mirflickr(folder: Path, layout: str, version: str, arrays: dict, columns: bool = False) -> None:
    """Write MIRFlickr ``arrays`` in one of the layouts: ``vgg``, ``iall``, ``flickr25k`` (pixels in
    ``images``), ``flickr25k-features`` (DADH: features in ``images``), ``ugach`` (text files)."""
    folder.mkdir(parents=True, exist_ok=True)
    tags_labels = {"YAll": arrays["YAll"], "LAll": arrays["LAll"]}
    if layout in ("vgg", "iall"):
        write_mat(folder / "mirflickr25k-yall.mat", {"YAll": arrays["YAll"]}, version, columns)
        write_mat(folder / "mirflickr25k-lall.mat", {"LAll": arrays["LAll"]}, version, columns)
        if layout == "vgg":
            write_mat(folder / "mirflickr25k-iall-vgg.mat", {"XAll": arrays["XAll"]}, version, columns)
        else:
            write_mat(folder / "mirflickr25k-iall.mat", {"IAll": arrays["IAll"]}, version, columns)
    elif layout == "flickr25k":
        write_mat(folder / "FLICKR-25K.mat", {"images": arrays["IAll"], **tags_labels}, version, columns)
    elif layout == "flickr25k-features":
        write_mat(folder / "FLICKR-25K.mat", {"images": arrays["XAll"], **tags_labels}, version, columns)
    elif layout == "ugach":
        for name, key in (("img", "XAll"), ("txt", "YAll"), ("label", "LAll")):
            fmt = "%.6f" if key == "XAll" else "%d"
            np.savetxt(folder / f"train_{name}.txt", arrays[key], fmt=fmt, delimiter=" ", newline="\r\n")
    else:
        raise ValueError(layout)


def write_raw_folder(folder: Path, captions: dict, n: int, rng: np.random.Generator, split: bool = False) -> list[dict]:
    """A raw-layout folder: ``n`` small PNG images and ``items.jsonl`` with real captions and their
    categories (``captions``: the Pascal Sentences JSON); returns the written lines."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (name, entry) in enumerate(list(captions.items())[:n]):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(folder / "images" / f"{k:04d}.png")
        line = {"image": f"images/{k:04d}.png", "text": entry["captions"][0], "labels": [entry["category"]]}
        if split:
            line["split"] = "query" if k % 5 == 0 else "database"
        lines.append(line)
    (folder / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return lines


def pascal_subset(shared_data: Path, per_category: int, categories: int) -> dict:
    """The first ``per_category`` images of the first ``categories`` Pascal Sentences categories."""
    data = json.loads((shared_data / "pascal-sentences" / "pascal_sentences.json").read_text())
    chosen: dict = {}
    counts: dict = {}
    for name, entry in data.items():
        cat = entry["category"]
        if cat not in counts and len(counts) == categories:
            continue
        if counts.get(cat, 0) < per_category:
            counts[cat] = counts.get(cat, 0) + 1
            chosen[name] = entry
    return chosen

"""The UGACH/UKD text format: whitespace-separated matrices, one item per line.

PKU-ICST-MIPL/UGACH_AAAI2018 (``utils.py``) and the UKD teacher read MIRFlickr-25K and NUS-WIDE
as ``<part>_img.txt`` (image features, e.g. 4096-d VGG19 fc7), ``<part>_txt.txt`` (tag
bag-of-words, 1386-d on MIRFlickr) and ``<part>_label.txt`` (0/1 labels, 24 on MIRFlickr), for
the parts ``train``, ``validation``, ``test`` and ``database``; lines end in CRLF or LF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmhbench.errors import DataError

PARTS = ("train", "validation", "database", "test")
MODALITIES = ("img", "txt", "label")


def read_matrix(path: Path) -> np.ndarray:
    """A whitespace-separated numeric text file as ``(lines, columns)`` float32.

    Every line must hold the same number of values; a ragged line or a non-number raises a
    :class:`DataError` naming the file (and the line where pandas reports one).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    import pandas as pd  # imported here: 0.3 s that listing datasets does not need

    try:
        frame = pd.read_csv(path, sep=r"\s+", header=None, dtype=np.float32, engine="c")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a whitespace-separated numeric matrix ({' '.join(str(exc).split())})") from None
    return frame.to_numpy(dtype=np.float32)


def parts_present(folder: Path) -> list[str]:
    """The parts (``train``, ``database``...) whose three files are all in ``folder``, in :data:`PARTS` order."""
    return [p for p in PARTS if all((Path(folder) / f"{p}_{m}.txt").is_file() for m in MODALITIES)]


def read_part(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, text, labels)`` float32 matrices of one part, checked to hold the same number of lines."""
    arrays = tuple(read_matrix(Path(folder) / f"{part}_{m}.txt") for m in MODALITIES)
    counts = {f"{part}_{m}.txt": a.shape[0] for m, a in zip(MODALITIES, arrays)}
    if len(set(counts.values())) != 1:
        raise DataError(f"{folder}: files hold different numbers of items ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return arrays

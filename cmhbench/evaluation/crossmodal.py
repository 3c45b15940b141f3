"""Cross-modal code sets: the ``.npz`` exchange format and evaluation in every direction.

A code set holds ``query_image_codes``, ``query_text_codes``, ``db_image_codes``,
``db_text_codes`` (``(n, bits)``, values ``{-1,+1}``, any numeric dtype) and ``query_labels``,
``db_labels`` (``(n, c)``, 0/1). ``i2t`` ranks the database's text codes for each query image
code, ``t2i`` the database's image codes for each query text code; ``i2i`` and ``t2t`` stay
within one modality.
"""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from cmhbench.errors import DataError
from cmhbench.evaluation.codes import check_codes, check_labels
from cmhbench.evaluation.metrics import DEFAULT_PRECISION_AT, DEFAULT_TOPK, retrieval_metrics

CODE_KEYS = ("query_image_codes", "query_text_codes", "db_image_codes", "db_text_codes")
LABEL_KEYS = ("query_labels", "db_labels")
DIRECTIONS = {
    "i2t": ("query_image", "db_text"),
    "t2i": ("query_text", "db_image"),
    "i2i": ("query_image", "db_image"),
    "t2t": ("query_text", "db_text"),
}


@dataclass(frozen=True)
class CodeSet:
    """Codes and labels of one evaluation: int8 ``{-1,+1}`` codes, uint8 multi-hot labels."""

    query_image: np.ndarray
    query_text: np.ndarray
    db_image: np.ndarray
    db_text: np.ndarray
    query_labels: np.ndarray
    db_labels: np.ndarray

    def __post_init__(self) -> None:
        bits = {k: getattr(self, k).shape[1] for k in ("query_image", "query_text", "db_image", "db_text")}
        if len(set(bits.values())) != 1:
            raise DataError(f"code lengths differ: {', '.join(f'{k}_codes {v}' for k, v in bits.items())}")
        for side, labels in (("query", self.query_labels), ("db", self.db_labels)):
            for mod in ("image", "text"):
                codes = getattr(self, f"{side}_{mod}")
                if codes.shape[0] != labels.shape[0]:
                    raise DataError(
                        f"{side}_{mod}_codes has {codes.shape[0]} rows but {side}_labels has {labels.shape[0]}"
                    )
        if self.query_labels.shape[1] != self.db_labels.shape[1]:
            raise DataError(
                f"query_labels has {self.query_labels.shape[1]} classes but db_labels {self.db_labels.shape[1]}"
            )

    @property
    def bits(self) -> int:
        """Code length."""
        return int(self.query_image.shape[1])

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> "CodeSet":
        """Validate and build from a mapping with the six ``.npz`` keys."""
        missing = [k for k in CODE_KEYS + LABEL_KEYS if k not in arrays]
        if missing:
            raise DataError(f"missing array(s): {', '.join(missing)}")
        codes = {k: check_codes(k, arrays[k]) for k in CODE_KEYS}
        labels = {k: check_labels(k, arrays[k]) for k in LABEL_KEYS}
        return cls(
            query_image=codes["query_image_codes"],
            query_text=codes["query_text_codes"],
            db_image=codes["db_image_codes"],
            db_text=codes["db_text_codes"],
            query_labels=labels["query_labels"],
            db_labels=labels["db_labels"],
        )

    @classmethod
    def load(cls, path: Path) -> "CodeSet":
        """Read a code set from an ``.npz`` file; bad files raise :class:`DataError` naming the problem."""
        path = Path(path)
        if path.is_dir():
            raise DataError(f"{path} is a folder; give a codes .npz file (a run stores one per result, *.codes.npz)")
        if not path.is_file():
            raise DataError(f"codes file not found: {path}")
        _check_npz_magic(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
        try:
            return cls.from_arrays(arrays)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None

    def arrays(self) -> dict[str, np.ndarray]:
        """The six arrays under their ``.npz`` keys."""
        return {
            "query_image_codes": self.query_image,
            "query_text_codes": self.query_text,
            "db_image_codes": self.db_image,
            "db_text_codes": self.db_text,
            "query_labels": self.query_labels,
            "db_labels": self.db_labels,
        }

    def save(self, path: Path) -> None:
        """Write atomically as a compressed ``.npz`` (a temporary file renamed into place)."""
        from cmhbench.files import atomic_open

        with atomic_open(Path(path), binary=True, fsync=False) as fh:
            np.savez_compressed(fh, **self.arrays())


NPZ_KEYS_HINT = "query_image_codes, query_text_codes, db_image_codes, db_text_codes, query_labels, db_labels"


def _check_npz_magic(path: Path) -> None:
    """Refuse a file that is not a zip archive (an ``.npz``) with what it looks like instead."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return
    if head.startswith(b"\x93NUMPY"):
        what = "a single .npy array"
    elif not head:
        what = "an empty file"
    elif head.lstrip()[:1] in (b"{", b"["):
        what = "JSON (a result file? its codes are in the *.codes.npz beside it)"
    else:
        try:
            head.decode("utf-8")
            what = "a text file"
        except UnicodeDecodeError:
            what = "not a zip archive"
    raise DataError(f"{path} is {what}, not an .npz of codes; expected arrays {NPZ_KEYS_HINT}")


def evaluate_code_set(
    codes: CodeSet,
    *,
    directions: Sequence[str] = ("i2t", "t2i"),
    topk: Sequence[int] = DEFAULT_TOPK,
    precision_at: Sequence[int] = DEFAULT_PRECISION_AT,
    device: Optional[str] = None,
    engine: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Metrics per direction (see :func:`retrieval_metrics`), each with the ``seconds`` it took
    (kernel compilation excluded)."""
    from cmhbench.evaluation.engine import warm_up

    warm_up()
    out = {}
    for direction in directions:
        if direction not in DIRECTIONS:
            raise DataError(f"unknown direction {direction!r}; expected one of {', '.join(DIRECTIONS)}")
        query_key, db_key = DIRECTIONS[direction]
        start = time.perf_counter()
        metrics = retrieval_metrics(
            getattr(codes, query_key),
            getattr(codes, db_key),
            codes.query_labels,
            codes.db_labels,
            topk=topk,
            precision_at=precision_at,
            device=device,
            engine=engine,
        )
        metrics["seconds"] = time.perf_counter() - start
        out[direction] = metrics
    return out

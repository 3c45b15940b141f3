"""A binary bag-of-words over tags, the text representation of MIRFlickr and NUS-WIDE in CMH code.

Tokens are the lower-cased pieces of a text between commas and white space. The vocabulary holds
the tokens that occur in at least ``min_count`` items of the dataset (DCMH keeps MIRFlickr tags
seen at least 20 times, giving 1386 dimensions), ordered by decreasing item count, then
alphabetically; an item's vector has a 1 for each vocabulary token it contains.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

from cmhbench.errors import ConfigError, DataError

TOKEN_SPLIT = re.compile(r"[,\s]+")


def tokens(text: str) -> set[str]:
    """The distinct lower-cased tokens of ``text``."""
    return {t for t in TOKEN_SPLIT.split(text.lower()) if t}


def parse_bow(spec: str) -> int:
    """``"bow"`` -> 1, ``"bow:min=20"`` -> 20 (the ``min_count``)."""
    _, _, rest = spec.partition(":")
    if not rest:
        return 1
    key, eq, value = rest.partition("=")
    if key.strip() != "min" or not eq or not value.strip().isdigit() or int(value) < 1:
        raise ConfigError(f"--text-encoder {spec!r}: expected bow or bow:min=N with N >= 1")
    return int(value)


class TagBagOfWords:
    """Binary tag vectors over a vocabulary fitted on all of a dataset's texts."""

    kind = "bow"

    def __init__(self, texts: Sequence[str], min_count: int = 1) -> None:
        counts = Counter(t for text in texts for t in tokens(text))
        vocab = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if not vocab:
            raise DataError(f"bag-of-words: no tag occurs in at least {min_count} items")
        self.vocabulary = vocab
        self.index = {t: k for k, t in enumerate(vocab)}
        self.min_count = min_count
        self.dim = len(vocab)
        self.revision = "vocab sha256 " + hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()
        self.id = f"bow-min{min_count}"

    def describe(self) -> dict[str, Any]:
        """What a result records about this encoder."""
        return {"kind": self.kind, "min_count": self.min_count, "revision": self.revision, "dim": self.dim}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 0/1 vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            cols = [self.index[t] for t in tokens(text) if t in self.index]
            out[row, cols] = 1.0
        return out

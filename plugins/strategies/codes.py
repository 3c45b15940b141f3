"""Strategy ``codes``: the teacher's own binary codes' Hamming affinity, the naive distillation baseline.

The simplest thing a student could be taught: that two training pairs are as similar as the
teacher's hash codes say. With ``B_I = sign(teacher.encode(images))`` and
``B_T = sign(teacher.encode(texts))`` (``{-1,+1}``, ``sign(0) = +1`` as in the harness), each
``(n, bits)``, the Hamming affinity of items i and j is the mean over the two modalities of the
codes' normalised inner product, mapped to ``[0, 1]``:

    A_ij = (1 + (<B_I,i, B_I,j> + <B_T,i, B_T,j>) / (2 bits)) / 2
         = 1 - (hamming(B_I,i, B_I,j) + hamming(B_T,i, B_T,j)) / (2 bits).

Only same-modality code pairs enter, so ``A`` is symmetric with ``A_ii = 1`` for any teacher
(mixing in image-text code pairs would make the diagonal the teacher's own cross-modal agreement,
below 1). ``mode = "graded"`` (default) hands ``S = A`` to the student, the teacher's full code
geometry; ``mode = "binary"`` gives ``S_ij = 1[A_ij >= threshold]``, similar pairs being those whose
codes agree on at least a ``threshold`` share of bits on average (default 0.75: Hamming distance at
most a quarter of the bits; a fixed, conventional radius, not tuned). Either way ``S`` is
symmetric, in ``[0, 1]``, with unit diagonal.

Unlike ``ukd``, which reads the teacher's continuous outputs and keeps only each item's nearest
neighbours, this strategy keeps everything the codes encode and nothing more; it is a reference
point for what smarter distillation adds. No paper proposes it as a method; it is the
"distil the binary codes" baseline implicit in unsupervised-KD work such as Hu et al., CVPR 2020.

The similarity is handed over as an operator (:class:`CodeAffinity`) that keeps only the two
``(n, bits)`` code matrices (94 MB at n = 184,477 and 64 bits, where the dense matrix would take
136 GB) and computes any block on demand. Code inner products are integers, exact in float32 in any
order, so every block holds exactly the dense matrix's entries. The dense matrix is kept (the
``Supervision`` cache) only while it takes at most the larger of 256 MiB and the training features
(:func:`~cmhbench.interfaces.data_relative_cache_bytes`, as ``labels``, ``ukd`` and ``sakdh``): at
15,000 NUS-WIDE pairs (the ``ukd`` protocol) it was 860 MiB beside the student, and
``codes -> dadh`` peaked at 2.08x the features there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Optional


from cmhbench.config import hp
from cmhbench.evaluation.codes import sign_codes
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import (Modality, PairedFeatures, RunContext, SimilarityOperator, Supervision, Teacher,
                                 data_relative_cache_bytes)
from cmhbench.lazy import torch
from cmhbench.registry import MethodSpec
from cmhbench.training import fill_block_diagonal_

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class CodesConfig:
    """Codes strategy hyperparameters."""

    mode: Literal["graded", "binary"] = hp(
        "graded", "graded: S = Hamming affinity in [0,1]; binary: S = 1[affinity >= threshold]", choices=("graded", "binary")
    )
    threshold: float = hp(0.75, "binary mode: least mean share of agreeing bits for a similar pair", ge=0, le=1)


def hamming_affinity(codes: list[Tensor], others: Optional[list[Tensor]] = None) -> Tensor:
    """``(n, m)`` mean over the given ``(n, bits)`` ``{-1,+1}`` code matrices of ``(1 + <b_i, c_j>/bits)/2``,
    i.e. the share of agreeing bits, averaged over the matrices (modalities); ``others`` are the
    ``(m, bits)`` codes of the columns (default: ``codes`` themselves, an ``(n, n)`` result).

    Computed in one ``(n, m)`` array as ``0.5 + (sum of the integer inner products) / (2 len(codes) bits)``:
    the products accumulate in place (``addmm_``), then one division and one addition. The inner products
    are integers, exact in float32, and for 2^k bits every step is exact, so the entries are bit for bit
    those of ``((1 + sum(<b, c> / bits) / len) / 2)``; for other lengths both round, this once. The entries
    stay in [0, 1] without a clamp: the sum lies in ``[-len bits, len bits]`` and the correctly rounded
    quotient in ``[-0.5, 0.5]``. Seven ``(n, m)`` temporaries fewer than that expression: a ``(128, 184,477)``
    block (one ``dcmh`` step under the ``ucch`` protocol) took 0.13 s instead of 0.77 s on one thread."""
    others = codes if others is None else others
    out = codes[0] @ others[0].T
    for c, o in zip(codes[1:], others[1:]):
        out.addmm_(c, o.T)
    return out.div_(2 * len(codes) * codes[0].shape[1]).add_(0.5)


class CodeAffinity(SimilarityOperator):
    """``S`` from the teacher's ``(n, bits)`` ``{-1,+1}`` float32 image and text codes, block by block:
    the Hamming affinity (``threshold`` None) or ``1[affinity >= threshold]``, unit diagonal."""

    symmetric = True

    def __init__(self, codes: list[Tensor], threshold: Optional[float] = None) -> None:
        self.codes = codes
        self.threshold = threshold
        self.n = int(codes[0].shape[0])

    @property
    def device(self) -> torch.device:
        return self.codes[0].device

    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols) or n)`` float32 entries in [0, 1]."""
        others = self.codes if cols is None else [c[cols] for c in self.codes]
        a = hamming_affinity([c[rows] for c in self.codes], others)
        s = a if self.threshold is None else a.copy_(a >= self.threshold)  # in a's storage: no second block
        return fill_block_diagonal_(s, rows, cols)

    def mean(self) -> float:
        """The mean of all ``n^2`` entries. Graded: in closed form, as ``sum_ij <b_i, b_j> = ||sum_i b_i||^2``
        per modality, ``(n^2 / 2 + (||1^T B_I||^2 + ||1^T B_T||^2) / (4 bits)) / n^2`` (integer sums in
        float64, exact; every entry is already in [0, 1] with unit diagonal, so the clamp and the diagonal
        change nothing): O(n bits) instead of the n^2 entries, which took 845 s at the ``ucch`` protocol's
        184,477 NUS-WIDE pairs. For 2^k bits it is bit for bit the base class's block sum (float32 entries are
        multiples of 2^-(k+2), summed exactly); for other lengths the exact value, where the block sum rounds
        each entry. Binary: the base class's pass over row blocks."""
        if self.threshold is not None or self.n == 0:
            return super().mean()
        bits = self.codes[0].shape[1]
        squares = sum(float(c.double().sum(0).pow(2).sum()) for c in self.codes)
        return (self.n * self.n / 2 + squares / (2 * len(self.codes) * bits)) / (self.n * self.n)


class CodesStrategy:
    """Builds ``S`` from the teacher's own sign codes of the training pairs."""

    def __init__(self, config: CodesConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx

    def distill(self, teacher: Optional[Teacher], train: PairedFeatures) -> Supervision:
        """``(n, n)`` similarity over the training pairs from the teacher's image and text codes."""
        if teacher is None:
            raise ValueError("the codes strategy needs a teacher")
        with torch.no_grad():
            b_i = sign_codes(teacher.encode(train.image, Modality.IMAGE)).float()
            b_t = sign_codes(teacher.encode(train.text, Modality.TEXT)).float()
        binary = self.config.mode == "binary"
        supervision = Supervision(CodeAffinity([b_i, b_t], self.config.threshold if binary else None),
                                  cache_bytes=data_relative_cache_bytes(train))
        if binary:
            info = {"mode": "binary", "threshold": self.config.threshold, "similar_fraction": supervision.mean()}
        else:
            info = {"mode": "graded", "mean_similarity": supervision.mean()}
        supervision.info.update(info)
        return supervision


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``codes`` strategy."""
    register(
        MethodSpec(
            name="codes",
            kind="strategy",
            build=CodesStrategy,
            config=CodesConfig,
            paper="Naive distillation baseline: the teacher's binary codes' Hamming affinity (cf. Hu, Xie, Hong, Tian, "
            "Creating Something from Nothing: Unsupervised Knowledge Distillation for Cross-Modal Hashing, CVPR 2020).",
            summary="S = share of agreeing bits of the teacher's sign codes (mean of image and text), graded or thresholded",
        )
    )

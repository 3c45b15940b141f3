"""Strategy ``labels``: ground-truth label similarity, the supervised upper bound.

``S_ij = 1`` when training pairs i and j share at least one label, else 0: the similarity every
supervised CMH method (DCMH, SSAH, DADH, ...) is trained on. It reads the training labels (its spec
declares ``uses_labels``), uses no teacher, and hands the multi-hot labels to the student as
``soft_labels``. A distilled student that comes close to ``labels -> student`` has recovered most
of what supervision offers; no distillation strategy should be compared as if it had labels.

The similarity is handed over as an operator (:class:`LabelOverlap`) that keeps only the ``(n, c)``
labels and computes any block ``1[L_rows L_cols^T > 0]`` on demand (7.4 MB for the 184,477 training
pairs and 10 concepts of NUS-WIDE TC10 under the ``ucch`` protocol, where the dense matrix would take
136 GB); for 0/1 labels every block is exactly the dense matrix's entries (integer inner products
are exact in float32).

Memory (issue 12): the dense matrix is kept (``Supervision``'s cache) only while it is no larger
than 256 MiB or than the training features (:func:`~cmhbench.interfaces.data_relative_cache_bytes`;
e.g. n <= 8,192, or n <= 5,096 for 4096-d + 1000-d features, and at most 2 GiB); above, students
read blocks computed on demand, which are exactly the same 0/1 entries, so their results do not
change (only ``similar_fraction`` becomes the exact float64 mean instead of the float32 mean of the
kept matrix). Where it is kept, it is assembled block by block (one ``(n, n)`` matrix, not the
float32 product, the bool comparison and the float32 copy of the one-piece form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import (PairedFeatures, RunContext, SimilarityOperator, Supervision, Teacher, data_relative_cache_bytes,
                                 row_chunks)
from cmhbench.lazy import torch
from cmhbench.registry import MethodSpec

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class LabelsConfig:
    """No hyperparameters."""


class LabelOverlap(SimilarityOperator):
    """``S_ij = 1[l_i . l_j > 0]`` from the ``(n, c)`` float32 multi-hot labels ``L``, block by block."""

    symmetric = True

    def __init__(self, labels: Tensor) -> None:
        self.labels = labels
        self.n = int(labels.shape[0])

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols) or n)`` float32 0/1: ``L[rows] L[cols]^T > 0``, compared in place (``gt_``
        writes 1.0 / 0.0 into the product: the same entries as ``(product > 0).float()`` without its bool and
        float temporaries; a ``(128, 184,477)`` block, one ``dcmh`` step under the ``ucch`` protocol, took
        0.028 s instead of 0.112 s on one thread)."""
        other = self.labels if cols is None else self.labels[cols]
        return (self.labels[rows] @ other.T).gt_(0)

    def mean(self) -> float:
        """The mean of all ``n^2`` entries, exactly the base class's block sum, computed over the distinct label
        rows: with ``U`` distinct rows ``u`` held by ``c_u`` items, ``sum_uv c_u c_v 1[u . v > 0] / n^2``
        (``U x U`` products instead of ``n x n``; at most 2^10 for NUS-WIDE's 10 concepts). The counts are
        integers summed in float64, exact below 2^53 pairs."""
        if self.n == 0:
            return 0.0
        distinct, counts = torch.unique(self.labels, dim=0, return_counts=True)
        counts, overlap = counts.double(), LabelOverlap(distinct)
        total = 0.0
        for rows in row_chunks(len(distinct), device=distinct.device):
            total += float(counts[rows] @ (overlap.block(rows).double() @ counts))
        return total / (self.n * self.n)


class LabelSimilarity:
    """Builds ``S = 1[L L^T > 0]`` from the training labels."""

    def __init__(self, config: LabelsConfig, ctx: RunContext) -> None:
        self.config = config

    def distill(self, teacher: Optional[Teacher], train: PairedFeatures) -> Supervision:
        """``(n, n)`` 0/1 similarity from the ``(n, c)`` multi-hot training labels."""
        if train.labels is None:
            raise ValueError("the labels strategy needs the training labels")
        labels = train.labels.float()
        supervision = Supervision(LabelOverlap(labels), soft_labels=labels, cache_bytes=data_relative_cache_bytes(train))
        supervision.info["similar_fraction"] = supervision.mean()
        return supervision


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``labels`` strategy."""
    register(
        MethodSpec(
            name="labels",
            kind="strategy",
            build=LabelSimilarity,
            config=LabelsConfig,
            paper="Supervised upper bound: label-overlap similarity, as in Jiang & Li, Deep Cross-Modal Hashing, CVPR 2017.",
            summary="ground-truth similarity S_ij = 1 if items share a label (uses labels; no teacher)",
            uses_teacher=False,
            uses_labels=True,
        )
    )

"""Strategy ``ukd``: unsupervised knowledge distillation by teacher neighbourhoods.

Paper: Hengtong Hu, Lingxi Xie, Richang Hong, Qi Tian. "Creating Something from Nothing:
Unsupervised Knowledge Distillation for Cross-Modal Hashing." CVPR 2020 (arXiv 2004.00280).
Official code: https://github.com/huhengtong/UKD_CVPR2020 (``teacher_model/calcu_sim.py`` builds
the neighbour lists, ``student_model/setting.py`` the similarity matrix).

As in the official code: the trained teacher's continuous outputs (its sigmoid hash-layer outputs
there; ``encode`` before ``sign`` here) of the n training pairs are ranked by Euclidean distance,
separately in the image and in the text output space; item i's K nearest neighbours become its
similar pairs, ``S_ij = 1`` (0.999 in the official code, a difference without effect on the
students' losses). The paper merges the neighbours found in the two spaces; here the merge is the
union, and ``S`` is symmetrised (``S = max(S, S^T)``) so that every student reads the same
similarity for (i, j) and (j, i). Every item is its own neighbour.

``mode = "sim"`` is the paper's ablation against graded similarity: the student receives the
teacher's cosine similarity itself, ``S_ij = (1 + cos_ij) / 2`` averaged over the two spaces.

K: the official code keeps up to 10,000 neighbours of 18,015 MIRFlickr training items (the
paper's sensitivity figure peaks at "10,000 relevant pairs"), i.e. about the share of
label-relevant pairs in MIRFlickr, where most pairs share a label. That share differs by
dataset (about 10% on Wiki) and a label-free method cannot know it, so the default here is a
neutral 5% of the training pairs per item and space (``k_fraction``); set ``k`` for an absolute
count, e.g. ``--set ukd.k=10000`` to follow the paper on MIRFlickr.

Departures: union of both spaces (the snapshot of the official student code reads only the image
neighbours; the paper describes both), symmetrised S, and the K default above.

What is kept, never the dense n x n float matrix (136 GB at n = 184,477):

- ``knn``: the symmetric 0/1 similarity as a bit matrix (:func:`cmhbench.training.knn_union_bits`),
  n^2 / 8 bytes whatever K (4.25 GB at n = 184,477), built a chunk of 4096 rows at a time with exactly
  :func:`~cmhbench.training.knn_mask`'s neighbour ranking (the same float64 distance blocks, stable
  sort, ties to the lower index), so every block is exactly the old dense matrix's. Per-item neighbour
  lists would take ``8 n K`` bytes for the two spaces (int32), plus as much again for the reverse
  lists that the symmetrisation ``S = max(S, S^T)`` needs to answer a row: 27 GB at the default
  K = 5% of n = 9,224; they are smaller only for K below about n / 128 (1,441 here). Radii alone
  (each item's K-th distance) cannot reproduce the ties: the distance of a pair recomputed in another
  block shape may differ in its last bit.
- ``sim``: the two ``(n, bits)`` unit-normalised output matrices (94 MB at 64 bits); a block is
  ``(1 + (Z_I,rows Z_I,cols^T + Z_T,rows Z_T,cols^T) / 2) / 2``. Where the dense matrix is kept (see
  :class:`~cmhbench.interfaces.Supervision`) it is computed in one product, as always; blocks
  computed on demand agree with it to float32 rounding (a matrix product's rounding depends on
  its shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Optional

from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, SimilarityOperator, Supervision, Teacher, check_dense_fits
from cmhbench.lazy import torch
from cmhbench.registry import MethodSpec
from cmhbench.training import knn_union_bits, l2_normalize

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class UKDConfig:
    """UKD strategy hyperparameters."""

    mode: Literal["knn", "sim"] = hp("knn", "knn: 0/1 union of K-neighbour sets; sim: teacher cosine similarity", choices=("knn", "sim"))
    k: int = hp(0, "neighbours per item and space (0: use k_fraction)", ge=0)
    k_fraction: float = hp(0.05, "neighbours as a fraction of the training pairs when k = 0", gt=0, le=1)
    metric: Literal["euclidean", "cosine"] = hp("euclidean", "distance between teacher outputs (official: euclidean)", choices=("euclidean", "cosine"))


class CosineAgreement(SimilarityOperator):
    """``S_ij = (1 + (cos_I(i, j) + cos_T(i, j)) / 2) / 2`` (clamped to [0, 1]) from the teacher's
    ``(n, bits)`` image and text outputs, kept unit-normalised (``z_image``, ``z_text``)."""

    symmetric = True

    def __init__(self, out_image: Tensor, out_text: Tensor) -> None:
        self.z_image, self.z_text = l2_normalize(out_image.detach()), l2_normalize(out_text.detach())
        self.n = int(out_image.shape[0])

    @property
    def device(self) -> torch.device:
        return self.z_image.device

    @staticmethod
    def _from_cosines(sim: Tensor) -> Tensor:
        return ((sim + 1.0) / 2.0).clamp(0.0, 1.0)

    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols) or n)`` float32 entries in [0, 1]."""
        zi, zt = self.z_image, self.z_text
        ci, ct = (zi, zt) if cols is None else (zi[cols], zt[cols])
        return self._from_cosines(0.5 * (zi[rows] @ ci.T + zt[rows] @ ct.T))

    def dense(self) -> Tensor:
        """The whole matrix in one product per modality (what this strategy always handed over)."""
        check_dense_fits(self.n, self.device)
        zi, zt = self.z_image, self.z_text
        return self._from_cosines(0.5 * (zi @ zi.T + zt @ zt.T))


class UKDStrategy:
    """Builds the UKD similarity from a trained teacher's continuous outputs."""

    def __init__(self, config: UKDConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx

    def distill(self, teacher: Optional[Teacher], train: PairedFeatures) -> Supervision:
        """``(n, n)`` similarity over the training pairs from the teacher's outputs."""
        if teacher is None:
            raise ValueError("the ukd strategy needs a teacher")
        out_i = teacher.encode(train.image, Modality.IMAGE).float()
        out_t = teacher.encode(train.text, Modality.TEXT).float()
        n = out_i.shape[0]
        if self.config.mode == "sim":
            supervision = Supervision(CosineAgreement(out_i, out_t), info={"mode": "sim"})
            supervision.info["mean_similarity"] = supervision.mean()
            return supervision
        k = self.config.k or max(1, round(self.config.k_fraction * n))
        k = min(k, n)
        supervision = Supervision(knn_union_bits([out_i, out_t], k, self.config.metric), info={"mode": "knn", "k": k})
        supervision.info["similar_fraction"] = supervision.mean()
        return supervision


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``ukd`` strategy."""
    register(
        MethodSpec(
            name="ukd",
            kind="strategy",
            build=UKDStrategy,
            config=UKDConfig,
            paper="Hu, Xie, Hong, Tian. Creating Something from Nothing: Unsupervised Knowledge Distillation "
            "for Cross-Modal Hashing. CVPR 2020.",
            code="https://github.com/huhengtong/UKD_CVPR2020",
            summary="K nearest neighbours of the teacher's continuous outputs in each modality, union as similar pairs",
        )
    )

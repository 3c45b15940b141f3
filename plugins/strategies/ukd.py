"""Strategy ``ukd``: unsupervised knowledge distillation by teacher neighbourhoods.

Paper: Hengtong Hu, Lingxi Xie, Richang Hong, Qi Tian. "Creating Something from Nothing:
Unsupervised Knowledge Distillation for Cross-Modal Hashing." CVPR 2020. No official code was
released; this follows the paper's description.

The teacher's continuous outputs (``encode``, before ``sign``) of the n training pairs are
L2-normalised per modality. For each item i, its K nearest neighbours by cosine similarity in the
teacher's image output space and in its text output space are collected; pair (i, j) is similar
(``S_ij = 1``) when j is among i's neighbours in either space (the union), and the matrix is
symmetrised (``S = max(S, S^T)``, every item is its own neighbour). The student is trained on S
exactly as on a label similarity.

``mode = "sim"`` is the paper's ablation variant: instead of the 0/1 neighbour matrix, the
student receives the teacher's similarity itself, ``S_ij = (1 + cos_ij) / 2`` averaged over the
two modalities, rescaled to [0, 1].

``k`` defaults to 5% of the training pairs (``k_fraction``), set absolutely with ``k``; the
paper tunes K per dataset and reports it as a sensitivity curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
from torch import Tensor

from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, Supervision, Teacher
from cmhbench.registry import MethodSpec
from cmhbench.training import l2_normalize


@dataclass(frozen=True)
class UKDConfig:
    """UKD strategy hyperparameters."""

    mode: Literal["knn", "sim"] = hp("knn", "knn: 0/1 union of K-neighbour sets; sim: teacher cosine similarity", choices=("knn", "sim"))
    k: int = hp(0, "neighbours per item and modality (0: use k_fraction)", ge=0)
    k_fraction: float = hp(0.05, "neighbours as a fraction of the training pairs when k = 0", gt=0, le=1)


def knn_mask(features: Tensor, k: int, chunk: int = 4096) -> Tensor:
    """``(n, n)`` bool: row i marks the k most cosine-similar rows of ``features`` (ties by index)."""
    z = l2_normalize(features.float())
    n = z.shape[0]
    mask = torch.zeros(n, n, dtype=torch.bool, device=z.device)
    for start in range(0, n, chunk):
        sim = z[start : start + chunk] @ z.T
        # Stable order: sort by descending similarity, then by index.
        order = torch.sort(-sim, dim=1, stable=True).indices[:, :k]
        mask[start : start + chunk].scatter_(1, order, True)
    return mask


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
            sim = 0.5 * (l2_normalize(out_i) @ l2_normalize(out_i).T + l2_normalize(out_t) @ l2_normalize(out_t).T)
            s = ((sim + 1.0) / 2.0).clamp(0.0, 1.0)
            return Supervision(similarity=s, info={"mode": "sim", "mean_similarity": float(s.mean())})
        k = self.config.k or max(1, round(self.config.k_fraction * n))
        k = min(k, n)
        mask = knn_mask(out_i, k) | knn_mask(out_t, k)
        mask = mask | mask.T
        mask.fill_diagonal_(True)
        s = mask.float()
        return Supervision(similarity=s, info={"mode": "knn", "k": k, "similar_fraction": float(s.mean())})


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
            code="(no official code released)",
            summary="K nearest neighbours of the teacher's continuous outputs in each modality, union as similar pairs",
        )
    )

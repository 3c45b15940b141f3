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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, Supervision, Teacher
from cmhbench.registry import MethodSpec
from cmhbench.training import knn_mask, l2_normalize


@dataclass(frozen=True)
class UKDConfig:
    """UKD strategy hyperparameters."""

    mode: Literal["knn", "sim"] = hp("knn", "knn: 0/1 union of K-neighbour sets; sim: teacher cosine similarity", choices=("knn", "sim"))
    k: int = hp(0, "neighbours per item and space (0: use k_fraction)", ge=0)
    k_fraction: float = hp(0.05, "neighbours as a fraction of the training pairs when k = 0", gt=0, le=1)
    metric: Literal["euclidean", "cosine"] = hp("euclidean", "distance between teacher outputs (official: euclidean)", choices=("euclidean", "cosine"))


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
        metric = self.config.metric
        mask = knn_mask(out_i, k, metric) | knn_mask(out_t, k, metric)
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
            code="https://github.com/huhengtong/UKD_CVPR2020",
            summary="K nearest neighbours of the teacher's continuous outputs in each modality, union as similar pairs",
        )
    )

"""Strategy ``sakdh``: semantic-alignment knowledge distillation (a fused, reconstructed similarity).

Paper: Mingyong Li, Qiqi Li, Lirong Tang, Shuang Peng, Yan Ma, Degang Yang. "Deep Unsupervised
Hashing for Large-Scale Cross-Modal Retrieval Using Knowledge Distillation Model."
Computational Intelligence and Neuroscience, 2021, article 5107034 (doi:10.1155/2021/5107034);
the method is named SAKDH ("unsupervised knowledge distillation cross-modal hashing based on
semantic alignment"). No official code was found (searched GitHub code, issues, docs and web
pages for SAKDH and the title).

What is the paper's (from its abstract, the only part of the text that could be read): a
pretrained unsupervised teacher that aligns the semantics of the two modalities builds a
*modal-fusion similarity matrix*; the matrix is *reconstructed* from the teacher's hidden
correlation information and handed to a supervised student (DCMH-style), which is trained on it
instead of labels. The sister paper of the same first author (KDCMH, Li & Wang, ICMR 2021) does
the same with a JDSH teacher.

What is this reconstruction (the paper's equations, weights and threshold could not be read;
every number below is a choice made here, none tuned on query data):

1. Teacher outputs ``Z_I = l2(encode(image))``, ``Z_T = l2(encode(text))``, ``(n, bits)``; the
   per-modality similarities are their cosines ``S_I = Z_I Z_I^T``, ``S_T = Z_T Z_T^T``.
2. Semantic alignment between the modalities is the teacher's cross-modal cosine, symmetrised:
   ``S_A = (Z_I Z_T^T + Z_T Z_I^T) / 2`` (the teacher was trained to put paired items close
   across modalities, so this is where its alignment shows).
3. Fusion: ``S_F = (1 - alignment) * (beta * S_I + (1 - beta) * S_T) + alignment * S_A``, with
   ``beta = 0.5`` and ``alignment = 0.5`` (no modality preferred; at these values
   ``S_F = Z_F Z_F^T`` with ``Z_F = (Z_I + Z_T) / 2``, the similarity of the fused code).
4. Reconstruction, the second-order (neighbourhood) form of DJSRH (Su et al., ICCV 2019), on
   which this family of teachers builds: ``S_R = (1 - eta) S_F + eta * S_F S_F^T / n``,
   ``eta = 0.4`` (DJSRH's value). Two items become similar when their fused similarity profiles
   over all n training items agree, not only when their own codes do.
5. Hand-over: ``mode = "binary"`` (default; DCMH's likelihood expects 0/1) marks as similar the
   ``similar_fraction`` of off-diagonal pairs with the largest ``S_R`` (one global threshold, so
   ``S`` stays symmetric), ``S_ij = 1[S_R_ij >= t]``; ``mode = "soft"`` hands
   ``(S_R + 1) / 2`` (in [0, 1], since ``S_R`` lies in [-1, 1]). The diagonal is 1 in both.
   ``similar_fraction = 0.05`` is the same neutral label-free share that ``ukd`` defaults to;
   a label-free method cannot know a dataset's share of label-relevant pairs.

For reference (training labels read only to report these numbers, never to choose a value):
on ``wiki`` at 32 bits with a ``djsrh`` teacher, the default marks 5.0% of the training pairs
similar, 46% of them share a label (base rate 10.7%; ``ukd``'s default: 12.4% similar, 35%
precision); 2.6% of the items get no similar pair. ``similar_fraction`` 0.02 / 0.10 gives
precision 0.54 / 0.39.

Computation: ``S_F = U M U^T`` with ``U = [Z_I, Z_T]`` ``(n, 2 bits)`` and a small ``M``, so
``S_R = U ((1 - eta) M + eta M (U^T U) M / n) U^T`` costs O(n^2 bits) instead of O(n^3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Optional


from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, Supervision, Teacher
from cmhbench.lazy import torch
from cmhbench.registry import MethodSpec
from cmhbench.training import l2_normalize

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class SAKDHConfig:
    """SAKDH strategy hyperparameters (values chosen here; see the module docstring)."""

    beta: float = hp(0.5, "weight of the image similarity within the intra-modal part (1-beta: text)", ge=0, le=1)
    alignment: float = hp(0.5, "weight of the cross-modal (semantic alignment) similarity in the fusion", ge=0, le=1)
    eta: float = hp(0.4, "weight of the second-order reconstruction term S_F S_F^T / n (DJSRH's value)", ge=0, le=1)
    mode: Literal["binary", "soft"] = hp("binary", "binary: top pairs of S_R are similar; soft: (S_R + 1) / 2", choices=("binary", "soft"))
    similar_fraction: float = hp(0.05, "share of off-diagonal pairs marked similar in binary mode", gt=0, le=1)


class SAKDHStrategy:
    """Builds the fused, second-order reconstructed similarity from a trained teacher's outputs."""

    def __init__(self, config: SAKDHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx

    def fusion_weights(self, bits: int, device: torch.device) -> Tensor:
        """``(2 bits, 2 bits)`` float64 ``M`` with ``S_F = [Z_I, Z_T] M [Z_I, Z_T]^T``."""
        c = self.config
        eye = torch.eye(bits, dtype=torch.float64, device=device)
        intra = 1.0 - c.alignment
        cross = 0.5 * c.alignment
        return torch.cat(
            [
                torch.cat([intra * c.beta * eye, cross * eye], dim=1),
                torch.cat([cross * eye, intra * (1.0 - c.beta) * eye], dim=1),
            ]
        )

    def reconstructed(self, out_image: Tensor, out_text: Tensor) -> Tensor:
        """``(n, n)`` float32 ``S_R`` (in [-1, 1]) from ``(n, bits)`` teacher outputs of both modalities."""
        u = torch.cat([l2_normalize(out_image.double()), l2_normalize(out_text.double())], dim=1)
        n = u.shape[0]
        m = self.fusion_weights(out_image.shape[1], u.device)
        k = (1.0 - self.config.eta) * m + self.config.eta * (m @ (u.T @ u) @ m) / n
        uk = (u @ k).float()
        return (uk @ u.float().T).clamp_(-1.0, 1.0)

    def distill(self, teacher: Optional[Teacher], train: PairedFeatures) -> Supervision:
        """``(n, n)`` similarity in [0, 1] (symmetric, diagonal 1) over the n training pairs."""
        if teacher is None:
            raise ValueError("the sakdh strategy needs a teacher")
        with torch.no_grad():
            out_i = teacher.encode(train.image, Modality.IMAGE).float()
            out_t = teacher.encode(train.text, Modality.TEXT).float()
            s_r = self.reconstructed(out_i, out_t)
            s_r = 0.5 * (s_r + s_r.T)  # exact symmetry despite float rounding
            n = s_r.shape[0]
            if self.config.mode == "soft":
                s = (s_r + 1.0) / 2.0
                s.fill_diagonal_(1.0)
                return Supervision(similarity=s, info={"mode": "soft", "mean_similarity": float(s.mean())})
            off = n * (n - 1)
            if off == 0:
                return Supervision(similarity=torch.ones_like(s_r), info={"mode": "binary", "similar_fraction": 1.0})
            k = min(off, max(1, round(self.config.similar_fraction * off)))
            masked = s_r.clone()
            masked.fill_diagonal_(float("-inf"))
            # the k-th largest off-diagonal value: diagonal entries (-inf) sort first.
            threshold = torch.kthvalue(masked.flatten(), n * n - k + 1).values.item()
            s = (s_r >= threshold).float()
            s.fill_diagonal_(1.0)
        return Supervision(
            similarity=s,
            info={"mode": "binary", "threshold": threshold, "similar_fraction": float(s.mean())},
        )


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``sakdh`` strategy."""
    register(
        MethodSpec(
            name="sakdh",
            kind="strategy",
            build=SAKDHStrategy,
            config=SAKDHConfig,
            paper="Li, Li, Tang, Peng, Ma, Yang. Deep Unsupervised Hashing for Large-Scale Cross-Modal Retrieval "
            "Using Knowledge Distillation Model (SAKDH). Computational Intelligence and Neuroscience, 2021.",
            summary="teacher's image, text and cross-modal cosines fused, second-order reconstructed, top pairs similar",
        )
    )

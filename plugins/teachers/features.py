"""Teacher ``features``: the raw features' cosine neighbourhoods projected to bits, no training.

The floor every learned teacher must beat. Per modality, independently:

1. centre the features by the training mean and scale every row to unit length (so Euclidean
   distance between rows is a monotone function of their cosine similarity);
2. project to ``bits`` dimensions with a fixed matrix ``P`` (``d x bits``):

   - ``projection = "pca"`` (default): the top-``bits`` principal directions of the centred,
     normalised training features (eigenvectors of their second moment ``Z^T Z / n``; the rows
     are not re-centred after normalising, so that ``encode`` projects exactly what was analysed), as in PCA hashing (PCAH; e.g. Wang, Kumar, Chang. "Semi-
     Supervised Hashing for Large-Scale Search." TPAMI 2012, where PCAH is the baseline). When
     ``d < bits`` the ``d`` principal directions are padded with ``bits - d`` random Gaussian
     directions (unit columns), i.e. sign random projections on top of a full rotation;
   - ``projection = "random"``: a seeded Gaussian random projection, the sign random projection
     (SimHash) of Charikar, "Similarity Estimation Techniques from Rounding Algorithms", STOC 2002,
     whose code agreement estimates the angle between vectors; with ``bits <= d`` the columns are
     orthonormalised (a random rotation), otherwise unit-length Gaussian columns.

``encode`` returns ``normalise(x - mean) @ P``; the harness's ``sign`` gives PCAH / SimHash codes.
With ``bits >= d`` and ``"pca"`` the continuous output is a rotation of the normalised features
(plus random directions), so a strategy reading neighbourhoods in each modality's output space
(``ukd``) sees the raw cosine neighbourhoods.

Cross-modal comparability, stated plainly: there is none. The image and text projections are
computed separately, in unrelated spaces; bit ``k`` of an image code and bit ``k`` of a text code
are the ``k``-th principal (or random) directions of two different spaces, with arbitrary signs.
Cross-modal retrieval with this teacher is therefore at chance level by construction (on the
tiny test data mAP about 0.25-0.3 where chance is 0.25), while same-modality neighbourhoods are
those of the raw features. That is the point of the floor: any cross-modal mAP above it comes from
learning a link between the modalities (CCA/CVH does that in closed form, ``cvh`` teacher), and
any distilled student fed this teacher's neighbourhoods learns from raw-feature similarity alone.

Deterministic: principal directions have their sign fixed (largest-magnitude entry positive);
random directions come from ``ctx.generator()`` (offset 0 for the image side, 1 for the text side).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal


from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.lazy import torch
from cmhbench.registry import MethodSpec
from cmhbench.training import l2_normalize

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class FeaturesConfig:
    """How the raw features are projected to bits."""

    projection: Literal["pca", "random"] = hp(
        "pca", "pca: top principal directions (padded randomly when d < bits); random: Gaussian rotation", choices=("pca", "random")
    )


def principal_directions(x: Tensor, k: int) -> Tensor:
    """``(d, min(k, d))`` top-``k`` eigenvectors (unit columns, largest eigenvalue first) of the second
    moment ``x^T x / n`` of the rows of ``(n, d)`` ``x``: the principal directions when ``x`` is centred
    (here: features centred, then normalised, and projected without re-centring, so the directions of
    largest output energy). Each column's largest-magnitude entry is made positive so the result does
    not depend on the eigensolver's sign choice."""
    cov = (x.double().T @ x.double()) / max(x.shape[0], 1)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    vecs = vecs.flip(1)[:, : min(k, x.shape[1])]
    pivot = vecs.abs().argmax(0)
    signs = torch.sign(vecs[pivot, torch.arange(vecs.shape[1], device=vecs.device)])
    signs[signs == 0] = 1.0
    return (vecs * signs).to(x.dtype)


def random_directions(d: int, k: int, generator: torch.Generator) -> Tensor:
    """``(d, k)`` CPU float32 random projection: orthonormal columns (a random rotation's first ``k``)
    when ``k <= d``, else unit-length standard Gaussian columns."""
    g = torch.randn(d, k, generator=generator, dtype=torch.float64)
    if k <= d:
        q, r = torch.linalg.qr(g)
        signs = torch.sign(torch.diagonal(r))
        signs[signs == 0] = 1.0
        return (q * signs).float()  # unique QR: a Haar-distributed rotation's first k columns
    return (g / g.norm(dim=0, keepdim=True)).float()


class FeatureProjection:
    """Per-modality centre, l2-normalise and project (PCA or random) to ``bits`` dimensions."""

    def __init__(self, config: FeaturesConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.mean: dict[Modality, Tensor] = {}
        self.projection: dict[Modality, Tensor] = {}

    def preprocess(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features minus the training mean, rows scaled to unit length."""
        return l2_normalize(x.float() - self.mean[Modality(modality)])

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Compute, per modality, the training mean and the ``(d, bits)`` projection."""
        for offset, modality in enumerate(Modality):
            x = train.get(modality).float()
            self.mean[modality] = x.mean(0, keepdim=True)
            z = self.preprocess(x, modality)
            d = z.shape[1]
            gen = self.ctx.generator(offset)
            if self.config.projection == "pca":
                p = principal_directions(z, bits)
                if p.shape[1] < bits:
                    p = torch.cat([p, random_directions(d, bits - p.shape[1], gen).to(z.device)], dim=1)
            else:
                p = random_directions(d, bits, gen).to(z.device)
            self.projection[modality] = p

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` projections of the centred, normalised features."""
        modality = Modality(modality)
        return self.preprocess(x, modality) @ self.projection[modality]


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``features`` teacher."""
    register(
        MethodSpec(
            name="features",
            kind="teacher",
            build=FeatureProjection,
            config=FeaturesConfig,
            paper="Training-free floor: PCA hashing (PCAH, as in Wang, Kumar, Chang, Semi-Supervised Hashing "
            "for Large-Scale Search, TPAMI 2012) or sign random projections (Charikar, Similarity Estimation "
            "Techniques from Rounding Algorithms, STOC 2002) of each modality's centred, normalised features.",
            summary="no training: per-modality PCA (or random) projection of the raw features; cross-modal at chance by design",
        )
    )

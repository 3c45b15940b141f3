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

Memory (issue 12): the fit holds no copy of the training matrix. The float64 second moment
``Z^T Z / n`` (``d x d``) is accumulated over row blocks of at most ``CHUNK_ENTRIES / 8`` entries
(16 MiB of float64), each block centred and normalised on its own (the same row-wise operations as on
the whole matrix); on the CPU only the top ``bits`` eigenvectors are computed (LAPACK's ``syevr``
through ``scipy.linalg.eigh(subset_by_index=...)``: no ``d x d`` eigenvector matrix or
divide-and-conquer workspace, and 3x faster than a full ``torch.linalg.eigh`` at d = 4096; on
CUDA the full ``torch.linalg.eigh`` as before). Against the former whole-matrix float64 product
and full eigh: the same directions to about 1e-14 (float64 sums in another order; another LAPACK
eigensolver), identical after the cast to float32 but for entries at a rounding boundary
(generated NUS-WIDE, 5,000 training pairs, 128 bits: 41 of 524,288 image entries differ, by at most
9.3e-10; no code bit of the 18,000 database items changes). ``preprocess`` (fit and encode)
normalises its centred copy in place: the same values with one ``(n, d)`` temporary instead of two;
``encode`` works by blocks of 8,192 rows (``ukd`` encodes all training pairs in one call; the
blocks' outputs equal the whole call's bit for bit on the generated NUS-WIDE data, 1 and 2 threads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Optional

from cmhbench import interfaces
from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.lazy import torch
from cmhbench.training import blockwise_products
from cmhbench.registry import MethodSpec

L2_EPS = 1e-12  # cmhbench.training.l2_normalize's default floor on a row's norm
ENCODE_ROWS = 8192  # rows encoded at a time (the runner's encode batch, cmhbench/runner.py _encode)

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class FeaturesConfig:
    """How the raw features are projected to bits."""

    projection: Literal["pca", "random"] = hp(
        "pca", "pca: top principal directions (padded randomly when d < bits); random: Gaussian rotation", choices=("pca", "random")
    )


def principal_directions(x: Tensor, k: int, transform: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """``(d, min(k, d))`` top-``k`` eigenvectors (unit columns, largest eigenvalue first) of the second
    moment ``z^T z / n`` of the rows ``z`` of ``transform(x)`` (``x`` itself when None), ``x`` ``(n, d)``:
    the principal directions when ``z`` is centred (here: features centred, then normalised, and
    projected without re-centring, so the directions of largest output energy). ``transform`` must
    act row by row: it is applied to blocks of rows (:func:`second_moment`), never to the whole
    ``x``. Each column's largest-magnitude entry is made positive so the result does not depend on
    the eigensolver's sign choice."""
    cov = second_moment(x, transform)
    vecs = top_eigenvectors(cov, min(k, x.shape[1]))
    pivot = vecs.abs().argmax(0)
    signs = torch.sign(vecs[pivot, torch.arange(vecs.shape[1], device=vecs.device)])
    signs[signs == 0] = 1.0
    return (vecs * signs).to(x.dtype)


def second_moment(x: Tensor, transform: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """``(d, d)`` float64 ``z^T z / n`` of the rows ``z`` of ``transform(x)``, summed over row blocks of
    at most ``CHUNK_ENTRIES / 8`` entries of ``(n, d)`` ``x`` (16 MiB as float64), so that neither a
    transformed nor a float64 copy of the whole ``x`` is ever held (the fit's peak: the ``d x d``
    float64 result plus about 32 MiB)."""
    moment = blockwise_products([x], [(0, 0)], None if transform is None else (lambda _, rows: transform(rows)),
                                entries=interfaces.CHUNK_ENTRIES // 8)[0]
    return moment.div_(max(int(x.shape[0]), 1))


def top_eigenvectors(cov: Tensor, k: int) -> Tensor:
    """``(d, k)`` eigenvectors of the symmetric ``(d, d)`` ``cov`` for its ``k`` largest eigenvalues,
    largest first (signs as the solver gives them). CPU: LAPACK ``syevr`` on those ``k`` only
    (``scipy.linalg.eigh``, ``subset_by_index``); CUDA: the full ``torch.linalg.eigh``."""
    d = cov.shape[0]
    if k <= 0:
        return cov.new_zeros(d, 0)
    if cov.device.type != "cpu":
        return torch.linalg.eigh(cov)[1].flip(1)[:, :k]  # ascending eigenvalues
    import scipy.linalg

    # cov is symmetric: its transpose is the Fortran-ordered array LAPACK reads without a copy
    _, vecs = scipy.linalg.eigh(cov.numpy().T, subset_by_index=[d - k, d - 1], driver="evr",
                                overwrite_a=True, check_finite=False)
    return torch.from_numpy(vecs[:, ::-1].copy())


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
        """``(n, d)`` features minus the training mean, rows scaled to unit length (``l2_normalize``'s
        division done in place on the centred copy: the same values, one ``(n, d)`` temporary fewer)."""
        z = x.float() - self.mean[Modality(modality)]
        return z.div_(z.norm(dim=1, keepdim=True).clamp(min=L2_EPS))

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Compute, per modality, the training mean and the ``(d, bits)`` projection."""
        for offset, modality in enumerate(Modality):
            x = train.get(modality).float()  # float32 features: no copy
            self.mean[modality] = x.mean(0, keepdim=True)
            d = x.shape[1]
            gen = self.ctx.generator(offset)
            if self.config.projection == "pca":
                # the centred, normalised rows, block by block (preprocess acts row by row)
                p = principal_directions(x, bits, lambda rows, m=modality: self.preprocess(rows, m))
                if p.shape[1] < bits:
                    p = torch.cat([p, random_directions(d, bits - p.shape[1], gen).to(x.device)], dim=1)
            else:
                p = random_directions(d, bits, gen).to(x.device)
            self.projection[modality] = p

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` projections of the centred, normalised features, by
        blocks of :data:`ENCODE_ROWS` rows (the runner's encode batch, so its calls are one block as
        always; a strategy encoding all training pairs at once holds one block's temporary, not a
        copy of the whole matrix; per-row results are the same)."""
        modality = Modality(modality)
        p = self.projection[modality]
        if x.shape[0] <= ENCODE_ROWS:
            return self.preprocess(x, modality) @ p
        return torch.cat([self.preprocess(x[s : s + ENCODE_ROWS], modality) @ p for s in range(0, x.shape[0], ENCODE_ROWS)])


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

"""Teacher ``cvh``: Cross-View Hashing, a closed-form spectral method.

Paper: Shaishav Kumar, Raghavendra Udupa. "Learning Hash Functions for Cross-View Similarity
Search." IJCAI 2011. No official code was released; toolbox re-implementations used in later
cross-modal hashing papers (MATLAB ``CVH_learn`` / ``CVHtrainCCA``, found by code search) solve
the same problem as a ridge-regularised CCA generalised eigenproblem (``eigs(., Cxx)`` on the
image side, the text projections derived from the image ones).

CVH learns one linear hash function per view, ``y = sign(A_k^T x)``, that minimises the weighted
Hamming distance between the codes of similar objects across and within views, subject to
balanced (centred) and uncorrelated bits. Relaxing ``sign``, this is the generalised eigenproblem

    X L' X^T A = lambda X D X^T A,     X = blockdiag(X_image, X_text) (centred),

whose eigenvectors of the smallest eigenvalues are the projections. With ``W = I`` (each object
similar only to itself, across its two views: the only similarity paired, unlabelled data gives)
and two views it reads, with ``C`` the covariances,

    [ Cxx  -Cxy ] [a_x]  =  lambda  [ Cxx   0  ] [a_x]
    [ -Cyx  Cyy ] [a_y]             [  0   Cyy ] [a_y],

whose solutions are the canonical pairs of CCA with ``lambda = 1 - rho`` (rho the canonical
correlation), as the paper notes. It is solved here in closed form: ``Cxx = Lx Lx^T`` and
``Cyy = Ly Ly^T`` (Cholesky), SVD of ``Lx^-1 Cxy Ly^-T = U diag(rho) V^T``, ``A_x = Lx^-T U``,
``A_y = Ly^-T V``, bits in order of decreasing rho. ``encode`` returns ``(x - mean) A``.

Regularisation: ``reg * trace(C)/d * I`` is added to ``Cxx`` and ``Cyy`` (a ridge relative to
the mean variance, scale-free; the toolbox versions add ``lambda I``). It is needed, not just
cosmetic: Wiki's text features are LDA topic proportions that sum to one, so their centred
covariance is singular. ``reg = 1e-3`` is a numerical safeguard, not a tuned value.

Departure, and why: CCA yields at most ``r = min(d_image, d_text)`` canonical pairs. For
``bits > r`` the remaining eigenvectors of the joint problem (eigenvalue 1) have a zero text part,
i.e. bits that vary over images and are constant over texts: they add noise to text-to-image
rankings and carry no cross-view information. Those ``bits - r`` columns are set to zero in both
views, so the harness's ``sign`` makes them constant (+1) bits that leave every ranking unchanged.
On Wiki (10-d LDA text, rank 9 after centring) at 32 bits, CVH therefore has 9-10 informative bits;
this is the method's limit on that data, not a shortcut.

The toolbox variant (``--set teacher.solver=toolbox``). Later papers' CVH rows (the UCCH tables
among them, whose authors re-ran every baseline) most likely come from MATLAB functions that
circulate between code bases (``CVH_learn``, ``CVHtrainCCA``, ``CVH_compress``, found by code
search; they are not an official release). They solve a different problem from the paper's:
uncentred scatter matrices ``X^T X + lambda I`` with ``lambda = 1e-4`` (the demo scripts'
``CVHparam.lambda``), the image projections from ``eigs(Cxy * Cyy * Cxy', Cxx, bits, 'lr')`` (``Cyy``
where CCA has ``Cyy^-1``), the text ones ``Cyy^-1 Cxy' Wx D^-1/2``, and the codes ``W' x > 0`` with no
centring. ``solver=toolbox`` reproduces that (``toolbox_projections``) so that a reported row can
be compared with what produced it; the default stays the paper's problem. Measured, seed 0 (the
fit is deterministic), mAP@all i2t / t2i: Wiki 0.1862 / 0.1787 (``cca``) vs 0.1776 / 0.1381
(``toolbox``) at 32 bits (16 bits: same / 0.1568; 64: same / 0.1278, the toolbox's image-only bits
beyond the text rank add noise); ``synthetic`` 0.3096 / 0.3110 vs 0.2719 / 0.2714 at 32 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable


from cmhbench import interfaces
from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.lazy import torch
from cmhbench.training import blockwise_products
from cmhbench.registry import MethodSpec

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class CVHConfig:
    """CVH hyperparameters."""

    reg: float = hp(1e-3, "ridge added to each view's covariance, relative to its mean variance", ge=0)
    solver: str = hp("cca", "cca: the paper's problem (centred, closed form); toolbox: the circulating "
                     "CVH_learn/CVHtrainCCA re-implementation (uncentred, eigs of Cxy Cyy Cxy^T)",
                     choices=("cca", "toolbox"))
    toolbox_lambda: float = hp(1e-4, "toolbox solver only: ridge lambda * I on the uncentred scatter "
                               "matrices (its demo scripts' CVHparam.lambda)", ge=0)


def centred_moments(x: Tensor, y: Tensor, mean_x: Tensor, mean_y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """float64 ``(Zx^T Zx, Zy^T Zy, Zx^T Zy)`` of the rows ``z = float64(float32(row) - mean)`` of the
    paired ``(n, dx)`` ``x`` and ``(n, dy)`` ``y``, summed over row blocks of at most
    ``CHUNK_ENTRIES / 8`` entries of the wider view (16 MiB as float64): no centred or float64 copy
    of a whole view is held (at 184,477 pairs of 4096-d features that copy alone is 6 GB). A
    training set of one block (Wiki's) gives the products of the whole matrices, bit for bit."""
    means = (mean_x, mean_y)
    sxx, syy, sxy = blockwise_products([x, y], [(0, 0), (1, 1), (0, 1)], lambda v, rows: rows.float() - means[v],
                                       entries=interfaces.CHUNK_ENTRIES // 8)
    return sxx, syy, sxy


def ridge_covariance(second_moment: Tensor, n: int, reg: float) -> Tensor:
    """``(d, d)`` float64 covariance ``Z^T Z / n`` from the centred rows' ``second_moment`` plus
    ``reg * trace/d`` on the diagonal (at least 1e-12 so the Cholesky factor exists)."""
    cov = second_moment / n
    ridge = max(reg * float(torch.diagonal(cov).mean()), 1e-12)
    return cov + ridge * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)


def cvh_projections(moments: tuple[Tensor, Tensor, Tensor], n: int, bits: int, reg: float) -> tuple[Tensor, Tensor, Tensor]:
    """Closed-form CVH (``W = I``, two views) from the :func:`centred_moments` of ``n`` centred pairs.

    Returns ``(A_x, A_y, rho)``: ``(dx, bits)`` and ``(dy, bits)`` float64 projections whose first
    ``r = min(dx, dy, bits)`` columns are the canonical pairs of largest correlation ``rho`` (``(r,)``),
    normalised so ``A^T C A = I`` per view; columns beyond ``r`` are zero.
    """
    sxx, syy, sxy = moments
    cxx, cyy = ridge_covariance(sxx, n, reg), ridge_covariance(syy, n, reg)
    cxy = sxy / n
    lx, ly = torch.linalg.cholesky(cxx), torch.linalg.cholesky(cyy)
    # M = Lx^-1 Cxy Ly^-T, the cross-covariance of the whitened views.
    m = torch.linalg.solve_triangular(lx, cxy, upper=False)
    m = torch.linalg.solve_triangular(ly, m.T, upper=False).T
    u, rho, vh = torch.linalg.svd(m, full_matrices=False)
    r = min(rho.shape[0], bits)
    a_x = torch.linalg.solve_triangular(lx.T, u[:, :r], upper=True)
    a_y = torch.linalg.solve_triangular(ly.T, vh[:r].T, upper=True)
    pad = bits - r
    if pad:
        a_x = torch.cat([a_x, a_x.new_zeros(a_x.shape[0], pad)], dim=1)
        a_y = torch.cat([a_y, a_y.new_zeros(a_y.shape[0], pad)], dim=1)
    return a_x, a_y, rho[:r]


def toolbox_projections(moments: tuple[Tensor, Tensor, Tensor], bits: int, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """The circulating toolbox's CVH from the uncentred :func:`centred_moments` (means 0) of ``(n, dx)``
    ``x`` and ``(n, dy)`` ``y``.

    ``Cxx = x^T x + lam I``, ``Cyy = y^T y + lam I``, ``Cxy = x^T y`` (scatter, not covariance,
    and no centring); ``A_x`` holds the generalised eigenvectors of ``(Cxy Cyy Cxy^T, Cxx)`` with the
    ``bits`` largest eigenvalues ``lam_k`` (``eigs(A, B, bits, 'lr')``) and
    ``A_y = Cyy^-1 Cxy^T A_x diag(lam_k^-1/2)``. Returns float64 ``(dx, bits)``, ``(dy, bits)`` and
    the eigenvalues ``(bits,)``. Where ``lam_k`` is numerically zero (``bits`` beyond the rank
    ``dy`` of ``A``) the toolbox divides by ``sqrt(0)``; here those text columns are zero (a
    constant bit), the image columns stay (noise bits, as in the toolbox).
    """
    sxx, syy, cxy = moments
    cxx = sxx + lam * torch.eye(sxx.shape[0], dtype=sxx.dtype, device=sxx.device)
    cyy = syy + lam * torch.eye(syy.shape[0], dtype=syy.dtype, device=syy.device)
    a = cxy @ cyy @ cxy.T
    lx = torch.linalg.cholesky(cxx)
    whitened = torch.linalg.solve_triangular(lx, a, upper=False)
    whitened = torch.linalg.solve_triangular(lx, whitened.T, upper=False).T
    values, vectors = torch.linalg.eigh((whitened + whitened.T) / 2)
    order = torch.argsort(values, descending=True)[:bits]
    values = values[order]
    a_x = torch.linalg.solve_triangular(lx.T, vectors[:, order], upper=True)
    informative = values > values[0].clamp(min=0) * 1e-10
    scale = torch.where(informative, values.clamp(min=1e-300).rsqrt(), torch.zeros_like(values))
    a_y = torch.linalg.solve(cyy, cxy.T @ a_x) * scale
    if a_x.shape[1] < bits:  # dx < bits: no more eigenvectors; constant bits
        pad = bits - a_x.shape[1]
        a_x = torch.cat([a_x, a_x.new_zeros(a_x.shape[0], pad)], dim=1)
        a_y = torch.cat([a_y, a_y.new_zeros(a_y.shape[0], pad)], dim=1)
    return a_x, a_y, values


class CVH:
    """Linear hash functions per view from the closed-form CVH eigenproblem."""

    def __init__(self, config: CVHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.mean: dict[Modality, Tensor] = {}
        self.projection: dict[Modality, Tensor] = {}
        self.correlations: Tensor = torch.empty(0)

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Centre both views by their training means (``cca``; the toolbox does not centre) and solve
        for the ``bits`` projections."""
        toolbox = self.config.solver == "toolbox"
        for modality in Modality:
            mean = train.get(modality).float().mean(0, keepdim=True)
            self.mean[modality] = torch.zeros_like(mean) if toolbox else mean
        moments = centred_moments(train.image, train.text, self.mean[Modality.IMAGE], self.mean[Modality.TEXT])
        if toolbox:
            a_x, a_y, rho = toolbox_projections(moments, bits, self.config.toolbox_lambda)
        else:
            a_x, a_y, rho = cvh_projections(moments, len(train), bits, self.config.reg)
        self.projection = {Modality.IMAGE: a_x.float(), Modality.TEXT: a_y.float()}
        self.correlations = rho.float()

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` projections ``(x - mean) A`` (zero in unused bits)."""
        modality = Modality(modality)
        return (x.float() - self.mean[modality]) @ self.projection[modality]


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``cvh`` teacher."""
    register(
        MethodSpec(
            name="cvh",
            kind="teacher",
            build=CVH,
            config=CVHConfig,
            paper="Kumar, Udupa. Learning Hash Functions for Cross-View Similarity Search. IJCAI 2011.",
            code="",
            summary="closed-form spectral cross-view hashing (W = I: regularised CCA), one linear map per view",
        )
    )

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

Where the fused similarity comes from (``fusion``). The abstract names the teacher: "an
unsupervised semantic alignment hashing method, which can construct a modal fusion similarity
matrix", i.e. DSAH (Yang et al., ICMR 2020; the ``dsah`` teacher). So by default (``fusion =
"auto"``) a teacher that builds its own modal-fusion similarity (a ``fusion_similarity(train)``
method whose result has ``factors()``, see :meth:`cmhbench_plugins.teachers.dsah.DSAH.fusion_similarity`)
hands over *that* matrix, with *its* weights and scale: for ``dsah``, ``S_F = K (alpha S_I + (1 -
alpha) S_T)`` on the L2-normalised input features, ``S_* = 2 cos - 1``, ``alpha = 0.9``, ``K = 1.5``
(DSAH ``settings.py:42,44``, ``train.py:98-113``), exactly the target DSAH trains its codes on. Any
other teacher (djsrh, ucch, ...) builds no such matrix; for it the fused similarity is that of its
outputs (steps 1-3 below, ``fusion = "outputs"``, which can also be asked for with ``dsah``).
``fusion = "teacher"`` insists on the teacher's own matrix (an error with a teacher that has none).

Guesses, flagged: (a) that "the teacher's modal fusion similarity matrix" is the matrix DSAH builds
on its input features (the teacher's fit does not change it) rather than DSAH's fusion formula
applied to the teacher's codes (the abstract's "hidden correlation information of the pretrained
teacher" may mean the codes: ``fusion = "outputs"`` distils those); (b) the reconstruction (step 4)
and (c) the hand-over (step 5): the paper's equations, weights and threshold could not be read (the
stored copies of the paper hold its abstract and the opening of its introduction only). None of the
values below was tuned on query data.

The fusion of the teacher's outputs (``fusion = "outputs"``):

1. Teacher outputs ``Z_I = l2(encode(image))``, ``Z_T = l2(encode(text))``, ``(n, bits)``; the
   per-modality similarities are their cosines ``S_I = Z_I Z_I^T``, ``S_T = Z_T Z_T^T``.
2. Semantic alignment between the modalities is the teacher's cross-modal cosine, symmetrised:
   ``S_A = (Z_I Z_T^T + Z_T Z_I^T) / 2`` (the teacher was trained to put paired items close
   across modalities, so this is where its alignment shows).
3. Fusion: ``S_F = (1 - alignment) * (beta * S_I + (1 - beta) * S_T) + alignment * S_A``, with
   ``beta = 0.5`` and ``alignment = 0.5`` (no modality preferred; at these values
   ``S_F = Z_F Z_F^T`` with ``Z_F = (Z_I + Z_T) / 2``, the similarity of the fused code).
4. Reconstruction (both sources), the second-order (neighbourhood) form of DJSRH (Su et al., ICCV
   2019), on which this family of teachers builds: ``S_R = (1 - eta) S_F + eta * S_F S_F^T / n``,
   ``eta = 0.4`` (DJSRH's value). Two items become similar when their fused similarity profiles
   over all n training items agree, not only when their own codes do. With the teacher's own
   ``S_F = K S^`` (``S^`` in [-1, 1] for non-negative features), the term is taken on ``S^`` and scaled
   back: ``S_R = K ((1 - eta) S^ + eta S^ S^^T / n)``, so that ``eta`` weighs the two terms as it does
   for outputs, and ``K`` acts as in DSAH: values past 1 saturate (clamped to [-1, 1]).
5. Hand-over: ``mode = "binary"`` (default; DCMH's likelihood expects 0/1) marks as similar the
   ``similar_fraction`` of off-diagonal pairs with the largest ``S_R`` (one global threshold, so
   ``S`` stays symmetric), ``S_ij = 1[S_R_ij >= t]``; ``mode = "soft"`` hands
   ``(clamp(S_R, -1, 1) + 1) / 2`` in [0, 1]. The diagonal is 1 in both.
   ``similar_fraction = 0.05`` is a neutral label-free share (``ukd``'s K share before it took the
   UKD paper's K = 10,000 of 18,015 pairs, which marks 80% of Wiki's pairs similar behind UKD's
   teacher, ``benchmarks/fidelity.md``); a label-free method cannot know a dataset's share of
   label-relevant pairs.

For reference (training labels read only to report these numbers, never to choose a value):
on ``wiki`` at 32 bits with a ``djsrh`` teacher, the default marks 5.0% of the training pairs
similar, 46% of them share a label (base rate 10.7%; ``ukd`` with that earlier K share of 0.05:
12.4% similar, 35% precision); 2.6% of the items get no similar pair. ``similar_fraction`` 0.02 / 0.10 gives
precision 0.54 / 0.39.

Computation: ``S_F = U M U^T`` with ``U = [Z_I, Z_T]`` ``(n, 2 bits)`` and a small ``M``, so
``S_R = U ((1 - eta) M + eta M (U^T U) M / n) U^T`` costs O(n^2 bits) instead of O(n^3). The
teacher's own fusion has the same form with DSAH's ``U = [F_I, F_T, 1]`` (``(n, d_image + d_text +
1)``, the teacher's normalised features, kept as three parts and never stacked over all n; above
the dense-cache size DSAH keeps them as its features plus row norms, no second copy) and
``M = K diag(2 alpha I, 2 (1 - alpha) I, -1)``: ``S_R = U W U^T`` with a ``(d, d)`` kernel ``W``
(:class:`FactoredReconstruction`), O(n^2 d) a pass over the matrix (d = 4107 on Wiki's features,
5097 on NUS-WIDE's: one pass at n = 184,477 is about 3.5e14 multiply-adds).

What is kept, never the dense n x n matrix (136 GB at n = 184,477): the low-rank factors ``U K``
and ``U`` (float32, ``(n, 2 bits)`` each: 189 MB at n = 184,477 and 64 bits) and, in binary mode,
the threshold ``t``; a block of ``S_R`` is ``(clamp(UK_rows U_cols^T) + clamp(UK_cols U_rows^T)^T) / 2``
(:class:`ReconstructedSimilarity`). ``t`` is the exact ``similar_fraction``-quantile of the
off-diagonal ``S_R``: where the dense matrix is kept, from that matrix (the value ``kthvalue`` of
the flattened matrix gives), so the handed-over matrix is exactly the one this strategy always
built; above, by the same radix selection over chunked passes of blocks computed on demand
(:func:`cmhbench.neighbours.kth_largest_and_count`), so that the threshold and the handed-over blocks come
from the same products; its two passes also count the entries at or above ``t``, so the reported
``similar_fraction`` needs no third pass. The dense matrix is kept while it takes at most the larger of 256 MiB
and the training features (:func:`~cmhbench.interfaces.data_relative_cache_bytes`, as ``ukd`` and
``labels``): n <= 8,192 (Wiki, the ``djsrh`` protocol) wherever the features have fewer than 8,192
columns, as every dataset here. Held whole at 15,000 pairs (the ``ukd`` protocol) it was 860 MiB beside the
student, which took ``sakdh -> dadh`` over the 2x-features memory goal at NUS-WIDE size. Blocks computed on demand agree with the one-piece matrix
to float32 rounding (a matrix product's rounding depends on its shape), so a pair whose ``S_R`` lies
within rounding of ``t`` may read differently in two differently shaped blocks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Optional, Sequence


from cmhbench import interfaces
from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import (Modality, PairedFeatures, RunContext, SimilarityOperator, Supervision,
                                 Teacher, check_dense_fits, data_relative_cache_bytes, dense_is_cached, row_chunks,
                                 row_slices)
from cmhbench.lazy import torch
from cmhbench.registry import MethodSpec
from cmhbench.neighbours import kth_largest, kth_largest_and_count
from cmhbench.training import NormalizedRows, blockwise_products, fill_block_diagonal_, l2_normalize, times_transposed

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
    fusion: Literal["auto", "teacher", "outputs"] = hp(
        "auto", "fused similarity: the teacher's own modal-fusion matrix (teacher), the fusion of its outputs "
        "(outputs), or teacher where the teacher builds one, else outputs (auto)", choices=("auto", "teacher", "outputs"))


class ReconstructedSimilarity(SimilarityOperator):
    """``S`` from ``S_R = (clamp(UK U^T) + clamp(UK U^T)^T) / 2``: soft ``(S_R + 1) / 2`` (``threshold``
    None) or binary ``1[S_R >= threshold]``, unit diagonal. ``uk``, ``u``: ``(n, 2 bits)`` float32."""

    symmetric = True
    off_diagonal_at_least: Optional[int] = None  # binary mode: off-diagonal entries >= threshold, where counted

    def __init__(self, uk: Tensor, u: Tensor, threshold: Optional[float] = None) -> None:
        self.uk, self.u = uk, u
        self.threshold = threshold
        self.n = int(u.shape[0])

    @property
    def device(self) -> torch.device:
        return self.u.device

    def with_threshold(self, threshold: float, off_diagonal_at_least: Optional[int] = None) -> "ReconstructedSimilarity":
        """The same ``S_R`` (the same factor tensors, not copied) handed over in binary mode at ``threshold``;
        ``off_diagonal_at_least``, where known (:meth:`kth_largest_off_diagonal_and_count`), is the number of
        off-diagonal entries ``>= threshold``, which :meth:`mean` then reads instead of a pass over ``S``."""
        handed = copy.copy(self)
        handed.threshold = threshold
        handed.off_diagonal_at_least = off_diagonal_at_least
        return handed

    def mean(self) -> float:
        """The mean of all ``n^2`` entries: in binary mode with the count of the threshold's selection,
        ``(that count + n) / n^2`` (the diagonal is 1), the base class's block sum bit for bit, as the
        selection read the same row blocks; else that block sum (a pass over the ``n^2`` entries, a third
        of ``sakdh``'s distill at 184,477 pairs)."""
        if self.threshold is None or self.off_diagonal_at_least is None:
            return super().mean()
        return (self.off_diagonal_at_least + self.n) / (self.n * self.n)

    def reconstructed_block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols) or n)`` float32 block of the symmetrised ``S_R`` (in [-1, 1])."""
        uk_cols, u_cols = (self.uk, self.u) if cols is None else (self.uk[cols], self.u[cols])
        forward = (self.uk[rows] @ u_cols.T).clamp_(-1.0, 1.0)
        # the transposed term as one row-major product, not (uk_cols @ u_rows^T)^T: 15% faster at 128 x 40,000
        backward = (self.u[rows] @ uk_cols.T).clamp_(-1.0, 1.0)
        return forward.add_(backward).mul_(0.5)

    def reconstructed_dense(self) -> Tensor:
        """``(n, n)`` float32 symmetrised ``S_R`` in one product."""
        s_r = (self.uk @ self.u.T).clamp_(-1.0, 1.0)
        return _symmetrised(s_r)

    def _finish(self, s_r: Tensor) -> Tensor:
        """The handed-over entries from a fresh ``s_r`` block, in its own storage: the same values as
        ``(s_r + 1) / 2`` and ``(s_r >= threshold).float()``, without a second block-sized array (at
        184,477 pairs a 90-row block is 66 MB; on one such block, one thread: 77 -> 21 ms soft,
        70 -> 42 ms binary)."""
        return s_r.add_(1.0).div_(2.0) if self.threshold is None else s_r.copy_(s_r >= self.threshold)

    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols) or n)`` float32 entries in [0, 1]."""
        return fill_block_diagonal_(self._finish(self.reconstructed_block(rows, cols)), rows, cols)

    def dense(self) -> Tensor:
        """The whole matrix from :meth:`reconstructed_dense` (what this strategy always handed over)."""
        check_dense_fits(self.n, self.device)
        s = self._finish(self.reconstructed_dense())
        s.fill_diagonal_(1.0)
        return s

    def kth_largest_off_diagonal(self, k: int, cache_bytes: Optional[int] = None) -> float:
        """The exact k-th largest off-diagonal entry of ``S_R`` (:meth:`kth_largest_off_diagonal_and_count`)."""
        return self.kth_largest_off_diagonal_and_count(k, cache_bytes)[0]

    def kth_largest_off_diagonal_and_count(self, k: int, cache_bytes: Optional[int] = None) -> tuple[float, Optional[int]]:
        """The exact k-th largest off-diagonal entry ``t`` of ``S_R`` and how many off-diagonal entries are
        ``>= t``: from the one-piece matrix where a Supervision with ``cache_bytes`` keeps it dense
        (:func:`~cmhbench.interfaces.dense_is_cached`; no count: that Supervision's mean reads the kept
        matrix), else from row chunks computed on demand, the blocks :meth:`block` reads for the mean (the
        count None where :func:`kth_largest_and_count` gives none)."""
        n = self.n
        if dense_is_cached(n, cache_bytes):
            masked = self.reconstructed_dense()
            masked.fill_diagonal_(float("-inf"))
            # the k-th largest off-diagonal value (diagonal entries, -inf, rank last), selected over row
            # views of the one-piece matrix: kthvalue of the flattened matrix, the same value, held an
            # n^2 copy and an n^2 int64 index beside it (2.7 GB at 15,000 pairs)
            return kth_largest(lambda: (masked[rows] for rows in row_slices(n)), k), None

        def chunks():
            for rows in row_chunks(n, device=self.device):
                values = self.reconstructed_block(rows)
                values[torch.arange(len(rows), device=self.device), rows] = float("-inf")
                yield values

        return kth_largest_and_count(chunks, k)


def _symmetrised(s_r: Tensor) -> Tensor:
    """``0.5 (S_R + S_R^T)`` of the ``(n, n)`` ``s_r``, exactly symmetric despite float rounding, with the
    same roundings as that expression and one ``(n, n)`` temporary fewer (``s_r`` is freed by the caller)."""
    return (s_r + s_r.T).mul_(0.5)


class FactoredReconstruction(ReconstructedSimilarity):
    """``S_R = clamp(U W U^T)`` with ``U = [parts]`` ``(n, d)`` kept as its column parts (never stacked
    over all ``n``: they are the teacher's own, e.g. DSAH's L2-normalised features, tensors or
    :class:`~cmhbench.training.NormalizedRows` views) and a symmetric
    ``(d, d)`` float32 kernel ``W``; handed over as :class:`ReconstructedSimilarity` does. A block of
    ``r x c`` entries costs ``O(r d (d + c))``."""

    def __init__(self, parts: Sequence[Tensor | NormalizedRows], kernel: Tensor, threshold: Optional[float] = None) -> None:
        self.parts = list(parts)
        self.kernel = kernel
        self.threshold = threshold
        self.n = int(self.parts[0].shape[0])

    @property
    def device(self) -> torch.device:
        return self.kernel.device

    def rows_of_u(self, rows: Optional[Tensor] = None) -> Tensor:
        """``U[rows]`` ``(len(rows) or n, d)`` float32, stacked from the parts."""
        return torch.cat([part[:] if rows is None else part[rows] for part in self.parts], dim=1)

    def _times_u_transposed(self, left: Tensor, cols: Optional[Tensor]) -> Tensor:
        """``left @ U[cols]^T`` for ``left`` ``(r, d)``: part by part, ``(r, len(cols) or n)``."""
        out = None
        for block, part in zip(left.split([int(p.shape[1]) for p in self.parts], dim=1), self.parts):
            term = times_transposed(block, part) if cols is None else block @ part[cols].T
            out = term if out is None else out.add_(term)
        return out

    def reconstructed_block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols) or n)`` float32 block of ``S_R`` clamped to [-1, 1]."""
        return self._times_u_transposed(self.rows_of_u(rows) @ self.kernel, cols).clamp_(-1.0, 1.0)

    def reconstructed_dense(self) -> Tensor:
        """``(n, n)`` float32 ``S_R``, clamped and symmetrised exactly."""
        return _symmetrised(self.reconstructed_block(torch.arange(self.n, device=self.device)))


class ColumnStack:
    """``[parts]`` ``(n, d)``, the column parts side by side, stacked only for the rows asked for."""

    def __init__(self, parts: Sequence[Tensor | NormalizedRows]) -> None:
        self.parts = list(parts)
        self.shape = (int(self.parts[0].shape[0]), sum(int(p.shape[1]) for p in self.parts))
        self.device = self.parts[0].device

    def __getitem__(self, rows: Tensor | slice) -> Tensor:
        return torch.cat([p[rows] for p in self.parts], dim=1)


def gram(parts: Sequence[Tensor | NormalizedRows]) -> Tensor:
    """``U^T U`` ``(d, d)`` float64 of ``U = [parts]`` ``(n, d)`` (tensors or row-normalised views), accumulated over row chunks of at
    most :data:`~cmhbench.interfaces.CHUNK_ENTRIES` entries (no float64 copy of ``U``)."""
    return blockwise_products([ColumnStack(parts)], [(0, 0)], entries=interfaces.CHUNK_ENTRIES)[0]


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

    def factors(self, out_image: Tensor, out_text: Tensor) -> tuple[Tensor, Tensor]:
        """``(U K, U)``, float32 ``(n, 2 bits)`` each, with ``S_R = U K U^T`` from ``(n, bits)`` teacher outputs."""
        u = torch.cat([l2_normalize(out_image.double()), l2_normalize(out_text.double())], dim=1)
        n = u.shape[0]
        m = self.fusion_weights(out_image.shape[1], u.device)
        k = (1.0 - self.config.eta) * m + self.config.eta * (m @ (u.T @ u) @ m) / n
        return (u @ k).float(), u.float()

    def reconstructed(self, out_image: Tensor, out_text: Tensor) -> Tensor:
        """``(n, n)`` float32 ``S_R`` (in [-1, 1], before symmetrisation) from ``(n, bits)`` teacher outputs."""
        uk, u = self.factors(out_image, out_text)
        return (uk @ u.T).clamp_(-1.0, 1.0)

    def fusion_source(self, teacher: Teacher) -> str:
        """``"teacher"`` or ``"outputs"``: where the fused similarity comes from for this ``teacher``
        (``fusion = "teacher"`` with a teacher that builds no fusion matrix is a user error)."""
        own = callable(getattr(teacher, "fusion_similarity", None))
        if self.config.fusion == "teacher" and not own:
            raise ValueError(f"sakdh: fusion=teacher needs a teacher that builds its own modal-fusion similarity "
                             f"(such as dsah); {type(teacher).__name__} builds none: use fusion=outputs or auto")
        return "teacher" if self.config.fusion == "teacher" or (self.config.fusion == "auto" and own) else "outputs"

    def teacher_fusion(self, teacher: Teacher, train: PairedFeatures) -> FactoredReconstruction:
        """``S_R = K [(1 - eta) S^ + eta S^ S^^T / n]`` of the teacher's own fused ``S_F = K S^ = U M U^T``
        (DSAH: ``K (alpha S_I + (1 - alpha) S_T)`` on the input features, its ``alpha`` and ``K``), as
        factors: the teacher's ``(n, d)`` parts and a ``(d, d)`` kernel."""
        fused = teacher.fusion_similarity(train)
        parts, middle = fused.factors()
        scale = float(fused.k)
        m = middle.double() / scale
        n = int(parts[0].shape[0])
        eta = self.config.eta
        kernel = scale * ((1.0 - eta) * m + eta * (m @ gram(parts) @ m) / n)
        kernel = 0.5 * (kernel + kernel.T)
        return FactoredReconstruction(parts, kernel.float())

    def outputs_fusion(self, teacher: Teacher, train: PairedFeatures) -> ReconstructedSimilarity:
        """``S_R`` of the fused cosines of the teacher's ``(n, bits)`` outputs (module docstring, 1-4)."""
        out_i = teacher.encode(train.image, Modality.IMAGE).float()
        out_t = teacher.encode(train.text, Modality.TEXT).float()
        return ReconstructedSimilarity(*self.factors(out_i, out_t))

    def distill(self, teacher: Optional[Teacher], train: PairedFeatures) -> Supervision:
        """The similarity in [0, 1] (symmetric, diagonal 1) over the n training pairs, as an operator."""
        if teacher is None:
            raise ValueError("the sakdh strategy needs a teacher")
        with torch.no_grad():
            source = self.fusion_source(teacher)
            reconstruction = self.teacher_fusion(teacher, train) if source == "teacher" else self.outputs_fusion(teacher, train)
            n = reconstruction.n
            cache = data_relative_cache_bytes(train)
            if self.config.mode == "soft":
                supervision = Supervision(reconstruction, info={"mode": "soft", "fusion": source}, cache_bytes=cache)
                supervision.info["mean_similarity"] = supervision.mean()
                return supervision
            off = n * (n - 1)
            if off == 0:
                return Supervision(similarity=torch.ones(n, n, device=reconstruction.device),
                                   info={"mode": "binary", "fusion": source, "similar_fraction": 1.0})
            k = min(off, max(1, round(self.config.similar_fraction * off)))
            threshold, at_least = reconstruction.kth_largest_off_diagonal_and_count(k, cache)
            supervision = Supervision(reconstruction.with_threshold(threshold, at_least),
                                      info={"mode": "binary", "fusion": source, "threshold": threshold},
                                      cache_bytes=cache)
            supervision.info["similar_fraction"] = supervision.mean()
        return supervision


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

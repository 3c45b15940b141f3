"""An example cmhbench plugin: the ``example`` teacher and the ``example`` strategy.

The teacher centres each modality's features, projects them with a seeded Gaussian matrix and
aligns the two modalities by least squares on the training pairs: text projections are regressed
onto image projections, so that ``sign`` gives comparable codes. It is a floor, not a method to
publish; its job is to show every piece a plugin needs.

The strategy shows the two ways to hand a similarity to a student: a :class:`SimilarityOperator`
that keeps only the teacher's ``(n, bits)`` outputs and computes any block of the n x n similarity
on demand (``Supervision(operator)``: works for any n), or the dense ``(n, n)`` matrix
(``Supervision(similarity=matrix)``: simplest, for small n only; 136 GB at n = 184,477).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, SimilarityOperator, Supervision
from cmhbench.registry import MethodSpec


@dataclass(frozen=True)
class ExampleConfig:
    """Hyperparameters are typed fields with defaults, help texts and bounds (``--set ridge=0.1``)."""

    ridge: float = hp(1e-3, "ridge penalty of the text-to-image alignment", ge=0)


class ExampleTeacher:
    """Random projection of the image features; ridge-aligned linear map for the texts."""

    def __init__(self, config: ExampleConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Draw the image projection and solve the text map on the ``n`` training pairs."""
        gen = self.ctx.generator()
        self.mean_i = train.image.mean(0, keepdim=True)
        self.mean_t = train.text.mean(0, keepdim=True)
        self.proj_i = torch.randn(train.image.shape[1], bits, generator=gen).to(self.ctx.device)
        target = (train.image - self.mean_i) @ self.proj_i
        x = train.text - self.mean_t
        gram = x.T @ x + self.config.ridge * len(train) * torch.eye(x.shape[1], device=x.device)
        self.proj_t = torch.linalg.solve(gram, x.T @ target)

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` real values."""
        if Modality(modality) is Modality.IMAGE:
            return (x - self.mean_i) @ self.proj_i
        return (x - self.mean_t) @ self.proj_t


@dataclass(frozen=True)
class ExampleStrategyConfig:
    """How the ``example`` strategy hands its similarity over."""

    dense: bool = hp(False, "hand over the dense (n, n) matrix instead of the operator (small n only)")


class CosineSimilarity(SimilarityOperator):
    """``S_ij = (1 + cos(z_i, z_j)) / 2`` of the ``(n, bits)`` teacher outputs ``z``, block by block.

    An operator sets ``n`` and implements ``block``; ``symmetric = True`` promises ``S = S^T``;
    ``device`` says where blocks are returned; ``dense()`` (assembled from row blocks) comes with
    the base class.
    """

    symmetric = True

    def __init__(self, z: Tensor) -> None:
        self.z = z / z.norm(dim=1, keepdim=True).clamp(min=1e-12)  # kept: (n, bits) float32
        self.n = int(z.shape[0])

    @property
    def device(self) -> torch.device:
        return self.z.device

    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols))`` float32 entries in [0, 1] (``cols`` None: all n columns)."""
        other = self.z if cols is None else self.z[cols]
        return ((1.0 + self.z[rows] @ other.T) / 2.0).clamp(0.0, 1.0)


class ExampleStrategy:
    """Similar pairs are those whose teacher image outputs point the same way."""

    def __init__(self, config: ExampleStrategyConfig, ctx: RunContext) -> None:
        self.config = config

    def distill(self, teacher: Optional[ExampleTeacher], train: PairedFeatures) -> Supervision:
        """The supervision over the n training pairs: the operator, or (``dense``) its whole matrix."""
        with torch.no_grad():
            operator = CosineSimilarity(teacher.encode(train.image, Modality.IMAGE).float())
        if self.config.dense:
            matrix = operator.block(torch.arange(operator.n))  # (n, n) float32
            return Supervision(similarity=matrix, info={"mean_similarity": float(matrix.mean())})
        supervision = Supervision(operator)
        supervision.info["mean_similarity"] = supervision.mean()
        return supervision


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Called once by cmhbench at start-up: register every method this package provides."""
    register(
        MethodSpec(
            name="example",
            kind="teacher",
            build=ExampleTeacher,
            config=ExampleConfig,
            paper="(example plugin; no paper)",
            summary="random projection of image features, text features ridge-aligned to it",
        )
    )
    register(
        MethodSpec(
            name="example",
            kind="strategy",
            build=ExampleStrategy,
            config=ExampleStrategyConfig,
            paper="(example plugin; no paper)",
            summary="cosine of the teacher's image outputs, as an operator or a dense matrix",
        )
    )

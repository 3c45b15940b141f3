"""An example cmhbench plugin: the ``example`` teacher.

The teacher centres each modality's features, projects them with a seeded Gaussian matrix and
aligns the two modalities by least squares on the training pairs: text projections are regressed
onto image projections, so that ``sign`` gives comparable codes. It is a floor, not a method to
publish; its job is to show every piece a plugin needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
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

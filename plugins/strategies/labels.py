"""Strategy ``labels``: ground-truth label similarity, the supervised upper bound.

``S_ij = 1`` when training pairs i and j share at least one label, else 0: the similarity every
supervised CMH method (DCMH, SSAH, DADH, ...) is trained on. It reads the training labels (its spec
declares ``uses_labels``), uses no teacher, and hands the multi-hot labels to the student as
``soft_labels``. A distilled student that comes close to ``labels -> student`` has recovered most
of what supervision offers; no distillation strategy should be compared as if it had labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import PairedFeatures, RunContext, Supervision, Teacher
from cmhbench.registry import MethodSpec


@dataclass(frozen=True)
class LabelsConfig:
    """No hyperparameters."""


class LabelSimilarity:
    """Builds ``S = 1[L L^T > 0]`` from the training labels."""

    def __init__(self, config: LabelsConfig, ctx: RunContext) -> None:
        self.config = config

    def distill(self, teacher: Optional[Teacher], train: PairedFeatures) -> Supervision:
        """``(n, n)`` 0/1 similarity from the ``(n, c)`` multi-hot training labels."""
        if train.labels is None:
            raise ValueError("the labels strategy needs the training labels")
        labels = train.labels.float()
        similarity = (labels @ labels.T > 0).float()
        return Supervision(
            similarity=similarity,
            soft_labels=labels,
            info={"similar_fraction": float(similarity.mean())},
        )


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``labels`` strategy."""
    register(
        MethodSpec(
            name="labels",
            kind="strategy",
            build=LabelSimilarity,
            config=LabelsConfig,
            paper="Supervised upper bound: label-overlap similarity, as in Jiang & Li, Deep Cross-Modal Hashing, CVPR 2017.",
            summary="ground-truth similarity S_ij = 1 if items share a label (uses labels; no teacher)",
            uses_teacher=False,
            uses_labels=True,
        )
    )

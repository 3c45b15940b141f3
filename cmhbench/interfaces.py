"""The contracts between the harness and method plugins.

A *teacher* learns hash functions without labels; a *strategy* turns a trained teacher (or, for
the supervised upper bound, the labels) into a :class:`Supervision`; a *student* learns hash
functions from that supervision. Both teachers and students expose ``encode``, whose real-valued
output is turned into ``{-1,+1}`` codes by ``sign`` (with ``sign(0) = +1``) in the harness.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Protocol, TypeVar, runtime_checkable

from cmhbench.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

T = TypeVar("T")


class Modality(str, enum.Enum):
    """The two sides of a cross-modal pair."""

    IMAGE = "image"
    TEXT = "text"


@dataclass(frozen=True)
class PairedFeatures:
    """Row-aligned features of ``n`` image-text pairs.

    ``image`` is ``(n, d_image)`` float32, ``text`` is ``(n, d_text)`` float32, both on the run's
    device. ``labels`` is ``(n, c)`` multi-hot float32 and is ``None`` for everything except
    strategies that declare ``uses_labels`` (the supervised upper bound).
    """

    image: Tensor
    text: Tensor
    labels: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.image.ndim != 2 or self.text.ndim != 2:
            raise ValueError("image and text features must be 2-D (items x dimensions)")
        if self.image.shape[0] != self.text.shape[0]:
            raise ValueError(
                f"image and text features hold different numbers of items "
                f"({self.image.shape[0]} vs {self.text.shape[0]})"
            )
        if self.labels is not None and self.labels.shape[0] != self.image.shape[0]:
            raise ValueError("labels and features hold different numbers of items")

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def get(self, modality: Modality) -> Tensor:
        """The ``(n, d)`` feature matrix of one modality."""
        return self.image if Modality(modality) is Modality.IMAGE else self.text

    def without_labels(self) -> "PairedFeatures":
        """The same pairs with ``labels`` removed (what teachers and students receive)."""
        return PairedFeatures(self.image, self.text, None)


@dataclass(frozen=True)
class Supervision:
    """What a strategy hands to a student instead of labels.

    ``similarity`` is an ``(n, n)`` float32 matrix over the training pairs, entries in ``[0, 1]``
    (1: the pair ``(i, j)`` should get close codes, 0: far codes); it is used for every modality
    combination (image i vs text j, image i vs image j, ...). ``soft_labels`` is an optional
    ``(n, k)`` float32 matrix of pseudo-labels for students that need a label vector per item
    (SSAH-style); ``None`` when the strategy provides none. ``info`` holds scalar statistics the
    result file records (for example the fraction of similar pairs).
    """

    similarity: Tensor
    soft_labels: Optional[Tensor] = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.similarity
        if s.ndim != 2 or s.shape[0] != s.shape[1]:
            raise ValueError(f"similarity must be a square matrix, got shape {tuple(s.shape)}")
        if not torch.isfinite(s).all():
            raise ValueError("similarity holds NaN or infinite values")
        if s.numel() and (s.min() < 0 or s.max() > 1):
            raise ValueError("similarity entries must lie in [0, 1]")


class Progress(Protocol):
    """Progress reporting handed to plugins; the CLI renders it as rich progress bars."""

    def track(self, iterable: Iterable[T], total: Optional[int], description: str) -> Iterator[T]:
        """Yield from ``iterable`` while advancing a bar of ``total`` steps."""
        ...


class NullProgress:
    """A :class:`Progress` that shows nothing (tests, libraries, quiet runs)."""

    def track(self, iterable: Iterable[T], total: Optional[int], description: str) -> Iterator[T]:
        """Yield from ``iterable`` unchanged."""
        return iter(iterable)


@dataclass(frozen=True)
class RunContext:
    """What the harness gives every method it builds.

    ``device`` is where tensors live; ``seed`` is this stage's seed (the harness has already seeded
    torch's global generator with it, and ``generator()`` gives a private generator);
    ``progress`` reports training progress.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    progress: Progress = field(default_factory=NullProgress)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded with ``seed + offset`` (for permutations, init)."""
        g = torch.Generator()
        g.manual_seed(self.seed + offset)
        return g


@runtime_checkable
class Teacher(Protocol):
    """An unsupervised cross-modal hashing method."""

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Learn hash functions of ``bits`` bits from unlabelled training pairs."""
        ...

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """Map ``(n, d)`` features of ``modality`` to ``(n, bits)`` real values; ``sign`` gives codes."""
        ...


@runtime_checkable
class Strategy(Protocol):
    """A distillation strategy: turns a trained teacher into supervision for a student."""

    def distill(self, teacher: Optional[Teacher], train: PairedFeatures) -> Supervision:
        """Build the supervision over the ``n`` training pairs (``teacher`` is None when unused)."""
        ...


@runtime_checkable
class Student(Protocol):
    """A supervised cross-modal hashing method trained on a :class:`Supervision`."""

    def fit(self, train: PairedFeatures, supervision: Supervision, bits: int) -> None:
        """Learn hash functions of ``bits`` bits from training pairs and the given supervision."""
        ...

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """Map ``(n, d)`` features of ``modality`` to ``(n, bits)`` real values; ``sign`` gives codes."""
        ...


Builder = Callable[[Any, RunContext], Any]

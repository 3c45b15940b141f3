"""Student ``linear``: one linear projection per modality trained on DCMH's pairwise objective.

The simplest student, a floor for the deep students: ``F = X_I W_I + b_I`` and
``G = X_T W_T + b_T`` (no hidden layer), trained exactly like the ``dcmh`` student (Jiang, Li.
"Deep Cross-Modal Hashing." CVPR 2017; https://github.com/jiangqy/DCMH-CVPR2017), i.e. on

    - sum_ij (S_ij Theta_ij - log(1 + exp(Theta_ij))),  Theta = 0.5 F G^T
    + gamma * (||B - F||^2 + ||B - G||^2) + eta * (||F^T 1||^2 + ||G^T 1||^2),  B = sign(F + G)

with the same alternating schedule, optimiser and defaults as ``dcmh`` (gamma 1, eta 0.01, Adam
1e-3 -> 1e-5 linearly, batch 128, 150 epochs). The loss step is DCMH's own ``_step``, inherited;
only the heads differ (``build_heads``); ``fit`` is DCMH's. A linear hash function on top of fixed features is what shallow methods
(CVH, SCM, ...) learn, so this student separates what the deep heads add from what the
supervision alone gives.

Departure: none beyond those of ``dcmh`` (see its docstring); ``image_hidden`` / ``text_hidden``
do not exist here.

S is read only by row blocks (``supervision.rows(device)``: ``S[idx]`` for the image steps,
``S^T[idx]`` for the text steps, ``(batch, n)`` each), never as the dense n x n matrix: ``fit`` hands
DCMH's loop a supervision whose ``similarity`` is that row view (:class:`_ReadByRows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import PairedFeatures, SimilarityRows, Supervision
from cmhbench.lazy import nn
from cmhbench.registry import MethodSpec
from cmhbench_plugins.students.dcmh import DCMH


@dataclass(frozen=True)
class LinearConfig:
    """Hyperparameters of the linear student (those of ``dcmh``, without hidden widths)."""

    gamma: float = hp(1.0, "weight of the quantization term", ge=0)
    eta: float = hp(0.01, "weight of the bit-balance term (DCMH official: 1)", ge=0)
    optimizer: str = hp("adam", "adam, or sgd (DCMH official)", choices=("adam", "sgd"))
    lr_start: float = hp(1e-3, "learning rate of the first epoch", gt=0)
    lr_end: float = hp(1e-5, "learning rate of the last epoch, linearly spaced in between", gt=0)
    batch_size: int = hp(128, "pairs per minibatch", ge=1)
    epochs: int = hp(150, "alternating passes", ge=1)


class _ReadByRows:
    """``supervision`` with ``similarity`` replaced by its row view (:meth:`Supervision.rows`).

    DCMH's loop takes only ``similarity.to(device, torch.float32)``, ``.shape``, ``.T`` and rows
    ``[idx]`` of S, which the view serves block by block (slices of the kept matrix where the
    supervision keeps it dense, so the entries are exactly those of the dense path). Every other
    attribute is the supervision's. Not needed once ``dcmh`` reads ``supervision.rows(device)`` itself.
    """

    def __init__(self, supervision: Supervision) -> None:
        self._supervision = supervision
        self.similarity: SimilarityRows = supervision.rows()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._supervision, name)


class LinearHashing(DCMH):
    """A linear map per modality, trained with DCMH's alternating pairwise likelihood objective."""

    name = "linear"

    def fit(self, train: PairedFeatures, supervision: Supervision, bits: int) -> None:
        """DCMH's ``fit``, reading S by row blocks only (see :class:`_ReadByRows`)."""
        super().fit(train, _ReadByRows(supervision), bits)

    def build_heads(self, train: PairedFeatures, bits: int) -> tuple[nn.Module, nn.Module]:
        """One ``nn.Linear(d, bits)`` per modality."""
        return nn.Linear(train.image.shape[1], bits), nn.Linear(train.text.shape[1], bits)


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``linear`` student."""
    register(
        MethodSpec(
            name="linear",
            kind="student",
            build=LinearHashing,
            config=LinearConfig,
            paper="Linear hash functions trained with the objective of Jiang, Li. Deep Cross-Modal Hashing. CVPR 2017.",
            code="https://github.com/jiangqy/DCMH-CVPR2017",
            summary="one linear projection per modality on DCMH's pairwise likelihood, quantization and balance terms",
        )
    )

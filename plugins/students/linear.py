"""Student ``linear``: one linear projection per modality trained on DCMH's pairwise objective.

The simplest student, a floor for the deep students: ``F = X_I W_I + b_I`` and
``G = X_T W_T + b_T`` (no hidden layer), trained exactly like the ``dcmh`` student (Jiang, Li.
"Deep Cross-Modal Hashing." CVPR 2017; https://github.com/jiangqy/DCMH-CVPR2017), i.e. on

    - sum_ij (S_ij Theta_ij - log(1 + exp(Theta_ij))),  Theta = 0.5 F G^T
    + gamma * (||B - F||^2 + ||B - G||^2) + eta * (||F^T 1||^2 + ||G^T 1||^2),  B = sign(F + G)

with ``dcmh``'s closed-form step and ``fit``, inherited; only the heads differ (``build_heads``). Its
settings are not DCMH's official ones (there is no official linear student): gamma 1, eta 0.01, Adam
1e-3 -> 1e-5 linearly, batch 128, 150 epochs, and, as its config lacks those fields, ``dcmh``'s
:data:`~cmhbench_plugins.students.dcmh.EARLIER_SETTINGS` (no weight decay, F and G drawn from N(0, 1),
image net first, ``floor(n / batch)`` steps, raw text): the ``dcmh`` student's settings before it
followed the MATLAB release, kept so that this floor's numbers do not move.

A linear hash function on top of fixed features is what shallow methods (CVH, SCM, ...) learn, so this student separates what the deep heads add from what the
supervision alone gives.

Departure: none beyond those of ``dcmh`` (see its docstring); ``image_hidden`` / ``text_hidden``
do not exist here.

S is read only by row blocks, as in ``dcmh`` (``supervision.rows(device)``: ``S[idx]`` for the image
steps, ``S^T[idx]`` for the text steps, ``(batch, n)`` each), never as the dense n x n matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import PairedFeatures
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


class LinearHashing(DCMH):
    """A linear map per modality, trained with DCMH's alternating pairwise likelihood objective."""

    name = "linear"

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

"""Teacher ``djsrh``: Deep Joint-Semantics Reconstructing Hashing.

Paper: Shupeng Su, Zhisheng Zhong, Chao Zhang. "Deep Joint-Semantics Reconstructing Hashing for
Large-Scale Unsupervised Cross-Modal Retrieval." ICCV 2019.
Official code: https://github.com/zzs1994/DJSRH (``settings.py``, ``train.py``, ``models.py``), read
at HEAD, commit 6041c2d (2019-11-27; zs-zhong/DJSRH is the same repository at the same commit).

What it does, per minibatch of ``m`` pairs (as in the official ``train``):

1. ``S_I = 2 cos(F_I, F_I) - 1`` and ``S_T = 2 cos(F_T, F_T) - 1``, from fixed image features
   (the official code: a frozen ImageNet AlexNet's fc7) and the raw text vectors.
2. Joint semantics ``S~ = beta * S_I + (1 - beta) * S_T``, with the second-order term
   ``S = mu * ((1 - eta) * S~ + eta * S~ S~^T / m)``.
3. Codes ``B = tanh(alpha * h)`` of both heads, ``alpha = sqrt(epoch + 1)`` growing per epoch.
4. Loss, all mean squared errors between row-normalised code cosines and ``S``:
   ``||S - cos(B_I, B_T)||^2 + lambda1 ||S - cos(B_I, B_I)||^2 + lambda2 ||S - cos(B_T, B_T)||^2``.
5. Two SGD optimisers (image lr 0.001, text lr 0.01, momentum 0.9, weight decay 5e-4), batch 32.

Defaults are the official MIRFlickr settings (beta 0.9, lambda1 = lambda2 = 0.1, 80 epochs,
image lr 0.001, text lr 0.01: ``settings.py:33-38``) and the settings shared by every dataset
(batch 32, mu 1.5, eta 0.4, momentum 0.9, weight decay 5e-4: ``settings.py:56,58,59,62,63``).
On ``wiki`` the official Wiki settings apply (beta 0.3, lambda1 = lambda2 = 0.3, 200 epochs,
image lr 0.01, text lr 0.01: ``settings.py:18-23``). On ``nus-wide-tc10`` the official NUS-WIDE
settings apply (``settings.py:47-52``): beta 0.6, the rest as MIRFlickr (lambda1 = lambda2 = 0.1,
80 epochs, image lr 0.001, text lr 0.01). The official NUS-WIDE is TC10 (``settings.py:43-45``);
``nus-wide-tc21`` (the same NUS-WIDE images and tags) takes the same NUS-WIDE settings.
``mirflickr25k`` uses the defaults; ``synthetic`` is MIRFlickr-shaped and uses them too, as do
datasets the official code has no setting for (``iapr-tc12``, ``mscoco``, ``raw``).

Departures, and why:

- Feature-based: the image side is an MLP head ``d -> 1024 -> bits`` on pre-extracted features
  (the official code fine-tunes AlexNet's fc6/fc7 and a linear hash layer on raw images); the
  fixed features behind ``S_I`` are these input features (officially a frozen AlexNet's fc7).
  The text head is ``d -> 1024 -> bits`` (official: 4096 wide). The narrower heads take a
  quarter of the CPU time; ``--set teacher.hidden=4096`` restores the official width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable


from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.lazy import F, torch
from cmhbench.registry import MethodSpec
from cmhbench.training import encode_in_batches, l2_normalize, minibatches, paired_mlp_heads, sgd_per_head, step

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class DJSRHConfig:
    """DJSRH hyperparameters (official MIRFlickr settings unless noted)."""

    beta: float = hp(0.9, "weight of image affinity in the joint affinity (1-beta for text)", ge=0, le=1)
    eta: float = hp(0.4, "weight of the second-order term S S^T / m", ge=0, le=1)
    mu: float = hp(1.5, "scale of the joint affinity the codes reconstruct", gt=0)
    lambda1: float = hp(0.1, "weight of the image-image reconstruction term", ge=0)
    lambda2: float = hp(0.1, "weight of the text-text reconstruction term", ge=0)
    lr_image: float = hp(0.001, "SGD learning rate of the image head", gt=0)
    lr_text: float = hp(0.01, "SGD learning rate of the text head", gt=0)
    momentum: float = hp(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = hp(5e-4, "SGD weight decay", ge=0)
    batch_size: int = hp(32, "pairs per minibatch", ge=2)
    epochs: int = hp(80, "passes over the training pairs", ge=1)
    hidden: int = hp(1024, "hidden width of both heads (official: 4096)", ge=1)


class DJSRH:
    """Two MLP hash heads trained to reconstruct the joint-semantics affinity."""

    def __init__(self, config: DJSRHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.heads: dict[Modality, torch.nn.Module] = {}
        self.alpha = 1.0

    def joint_affinity(self, image: Tensor, text: Tensor) -> Tensor:
        """``(m, m)`` scaled joint-semantics affinity ``mu * S~`` of a batch of features."""
        c = self.config
        s_i = 2.0 * (l2_normalize(image) @ l2_normalize(image).T) - 1.0
        s_t = 2.0 * (l2_normalize(text) @ l2_normalize(text).T) - 1.0
        s = c.beta * s_i + (1.0 - c.beta) * s_t
        s = (1.0 - c.eta) * s + c.eta * (s @ s.T) / s.shape[0]
        return c.mu * s

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Train both heads for ``epochs`` passes of minibatch SGD."""
        c = self.config
        dev = self.ctx.device
        self.heads = paired_mlp_heads(train.image.shape[1], train.text.shape[1], c.hidden, bits, dev)
        lrs = {Modality.IMAGE: c.lr_image, Modality.TEXT: c.lr_text}
        optimisers = sgd_per_head(self.heads, lrs, c.momentum, c.weight_decay)
        gen = self.ctx.generator()
        n = len(train)
        for epoch in self.ctx.progress.track(range(c.epochs), c.epochs, f"djsrh {bits} bits"):
            self.alpha = math.sqrt(epoch + 1.0)
            for idx in minibatches(n, c.batch_size, gen, drop_last=True):
                idx = idx.to(dev)
                image, text = train.image[idx], train.text[idx]
                with torch.no_grad():
                    target = self.joint_affinity(image, text)
                b_i = l2_normalize(torch.tanh(self.alpha * self.heads[Modality.IMAGE](image)))
                b_t = l2_normalize(torch.tanh(self.alpha * self.heads[Modality.TEXT](text)))
                bi_bt = b_i @ b_t.T
                loss = (
                    F.mse_loss(bi_bt, target)
                    + c.lambda1 * F.mse_loss(b_i @ b_i.T, target)
                    + c.lambda2 * F.mse_loss(b_t @ b_t.T, target)
                )
                step(optimisers, loss)

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` ``tanh(alpha h)`` outputs (continuous; sign gives codes)."""
        return torch.tanh(self.alpha * encode_in_batches(self.heads[Modality(modality)], x))


# The official NUS-WIDE (TC10) settings, where they differ from the MIRFlickr defaults (settings.py:47).
NUS_WIDE = {"beta": 0.6}


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``djsrh`` teacher."""
    register(
        MethodSpec(
            name="djsrh",
            kind="teacher",
            build=DJSRH,
            config=DJSRHConfig,
            paper="Su, Zhong, Zhang. Deep Joint-Semantics Reconstructing Hashing for Large-Scale Unsupervised "
            "Cross-Modal Retrieval. ICCV 2019.",
            code="https://github.com/zzs1994/DJSRH",
            dataset_defaults={
                "wiki": {"beta": 0.3, "lambda1": 0.3, "lambda2": 0.3, "epochs": 200, "lr_image": 0.01},
                "nus-wide-tc10": NUS_WIDE,
                "nus-wide-tc21": NUS_WIDE,
            },
            summary="reconstructs a joint image+text cosine affinity (with a second-order term) by code cosines",
        )
    )

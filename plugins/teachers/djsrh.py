"""Teacher ``djsrh``: Deep Joint-Semantics Reconstructing Hashing.

Paper: Shupeng Su, Zhisheng Zhong, Chao Zhang. "Deep Joint-Semantics Reconstructing Hashing for
Large-Scale Unsupervised Cross-Modal Retrieval." ICCV 2019.
Official code: https://github.com/zzs1994/DJSRH (``settings.py``, ``train.py``, ``models.py``,
``metric.py``), read at HEAD, commit 6041c2d (2019-11-27; zs-zhong/DJSRH is the same repository at
the same commit). JDSH (the ``jdsh`` teacher) is built on this code.

What it does, per minibatch of ``m`` pairs (as in the official ``Session.train``, ``train.py:68-119``):

1. ``S_I = 2 cos(F_I, F_I) - 1`` and ``S_T = 2 cos(F_T, F_T) - 1`` (``train.py:92-98``), ``F_I`` the fixed
   image features (officially the fc7 output of a second, frozen ImageNet AlexNet, ``FeatNet_I``, in eval
   mode and in no optimiser: ``train.py:53,70,87``) and ``F_T`` the raw text vectors.
2. Joint semantics ``S~ = beta S_I + (1 - beta) S_T`` and ``S = mu ((1 - eta) S~ + eta S~ S~ / m)``
   (``train.py:108-110``; the official divisor is ``BATCH_SIZE``, equal to ``m`` as the loader drops the
   last partial batch, ``train.py:36-40``).
3. Codes ``B = tanh(alpha h)`` of both nets with ``alpha = sqrt(epoch + 1)``, set at the start of every
   epoch (``models.py:22,26-27,40,43-44``; ``train.py:73-74``); rows are L2-normalised (``train.py:101-106``).
4. Loss, mean squared errors between code cosines and ``S`` (``train.py:112-115``):
   ``lambda1 ||cos(B_I, B_I) - S||^2 + ||cos(B_I, B_T) - S||^2 + lambda2 ||cos(B_T, B_T) - S||^2``.
5. One backward pass, then a step of each of two SGD optimisers (``train.py:84-85,117-119``): the image
   optimiser (lr ``LR_IMG``) and the text optimiser on every ``TxtNet`` parameter (lr ``LR_TXT``,
   ``train.py:66``), both momentum 0.9, weight decay 5e-4. ``NUM_EPOCH`` epochs; the last epoch is kept
   (``train.py:180-188``; the periodic evaluation only logs mAP@50). Retrieval codes are
   ``sign(tanh(alpha h))`` (``metric.py:19,25`` and ``61,67``).

Defaults are the official MIRFlickr settings (beta 0.9, lambda1 = lambda2 = 0.1, 80 epochs,
image lr 0.001, text lr 0.01: ``settings.py:33-38``) and the settings shared by every dataset
(batch 32, mu 1.5, eta 0.4, momentum 0.9, weight decay 5e-4: ``settings.py:56,58,59,62,63``).
On ``wiki`` the official Wiki settings apply (beta 0.3, lambda1 = lambda2 = 0.3, 200 epochs,
image lr 0.01, text lr 0.01: ``settings.py:18-23``). On ``nus-wide-tc10`` the official NUS-WIDE
settings apply (``settings.py:47-52``): beta 0.6, the rest as MIRFlickr (lambda1 = lambda2 = 0.1,
80 epochs, image lr 0.001, text lr 0.01). The official NUS-WIDE is TC10 (``settings.py:43-45``);
``nus-wide-tc21`` (the same NUS-WIDE images and tags) takes the same NUS-WIDE settings.
``mirflickr25k`` uses the defaults; ``synthetic`` is MIRFlickr-shaped and uses them too, as do
datasets the official code has no setting for (``iapr-tc12``, ``mscoco``, ``raw``). The text net's
width ``hidden`` is the official 4096 (``models.py:33-34``). (Until this commit both nets were
``d -> 1024 -> bits`` MLPs; on Wiki, 32 bits, seeds 0-2, mAP i2t/t2i went from 0.2014 ± 0.0190 /
0.1819 ± 0.0020 to the figures of the regenerated wiki leaderboard.)

Networks (official ones after the feature point, ``official_nets``):

- Image: officially ``ImgNet`` (``models.py:8-27``) is an ImageNet AlexNet (``models.py:11``) whose
  classifier is cut to its first six children (``models.py:12``: Dropout(0.5), fc6, ReLU, Dropout(0.5),
  fc7, ReLU, so both Dropout layers sit *before* fc6 and fc7 and none after the fc7 output), then
  ``fc_encode = Linear(4096, code_len)`` (``models.py:13``) reads the fc7 output directly
  (``models.py:18-22``). On pre-extracted fc7 features only the hash layer comes after the feature point,
  so the image net here is exactly ``Linear(d_image, bits)``, PyTorch's default initialisation as
  officially (nothing re-initialises it), with nothing (no dropout, normalisation or scale) before it.
- Text: the official ``TxtNet`` whole (``models.py:30-44``): ``fc1 = Linear(d_text, 4096) -> ReLU ->
  fc2 = Linear(4096, bits)``, no dropout, default initialisation.
- Optimiser groups: officially on Wiki ``opt_I`` trains ``fc_encode`` and ``alexnet.classifier``
  (fc6, fc7), both at ``LR_IMG`` (``train.py:58-61``); on MIRFlickr and NUS-WIDE every ``CodeNet_I``
  parameter, the convolutional layers included (``train.py:63-64``). ``opt_T`` trains all of
  ``CodeNet_T`` (``train.py:66``). On features both image groups reduce to the hash layer.

Departures, and why:

- Feature inputs (the one departure every pixel-based method shares): the AlexNet backbone cannot be
  run or fine-tuned on pre-extracted features, so fc6/fc7 (Wiki) or the whole AlexNet (MIRFlickr,
  NUS-WIDE), which the official image optimiser fine-tunes, stay fixed here, and the classifier's two
  Dropout(0.5) layers, active in the official ``CodeNet_I`` during training (``train.py:69``) but placed
  before fc6 and fc7, have nothing to act on. For the same reason the fixed ``F_I`` behind ``S_I`` and
  the hash layer's input are one and the same feature; officially ``F_I`` is the frozen pretrained fc7
  (``FeatNet_I``, eval mode) and the hash layer reads the fine-tuned, dropped-out fc7 of ``CodeNet_I``.
- Random draws only: the official code seeds torch with 1 for every run (``train.py:16``) and also draws
  the unused ``fc_encode`` of ``FeatNet_I`` (``train.py:53``) between the image and the text net; here
  the run's seed is used and only the two trained nets are drawn (image first, then text, as
  ``train.py:52,56``). The batch order comes from the run's generator rather than the loader's.
- ``S~ S~ / m`` divides by the batch's size where the official code divides by ``BATCH_SIZE``; they
  differ only when fewer than ``batch_size`` pairs exist (one short batch; the official loader would then
  train on nothing).

Checked against the official code (``benchmarks/fidelity.md``): started from the same weights and fed the
same minibatches, the official ``Session.train`` and this teacher end 335 Wiki batches (5 epochs) with
bit-identical parameters and codes; the loss builds the three cosine matrices in the official order
(``train.py:104-106``) so that autograd sums the text gradient terms in the same order. On Wiki (32 bits,
seeds 0-2) both sides agree in mAP@all. Schedule, not a departure: ``epochs`` is the official value; on
Wiki (200 epochs, 67 batches per epoch, one torch thread) a 32-bit ``cmhbench run`` process uses 43-47 s
of CPU time (the official code on the same features: 51-56 s); wall times on the shared 2-core machine were
71-98 s for the fit (official: 55-124 s for training and encoding).
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
from cmhbench.training import encode_in_batches, l2_normalize, minibatches, mlp, sgd_per_head, step

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class DJSRHConfig:
    """DJSRH hyperparameters (official MIRFlickr settings unless noted)."""

    beta: float = hp(0.9, "weight of image affinity in the joint affinity (1-beta for text)", ge=0, le=1)
    eta: float = hp(0.4, "weight of the second-order term S S / m", ge=0, le=1)
    mu: float = hp(1.5, "scale of the joint affinity the codes reconstruct", gt=0)
    lambda1: float = hp(0.1, "weight of the image-image reconstruction term", ge=0)
    lambda2: float = hp(0.1, "weight of the text-text reconstruction term", ge=0)
    lr_image: float = hp(0.001, "SGD learning rate of the image hash layer", gt=0)
    lr_text: float = hp(0.01, "SGD learning rate of the text net", gt=0)
    momentum: float = hp(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = hp(5e-4, "SGD weight decay", ge=0)
    batch_size: int = hp(32, "pairs per minibatch", ge=2)
    epochs: int = hp(80, "passes over the training pairs", ge=1)
    hidden: int = hp(4096, "hidden width of the text net (official: 4096, models.py:33-34)", ge=1)


class DJSRH:
    """A linear image hash layer and the official one-hidden-layer text net, trained so that code cosines
    reconstruct the joint-semantics affinity."""

    def __init__(self, config: DJSRHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.heads: dict[Modality, torch.nn.Module] = {}
        self.alpha = 1.0

    def joint_affinity(self, image: Tensor, text: Tensor) -> Tensor:
        """``(m, m)`` target ``S = mu ((1 - eta) S~ + eta S~ S~ / m)`` of a batch of ``(m, d_image)`` and
        ``(m, d_text)`` features (``train.py:92-98,108-110``)."""
        c = self.config
        s_i = 2.0 * (l2_normalize(image) @ l2_normalize(image).T) - 1.0
        s_t = 2.0 * (l2_normalize(text) @ l2_normalize(text).T) - 1.0
        s = c.beta * s_i + (1.0 - c.beta) * s_t
        s = (1.0 - c.eta) * s + c.eta * (s @ s) / s.shape[0]
        return c.mu * s

    def loss(self, code_i: Tensor, code_t: Tensor, s: Tensor) -> Tensor:
        """DJSRH loss (scalar) for ``(m, bits)`` codes ``tanh(alpha h)`` and the ``(m, m)`` target ``S``
        (``train.py:101-115``)."""
        c = self.config
        b_i, b_t = l2_normalize(code_i), l2_normalize(code_t)
        # built in the official order (BI_BI, BT_BT, BI_BT), so that autograd sums the gradient terms in the
        # same order and a lock-step run matches the official code to the last bit
        bi_bi, bt_bt, bi_bt = b_i @ b_i.T, b_t @ b_t.T, b_i @ b_t.T
        return c.lambda1 * F.mse_loss(bi_bi, s) + F.mse_loss(bi_bt, s) + c.lambda2 * F.mse_loss(bt_bt, s)

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Train both nets for ``epochs`` passes of minibatch SGD."""
        c = self.config
        dev = self.ctx.device
        self.heads = official_nets(train.image.shape[1], train.text.shape[1], c.hidden, bits, dev)
        lrs = {Modality.IMAGE: c.lr_image, Modality.TEXT: c.lr_text}
        optimisers = sgd_per_head(self.heads, lrs, c.momentum, c.weight_decay)
        gen = self.ctx.generator()
        n = len(train)
        for epoch in self.ctx.progress.track(range(c.epochs), c.epochs, f"djsrh {bits} bits"):
            self.alpha = math.pow(epoch + 1.0, 0.5)  # models.py:27
            for idx in minibatches(n, c.batch_size, gen, drop_last=True):
                idx = idx.to(dev)
                image, text = train.image[idx], train.text[idx]
                self.train_batch(image, text, optimisers)

    def train_batch(self, image: Tensor, text: Tensor, optimisers: list) -> None:
        """One official minibatch update (``train.py:84-119``) on ``(m, d_image)`` and ``(m, d_text)`` features:
        target, codes ``tanh(alpha h)`` at the current ``alpha``, loss, one step of each optimiser."""
        with torch.no_grad():
            s = self.joint_affinity(image, text)
        code_i = torch.tanh(self.alpha * self.heads[Modality.IMAGE](image))
        code_t = torch.tanh(self.alpha * self.heads[Modality.TEXT](text))
        step(optimisers, self.loss(code_i, code_t, s))

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` ``tanh(alpha h)`` outputs (continuous; sign gives codes)."""
        return torch.tanh(self.alpha * encode_in_batches(self.heads[Modality(modality)], x))


def official_nets(image_dim: int, text_dim: int, hidden: int, bits: int, device: torch.device) -> dict:
    """``{IMAGE: Linear(d_image, bits), TEXT: Linear(d_text, hidden) -> ReLU -> Linear(hidden, bits)}`` on
    ``device``: the official ``ImgNet.fc_encode`` (``models.py:13``) and ``TxtNet`` (``models.py:33-34,38-39``),
    default initialisation. The image layer is built first, as officially (``train.py:52,56``)."""
    return {
        Modality.IMAGE: torch.nn.Linear(image_dim, bits).to(device),
        Modality.TEXT: mlp(text_dim, [hidden], bits).to(device),
    }


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
            # settings.py:18-23 (the Wiki block); NUS-WIDE: settings.py:47-52
            dataset_defaults={
                "wiki": {"beta": 0.3, "lambda1": 0.3, "lambda2": 0.3, "epochs": 200, "lr_image": 0.01},
                "nus-wide-tc10": NUS_WIDE,
                "nus-wide-tc21": NUS_WIDE,
            },
            summary="reconstructs a joint image+text cosine affinity (with a second-order term) by code cosines",
        )
    )

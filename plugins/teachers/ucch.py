"""Teacher ``ucch``: Unsupervised Contrastive Cross-modal Hashing.

Paper: Peng Hu, Hongyuan Zhu, Jie Lin, Dezhong Peng, Yin-Ping Zhao, Xi Peng. "Unsupervised
Contrastive Cross-modal Hashing." IEEE TPAMI 2022 (DOI 10.1109/TPAMI.2022.3177356).
Official code: https://github.com/penghu-cs/UCCH (``UCCH.py``, ``NCE/NCEAverage.py``,
``NCE/NCECriterion.py``, ``src/utils.py`` for the ranking loss, ``nets/`` for the heads,
``utils/config.py`` and the README's command line for the settings).

As in the official code, per minibatch of ``m`` pairs with head outputs ``u`` (image) and ``v``
(text), each ``tanh`` then L2-normalised, ``(m, bits)``:

1. Contrastive hashing loss ``Lc`` with a momentum memory ``M`` (one unit vector per training
   pair, initialised as normalised random signs). Item i is scored against ``K + 1`` memory
   rows, its own first and ``K`` drawn uniformly: ``logit = <sign(M_j), u_i> / (T sqrt(bits))``
   (likewise for ``v_i``); ``Lc = CE(u logits, 0) + CE(v logits, 0)``. The ``sign`` on the memory
   is the "momentum optimiser" that makes hashing learnable without relaxation: the codes that
   are contrasted are binary. After the step, ``M_i <- normalise(mu M_i + (1 - mu)
   normalise((u_i + v_i) / 2))``. During the warm-up epoch the memory is not used: every item is
   contrasted with the signs of the batch's own ``(u + v) / 2`` and the memory is overwritten
   (``mu = 0``), as the official code does for ``epoch < warmup_epoch``.
2. Cross-modal ranking loss ``Lr`` over the ``m x m`` score matrix ``s = u v^T``: scores of
   negatives below ``s_ii - margin`` are shifted down by ``shift`` (``s - shift``), the others kept,
   and ``Lr = mean_i(-s_ii + logsumexp_j cost_ij + margin)`` over rows plus the same over columns.
3. ``loss = alpha Lc + (1 - alpha) Lr``; Adam, gradient norm clipped to 1.

Defaults follow the official README command (features, MIRFlickr, all bit lengths): alpha 0.7,
margin 0.2, shift 0.1, 20 epochs, batch 256, Adam lr 1e-4, and ``utils/config.py``: T 0.9,
memory momentum 0.4, K 4096 negatives, weight decay 1e-6, warm-up 1 epoch, 3 hidden layers for
the image head and 2 for the text head. The official scripts give no per-dataset settings (and
no Wiki setting), so none are registered.

Departures, and why:

- Head width 1024 instead of the official 8192 (``mid_num1 = mid_num2 = 8192``): 64x fewer
  multiply-adds in the hidden layer, needed for CPU time; ``--set teacher.hidden=8192`` restores it.
- The official code keeps the epoch whose codes score best on a labelled validation split; a
  label-free teacher cannot, so the last epoch's heads are used.
- The official learning-rate schedule (MultiStepLR at epochs 30, 60, 90, 120) never fires in 20
  epochs and is omitted; so is the unused multi-view augmentation (one view per modality).
- The K negatives are drawn once per minibatch and shared by its items (official: K drawn per
  item with the alias sampler). Each item still sees K uniform draws from all training pairs
  after its own row; sharing turns a ``(m, K, bits)`` gather and batched product into one
  ``(m, bits) x (bits, K)`` product, which cut the CPU time on Wiki several-fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable


from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.lazy import F, torch, torch_class
from cmhbench.registry import MethodSpec
from cmhbench.training import encode_in_batches, l2_normalize, minibatches, mlp

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class UCCHConfig:
    """UCCH hyperparameters (official README / config.py settings unless noted)."""

    alpha: float = hp(0.7, "weight of the contrastive loss (1 - alpha: ranking loss)", ge=0, le=1)
    temperature: float = hp(0.9, "temperature T; logits are divided by T * sqrt(bits)", gt=0)
    momentum: float = hp(0.4, "memory momentum mu", ge=0, lt=1)
    negatives: int = hp(4096, "memory rows drawn as negatives per item (K)", ge=1)
    margin: float = hp(0.2, "ranking-loss margin", ge=0)
    shift: float = hp(0.1, "ranking-loss shift of easy negatives", ge=0)
    lr: float = hp(1e-4, "Adam learning rate", gt=0)
    weight_decay: float = hp(1e-6, "Adam weight decay", ge=0)
    batch_size: int = hp(256, "pairs per minibatch", ge=2)
    epochs: int = hp(20, "passes over the training pairs", ge=1)
    warmup_epochs: int = hp(1, "epochs contrasting within the batch before the memory is used", ge=0)
    image_layers: int = hp(3, "linear layers of the image head", ge=1)
    text_layers: int = hp(2, "linear layers of the text head", ge=1)
    hidden: int = hp(1024, "hidden width of both heads (official: 8192)", ge=1)
    clip_norm: float = hp(1.0, "gradient-norm clip", gt=0)


def contrastive_logits(u: Tensor, own: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """``(m, 1+K)`` logits ``<sign(w), u_i> / (T sqrt(bits))`` of ``u`` ``(m, bits)`` against each
    item's own row ``own`` ``(m, bits)`` (column 0) and ``K`` shared rows ``negatives`` ``(K, bits)``."""
    scale = temperature * math.sqrt(u.shape[1])
    pos = (torch.sign(own) * u).sum(1, keepdim=True)
    return torch.cat([pos, u @ torch.sign(negatives).T], dim=1) / scale


def ranking_loss(u: Tensor, v: Tensor, margin: float, shift: float) -> Tensor:
    """Scalar cross-modal ranking loss (CRL) of matched rows ``u``, ``v`` ``(m, bits)``."""
    s = u @ v.T
    d = s.diag()
    keep_row = (s >= (d[:, None] - margin)).float().detach()
    keep_col = (s >= (d[None, :] - margin)).float().detach()
    cost_row = s - (1.0 - keep_row) * shift
    cost_col = s - (1.0 - keep_col) * shift
    row = (-cost_row.diag() + torch.logsumexp(cost_row, dim=1) + margin).mean()
    col = (-cost_col.diag() + torch.logsumexp(cost_col, dim=0) + margin).mean()
    return row + col


@torch_class
def _Head():
    """The ``nn.Module`` class ``_Head``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class _Head(torch.nn.Module):
        """MLP -> tanh -> L2 normalisation: ``(n, d)`` -> ``(n, bits)`` unit vectors."""

        def __init__(self, in_dim: int, layers: int, hidden: int, bits: int) -> None:
            super().__init__()
            self.fc = mlp(in_dim, [hidden] * (layers - 1), bits)

        def forward(self, x: Tensor) -> Tensor:
            return l2_normalize(torch.tanh(self.fc(x)))

    return _Head


class UCCH:
    """Two hash heads trained by contrast against a signed momentum memory plus a ranking loss."""

    def __init__(self, config: UCCHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.heads: dict[Modality, torch.nn.Module] = {}
        self.memory: Tensor | None = None

    def init_memory(self, n: int, bits: int) -> Tensor:
        """``(n, bits)`` memory of normalised random sign vectors (official initialisation)."""
        stdv = 1.0 / math.sqrt(bits / 3.0)
        rnd = torch.rand(n, bits, generator=self.ctx.generator(1)) * 2 * stdv - stdv
        return l2_normalize(torch.sign(rnd)).to(self.ctx.device)

    def contrastive_loss(self, u: Tensor, v: Tensor, idx: Tensor, warmup: bool, gen: torch.Generator) -> Tensor:
        """``Lc`` of one batch (``u``, ``v`` ``(m, bits)``, training indices ``idx`` ``(m,)``); updates the memory."""
        c = self.config
        m, bits = u.shape
        if warmup:
            # in-batch contrast: item i against the signs of the batch's own (u + v) / 2, itself first
            joint = ((u + v) / 2.0).detach()
            others = ~torch.eye(m, dtype=torch.bool, device=u.device)
            logits = [
                torch.cat([(torch.sign(joint) * x).sum(1, keepdim=True), (x @ torch.sign(joint).T)[others].view(m, m - 1)], 1)
                / (c.temperature * math.sqrt(bits))
                for x in (u, v)
            ]
            mu = 0.0
        else:
            draw = torch.randint(0, self.memory.shape[0], (c.negatives,), generator=gen).to(u.device)
            own, negatives = self.memory[idx], self.memory[draw]
            logits = [contrastive_logits(x, own, negatives, c.temperature) for x in (u, v)]
            mu = c.momentum
        target = torch.zeros(m, dtype=torch.long, device=u.device)
        loss = F.cross_entropy(logits[0], target) + F.cross_entropy(logits[1], target)
        with torch.no_grad():
            new = l2_normalize((u + v) / 2.0)
            self.memory[idx] = l2_normalize(mu * self.memory[idx] + (1.0 - mu) * new)
        return loss

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Train both heads for ``epochs`` passes of Adam on ``alpha Lc + (1 - alpha) Lr``."""
        c = self.config
        dev = self.ctx.device
        self.heads = {
            Modality.IMAGE: _Head(train.image.shape[1], c.image_layers, c.hidden, bits).to(dev),
            Modality.TEXT: _Head(train.text.shape[1], c.text_layers, c.hidden, bits).to(dev),
        }
        params = [p for h in self.heads.values() for p in h.parameters()]
        opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        n = len(train)
        self.memory = self.init_memory(n, bits)
        gen, neg_gen = self.ctx.generator(), self.ctx.generator(2)
        for epoch in self.ctx.progress.track(range(c.epochs), c.epochs, f"ucch {bits} bits"):
            for idx in minibatches(n, min(c.batch_size, n), gen, drop_last=True):
                idx = idx.to(dev)
                u = self.heads[Modality.IMAGE](train.image[idx])
                v = self.heads[Modality.TEXT](train.text[idx])
                lc = self.contrastive_loss(u, v, idx, epoch < c.warmup_epochs, neg_gen)
                lr_ = ranking_loss(u, v, c.margin, c.shift)
                loss = c.alpha * lc + (1.0 - c.alpha) * lr_
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, c.clip_norm)
                opt.step()

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` normalised ``tanh`` outputs (sign gives the codes)."""
        return encode_in_batches(self.heads[Modality(modality)], x)


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``ucch`` teacher."""
    register(
        MethodSpec(
            name="ucch",
            kind="teacher",
            build=UCCH,
            config=UCCHConfig,
            paper="Hu, Zhu, Lin, Peng, Zhao, Peng. Unsupervised Contrastive Cross-modal Hashing. IEEE TPAMI 2022.",
            code="https://github.com/penghu-cs/UCCH",
            summary="contrast against a signed momentum memory of codes plus a cross-modal ranking loss",
        )
    )

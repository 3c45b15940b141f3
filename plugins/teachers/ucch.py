"""Teacher ``ucch``: Unsupervised Contrastive Cross-modal Hashing.

Paper: Peng Hu, Hongyuan Zhu, Jie Lin, Dezhong Peng, Yin-Ping Zhao, Xi Peng. "Unsupervised
Contrastive Cross-modal Hashing." IEEE TPAMI 45(3):3877-3889, 2023 (DOI 10.1109/TPAMI.2022.3177356).
Official code: https://github.com/penghu-cs/UCCH, read whole at HEAD, commit 0c20e62 (``UCCH.py``,
``NCE/NCEAverage.py``, ``NCE/NCECriterion.py``, ``NCE/alias_multinomial.py``, ``nets/ImageNet.py``,
``nets/TextNet.py``, ``src/utils.py``, ``src/cmdataset.py``, ``utils/config.py``, ``README.md``).
Lines below are at that commit.

The official method is feature-based for the ``*_fea`` datasets of its README (``UCCH.py:93-95``:
the image network reads the pre-extracted VGG19 feature, ``src/cmdataset.py:160-225``), so both
networks are kept whole at official width (the DESIGN.md rule for feature-based methods):

- image: ``Linear(d_image, 8192) -> ReLU -> Linear(8192, 8192) -> ReLU -> Linear(8192, bits)``
  (``nets/ImageNet.py:7,15-27``; 3 layers from ``--num_hiden_layers 3 2``, README.md:16,
  ``UCCH.py:94``);
- text: ``Linear(d_text, 8192) -> ReLU -> Linear(8192, bits)`` (``nets/TextNet.py:7,15-27``;
  2 layers, ``UCCH.py:100``);
- both outputs ``tanh`` then divided by their L2 norm (``ImageNet.py:31-36``, ``TextNet.py:31-36``);
  PyTorch's default ``nn.Linear`` initialisation (the ``weights_init`` call is commented out,
  ``ImageNet.py:28``). Codes are ``sign`` of the outputs (``UCCH.py:188-189``).

Per minibatch of ``m`` pairs with outputs ``u`` (image), ``v`` (text), ``(m, bits)``:

1. Contrastive hashing loss ``Lc`` against a memory ``M`` of one unit vector per training pair
   (``NCEAverage.py:30-90``). Item i is scored against ``K + 1`` memory rows: its own first, then
   ``K`` drawn uniformly with replacement from all training pairs, drawn anew for every item
   (``NCEAverage.py:43-44``; the alias sampler over uniform ``unigrams``, ``:12-13``, draws
   uniformly, ``alias_multinomial.py:49-65``). Logits ``<sign(M_j), u_i> / (T sqrt(bits))``
   (``:17,52-60``; the ``sign`` is the "momentum optimiser" that makes the contrasted codes binary),
   likewise for ``v_i``; ``Lc = CE(u logits, 0) + CE(v logits, 0)`` (``NCECriterion.py:9-11``,
   ``UCCH.py:156-159``). Then ``M_i <- normalise(mu M_i + (1 - mu) normalise((u_i + v_i) / 2))``
   (``NCEAverage.py:81-88``). During the warm-up epochs (``epoch < warmup_epoch``, ``UCCH.py:156``,
   ``NCEAverage.py:36``) the memory is not read: item i is contrasted with the signs of the
   batch's own ``(u + v) / 2``, itself as the positive (``:46-50``), and the update uses ``mu = 0``.
   The memory starts as ``normalise(sign(randn * 2s - s))``, ``s = 1 / sqrt(bits / 3)``
   (``NCEAverage.py:18-20``): ``sign(z - 1/2)`` for standard normal ``z``, i.e. each entry is ``+1``
   with probability ``P(z > 1/2) = 0.3085`` (``-1`` otherwise), not balanced signs.
2. Cross-modal ranking loss ``Lr`` on ``s = u v^T`` (``src/utils.py:59-70``): negatives scoring
   below ``s_ii - margin`` are shifted down by ``shift``; ``Lr = mean_i(-s_ii + logsumexp_j cost_ij
   + margin)`` over rows plus the same over columns (the column mask compares with ``s_jj``).
3. ``loss = alpha Lc + (1 - alpha) Lr`` (``UCCH.py:161``); Adam, gradient norm clipped to 1
   (``UCCH.py:106-107,163-166``); batches reshuffled every epoch, the last partial one dropped
   (``UCCH.py:57-64``).

Defaults, from the README's feature command (README.md:16: ``--alpha 0.7 --num_hiden_layers 3 2
--margin 0.2 --max_epochs 20 --train_batch_size 256 --shift 0.1 --lr 0.0001 --optimizer Adam``) and
otherwise ``utils/config.py``: alpha 0.7 (README.md:16; config.py:27 has 0.9), temperature T 0.9
(config.py:30), momentum 0.4 (config.py:28), K 4096 (config.py:29), margin 0.2 (README.md:16,
config.py:32), shift 0.1 (README.md:16; config.py:31 has 1), lr 1e-4 (README.md:16, config.py:15),
weight decay 1e-6 (config.py:16), batch 256 (README.md:16, config.py:17), 20 epochs (README.md:16;
config.py:19 has 100; the paper, sec. 4.3.4, sets 20 for all datasets), warm-up 1 epoch
(config.py:33), 3 image and 2 text layers (README.md:16, config.py:23), width 8192
(``ImageNet.py:7``, ``TextNet.py:7``: ``mid_num1 = mid_num2 = 1024 * 8``), gradient clip 1
(``UCCH.py:165``). The paper (sec. 4.2.2) fixes ``mu``, ``T``, ``K``, margin and lr for all
experiments and picks the loss weight per dataset on a labelled validation set without printing the
values; the repository gives only the MIRFlickr command (and no Wiki setting), so no
``dataset_defaults`` are registered and every dataset uses it.

Departures, and why:

- Model selection: the official loop scores the codes on ``retrieval[0:2000]`` with labels after
  every epoch and keeps the best epoch (``UCCH.py:198-240``); a label-free teacher cannot, so the
  last epoch's heads are used (the README's log, README.md:24-51, moves by about 0.002 over the last
  seven epochs).
- Learning-rate schedule: ``--ls linear`` (config.py:24) gives ``MultiStepLR`` at epochs 30, 60,
  90, 120 (``UCCH.py:108-111``), which never fires within 20 epochs; it is omitted (same rates).
- The multi-view lists of the official loop (``UCCH.py:152-160``) hold one view on features
  (``cmdataset.py:110-112``), so one view per modality here.
- Implementation, same values: the ``K + 1`` scores of an item are read from ``u sign(M)^T``
  (one ``(m, n)`` product, gathered at the drawn columns) when ``n <= (K + 1) bits``, instead of the
  official gather of ``(m, K + 1, bits)`` memory rows and batched product (used here when ``n`` is
  larger): on Wiki 29 ms instead of 373 ms of CPU per minibatch for both modalities, forward and
  backward (the former shared draws: 13 ms); the warm-up contrast is the cross-entropy of the
  ``m x m`` in-batch logits with the diagonal as target (the official puts the diagonal first);
  cross-entropy via ``log_softmax`` instead of ``-log(softmax)`` (``NCECriterion.py:10-11``);
  Adam's fused kernel (the same update in one pass over each parameter instead of about ten:
  0.07 s instead of 0.58 s of CPU per minibatch). In lock-step with the official training code
  (same initial weights, memory, minibatches and draws; Wiki, 32 bits) the parameters agree to
  1.2e-6 after 3 epochs at width 256 with identical codes; at width 8192 after 2 epochs they differ
  by 7e-4 of the distance they moved (likely rounding, which Adam's normalised step turns into
  whole steps for near-zero gradient entries; the same with the plain Adam) and 9 of the 139072 code
  bits of the training pairs differ (``benchmarks/fidelity.md``).

Checked against the official code on Wiki (32 bits, seeds 0-2, ``benchmarks/fidelity.md``): mAP
i2t / t2i 0.2267 +- 0.0069 / 0.1821 +- 0.0057 here, 0.2279 +- 0.0074 / 0.1843 +- 0.0020 official.
(Until this commit the heads were 1024 wide, the K negatives were shared by a minibatch and the
initial memory had balanced signs: 0.2179 +- 0.0071 / 0.1796 +- 0.0040 in the committed wiki
leaderboard, same split and seeds.)

Cost: on Wiki (2173 pairs, 8 minibatches of 256 per epoch) a 32-bit ``cmhbench run`` takes
253-276 s of CPU on one core (loading and encoding included), about 1.6 s per minibatch and 13 s
per epoch, nearly all of it in the three matrix products of the ``8192 x 8192`` layer (about 105
GFLOP per minibatch, fp32, at about 75 GFLOP/s); the official code takes 389-406 s of CPU on the
same features. On the shared 2-core machine, beside other jobs, the fit's wall time was 629-703 s
(official 823-1142 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable


from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.lazy import F, no_grad, torch, torch_class
from cmhbench.registry import MethodSpec
from cmhbench.training import encode_in_batches, l2_normalize, minibatches, mlp

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class UCCHConfig:
    """UCCH hyperparameters: the official README command (README.md:16) and ``utils/config.py``."""

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
    hidden: int = hp(8192, "hidden width of both heads", ge=1)
    clip_norm: float = hp(1.0, "gradient-norm clip", gt=0)


def memory_scores(x: Tensor, signs: Tensor, cols: Tensor) -> Tensor:
    """``(m, c)`` dot products ``<signs[cols[i, k]], x_i>`` of ``x`` ``(m, bits)`` with the rows
    ``cols`` ``(m, c)`` (int64) of ``signs`` ``(n, bits)``. Reads them off the ``(m, n)`` product
    when that is no larger than the ``(m, c, bits)`` gathered rows, else gathers the rows."""
    if signs.shape[0] <= cols.shape[1] * signs.shape[1]:
        return (x @ signs.T).gather(1, cols)
    return torch.bmm(signs[cols], x.unsqueeze(2)).squeeze(2)


def contrastive_logits(x: Tensor, memory: Tensor, cols: Tensor, temperature: float) -> Tensor:
    """``(m, c)`` logits ``<sign(memory[cols[i, k]]), x_i> / (T sqrt(bits))`` of ``x`` ``(m, bits)``
    against the rows ``cols`` ``(m, c)`` of the ``(n, bits)`` memory (column 0: the positive)."""
    return memory_scores(x, torch.sign(memory), cols) / (temperature * math.sqrt(x.shape[1]))


def warmup_logits(x: Tensor, joint: Tensor, temperature: float) -> Tensor:
    """``(m, m)`` in-batch logits ``<sign(joint_j), x_i> / (T sqrt(bits))``; the positive of row i
    is column i (``joint`` ``(m, bits)`` is the batch's ``(u + v) / 2``, no gradient)."""
    return x @ torch.sign(joint.detach()).T / (temperature * math.sqrt(x.shape[1]))


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


def initial_memory(n: int, bits: int, generator: torch.Generator) -> Tensor:
    """``(n, bits)`` official initial memory ``normalise(sign(randn * 2s - s))``, ``s = 1/sqrt(bits/3)``:
    entries ``+-1/sqrt(bits)``, positive with probability 0.3085 (``NCEAverage.py:18-20``)."""
    stdv = 1.0 / math.sqrt(bits / 3.0)
    rnd = torch.randn(n, bits, generator=generator) * (2 * stdv) - stdv
    return l2_normalize(torch.sign(rnd))


@torch_class
def _Head():
    """The ``nn.Module`` class ``_Head``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class _Head(torch.nn.Module):
        """``layers`` linear layers (ReLU between) -> tanh -> L2 normalisation: ``(n, d)`` -> ``(n, bits)``."""

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

    def contrastive_loss(self, u: Tensor, v: Tensor, idx: Tensor, warmup: bool, gen: torch.Generator) -> Tensor:
        """``Lc`` of one batch (``u``, ``v`` ``(m, bits)``, training indices ``idx`` ``(m,)``); updates the memory."""
        c = self.config
        m = u.shape[0]
        if warmup:
            joint = (u + v) / 2.0
            logits = [warmup_logits(x, joint, c.temperature) for x in (u, v)]
            target = torch.arange(m, device=u.device)
            mu = 0.0
        else:
            draw = torch.randint(0, self.memory.shape[0], (m, c.negatives), generator=gen).to(u.device)
            cols = torch.cat([idx[:, None], draw], dim=1)
            logits = [contrastive_logits(x, self.memory, cols, c.temperature) for x in (u, v)]
            target = torch.zeros(m, dtype=torch.long, device=u.device)
            mu = c.momentum
        loss = F.cross_entropy(logits[0], target) + F.cross_entropy(logits[1], target)
        self.update_memory(u, v, idx, mu)
        return loss

    @no_grad
    def update_memory(self, u: Tensor, v: Tensor, idx: Tensor, mu: float) -> None:
        """``M_idx <- normalise(mu M_idx + (1 - mu) normalise((u + v) / 2))`` (``u``, ``v`` ``(m, bits)``)."""
        new = l2_normalize((u + v) / 2.0)
        self.memory[idx] = l2_normalize(mu * self.memory[idx] + (1.0 - mu) * new)

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Train both heads for ``epochs`` passes of Adam on ``alpha Lc + (1 - alpha) Lr``."""
        c = self.config
        dev = self.ctx.device
        self.heads = {
            Modality.IMAGE: _Head(train.image.shape[1], c.image_layers, c.hidden, bits).to(dev),
            Modality.TEXT: _Head(train.text.shape[1], c.text_layers, c.hidden, bits).to(dev),
        }
        params = [p for h in self.heads.values() for p in h.parameters()]
        opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay, fused=True)
        n = len(train)
        self.memory = initial_memory(n, bits, self.ctx.generator(1)).to(dev)
        gen, neg_gen = self.ctx.generator(), self.ctx.generator(2)
        for epoch in self.ctx.progress.track(range(c.epochs), c.epochs, f"ucch {bits} bits"):
            for idx in minibatches(n, min(c.batch_size, n), gen, drop_last=True):
                idx = idx.to(dev)
                u = self.heads[Modality.IMAGE](train.image[idx])
                v = self.heads[Modality.TEXT](train.text[idx])
                lc = self.contrastive_loss(u, v, idx, epoch < c.warmup_epochs, neg_gen)
                loss = c.alpha * lc + (1.0 - c.alpha) * ranking_loss(u, v, c.margin, c.shift)
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

"""Teacher ``ugach``: Unsupervised Generative Adversarial Cross-modal Hashing.

Paper: Jian Zhang, Yuxin Peng, Mingkuan Yuan. "Unsupervised Generative Adversarial Cross-Modal
Hashing." AAAI 2018. Official code (TensorFlow 1, Python 2):
https://github.com/PKU-ICST-MIPL/UGACH_AAAI2018 (``train_32.py`` and siblings per bit length,
``dis_model_nn.py``, ``gen_model_nn.py``, ``utils.py``). UGACH is the teacher of UKD (CVPR 2020).

As in the official code:

- Correlation graph: for a query of one modality, the items of the other modality that are its
  k nearest neighbours are its "manifold pairs" (positives); everything else is a candidate.
  The official code loads these lists precomputed (``KNN_cross5.npy``, k = 5); here they are the
  union of the k nearest neighbours of the paired item in the image space and in the text space
  (Euclidean, the pair itself included), the paper's kNN correlation graph over both modalities.
- Generator and discriminator are alike: per modality ``Linear -> tanh -> Linear -> sigmoid``,
  weights from a normal truncated at two standard deviations (std 0.1), biases 0.
  Score of a query q and candidate c: ``-||sig(q) - sig(c)||^2``.
- Per epoch (30): the generator draws, for each training query and both directions (i2t, t2i),
  ``SELECTNUM = 2`` negatives from ``n / SAMPLERATIO`` (= n / 50) random candidates with
  probability ``softmax(score)``, rejecting positives, and pairs each with a random positive.
  The discriminator is trained on these triplets with the hinge ``max(0, beta + d(q, pos) -
  d(q, neg))`` on squared distances of sigmoid outputs, ``beta = bits / 8``. Then the generator
  is trained for 2 passes by policy gradient: draw 2 candidates from its softmax, reward
  ``sigmoid(max(0, beta + d_D(q, pos) - d_D(q, neg)))`` from the discriminator, loss
  ``-mean(log p(neg) * reward)``.
- Plain SGD, discriminator lr 0.001, generator lr 0.01, both decayed x0.9 every 20,000 steps,
  L2 penalty 0.01 * sum ||w||^2 / 2 on all weights and biases.
- ``encode`` returns the discriminator's sigmoid hash outputs (what UKD ranks its neighbours by),
  shifted by -0.5 so that ``sign`` gives the official code ``round(sigmoid)``; the shift leaves
  Euclidean distances unchanged.

Departures, and why:

- Feature-based with hidden width 1024 (official 8192 on 4096-d VGG fc7 features): CPU time;
  ``--set teacher.hidden=8192`` restores it.
- Minibatches of 64 queries / triplets per SGD step (official: one triplet or one query per step,
  thousands of Python-level steps per epoch); the step counts per epoch shrink by the batch size,
  so the learning rates are multiplied by ``lr_batch_scale`` = 10 to keep the amount of learning
  per epoch comparable (a fixed choice, not tuned on any query set). The decay steps (20,000
  single steps) are counted in minibatches times the batch size.
- Candidates are drawn with replacement (official: a shuffled list without repeats); with
  n / 50 of n items, repeats are rare.
- CPU time: about 3 minutes for 32 bits on Wiki with the defaults on the shared 2-core machine,
  well over the ~60 s target; ``--set teacher.epochs=10`` or ``teacher.hidden=512`` shortens it.
- The official code loads a pre-trained discriminator (``dis_pretrain_nn_*.model``) whose
  training script is not released. Here the discriminator is pre-trained for
  ``pretrain_epochs`` = 10 with the same hinge on uniformly drawn negatives.
- Generator loss: the official script feeds only the two drawn negatives to the softmax, so
  ``log p`` is normalised over those two; here ``log p`` is the log-probability of the draw under
  the softmax over all candidates it was drawn from, the REINFORCE gradient the paper describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable


from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.lazy import nn, torch, torch_class
from cmhbench.registry import MethodSpec
from cmhbench.training import encode_in_batches, knn_mask, step

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class UGACHConfig:
    """UGACH hyperparameters (official ``train_*.py`` settings unless noted)."""

    k: int = hp(5, "neighbours per modality in the correlation graph (official KNN_cross5)", ge=1)
    epochs: int = hp(30, "adversarial epochs (WHOLE_EPOCH)", ge=1)
    g_epochs: int = hp(2, "generator passes per epoch (G_EPOCH)", ge=1)
    pretrain_epochs: int = hp(10, "discriminator pre-training passes on uniform negatives", ge=0)
    select: int = hp(2, "triplets per query and direction (SELECTNUM)", ge=1)
    sample_ratio: int = hp(50, "candidates per query = n / sample_ratio (SAMPLERATIO)", ge=1)
    d_lr: float = hp(0.001, "discriminator SGD learning rate (per single-triplet step)", gt=0)
    g_lr: float = hp(0.01, "generator SGD learning rate (per single-query step)", gt=0)
    lr_batch_scale: float = hp(10.0, "learning-rate factor for minibatch steps instead of single steps", gt=0)
    weight_decay: float = hp(0.01, "L2 penalty weight on all parameters", ge=0)
    margin_per_bit: float = hp(0.125, "hinge margin beta = margin_per_bit * bits (official bits / 8)", gt=0)
    batch_size: int = hp(64, "triplets / queries per SGD step (official 1)", ge=1)
    hidden: int = hp(1024, "hidden width of all heads (official 8192)", ge=1)


@torch_class
def _Net():
    """The ``nn.Module`` class ``_Net``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class _Net(nn.Module):
        """Image and text heads ``Linear -> tanh -> Linear -> sigmoid`` with truncated-normal weights."""

        def __init__(self, d_image: int, d_text: int, hidden: int, bits: int, gen: torch.Generator) -> None:
            super().__init__()
            self.image = nn.Sequential(nn.Linear(d_image, hidden), nn.Tanh(), nn.Linear(hidden, bits))
            self.text = nn.Sequential(nn.Linear(d_text, hidden), nn.Tanh(), nn.Linear(hidden, bits))
            for layer in (*self.image, *self.text):
                if isinstance(layer, nn.Linear):
                    nn.init.trunc_normal_(layer.weight, 0.0, 0.1, -0.2, 0.2, generator=gen)
                    nn.init.zeros_(layer.bias)

        def sig(self, x: Tensor, modality: Modality) -> Tensor:
            """``(..., d)`` features -> ``(..., bits)`` sigmoid outputs."""
            return torch.sigmoid((self.image if modality is Modality.IMAGE else self.text)(x))

    return _Net


def triplet_hinge(q: Tensor, pos: Tensor, neg: Tensor, beta: float) -> Tensor:
    """``(m,)`` hinge ``max(0, beta + ||q - pos||^2 - ||q - neg||^2)`` for ``(m, bits)`` outputs."""
    return (beta + ((q - pos) ** 2).sum(-1) - ((q - neg) ** 2).sum(-1)).clamp(min=0.0)


def correlation_graph(image: Tensor, text: Tensor, k: int) -> Tensor:
    """``(n, n)`` bool manifold pairs: j is among the k nearest neighbours of i in the image or the
    text features (Euclidean, i itself included)."""
    return knn_mask(image, k) | knn_mask(text, k)


class UGACH:
    """A generator that picks hard pairs from the kNN graph and a hashing discriminator."""

    def __init__(self, config: UGACHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.dis: _Net | None = None
        self.steps = {"d": 0, "g": 0}

    def _lr(self, base: float, kind: str) -> float:
        """Learning rate after the official x0.9 per 20,000 single steps (counted in minibatch-size units)."""
        c = self.config
        return base * c.lr_batch_scale * 0.9 ** ((self.steps[kind] * c.batch_size) // 20000)

    def _step(self, opt: torch.optim.Optimizer, loss: Tensor, base: float, kind: str) -> None:
        for group in opt.param_groups:
            group["lr"] = self._lr(base, kind)
        step([opt], loss)
        self.steps[kind] += 1

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Pre-train the discriminator, then alternate generator sampling, D and G training."""
        c = self.config
        dev = self.ctx.device
        n = len(train)
        di, dt = train.image.shape[1], train.text.shape[1]
        self.dis = _Net(di, dt, c.hidden, bits, self.ctx.generator(1)).to(dev)
        gen_net = _Net(di, dt, c.hidden, bits, self.ctx.generator(2)).to(dev)
        d_opt = torch.optim.SGD(self.dis.parameters(), lr=c.d_lr, weight_decay=c.weight_decay)
        g_opt = torch.optim.SGD(gen_net.parameters(), lr=c.g_lr, weight_decay=c.weight_decay)
        beta = c.margin_per_bit * bits
        pos_mask = correlation_graph(train.image, train.text, c.k).to(dev)
        rng = self.ctx.generator()
        n_cand = max(c.select, n // c.sample_ratio)
        feats = {Modality.IMAGE: train.image, Modality.TEXT: train.text}
        directions = ((Modality.IMAGE, Modality.TEXT), (Modality.TEXT, Modality.IMAGE))

        counts = pos_mask.sum(1)
        width = int(counts.max())
        pos_lists = torch.sort(pos_mask.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :width]
        invalid = torch.arange(width, device=dev)[None, :] >= counts[:, None]

        def positives() -> Tensor:
            """``(n, select)`` random manifold partners of each query (without replacement where possible)."""
            if width < c.select:  # too few partners: draw with replacement
                slot = (torch.rand(n, c.select, generator=rng).to(dev) * counts[:, None]).long()
            else:
                key = torch.rand(n, width, generator=rng).to(dev).masked_fill(invalid, 2.0)
                slot = torch.argsort(key, dim=1)[:, : c.select]
                slot = torch.where(invalid.gather(1, slot), torch.zeros_like(slot), slot)
            return pos_lists.gather(1, slot)

        def candidates() -> Tensor:
            """``(n, n_cand)`` random candidate indices per query (drawn with replacement)."""
            return torch.randint(0, n, (n, n_cand), generator=rng).to(dev)

        def train_d(qm: Modality, cm: Modality, q: Tensor, pos: Tensor, neg: Tensor) -> None:
            """One pass of D over triplets (query indices in ``qm``, pos/neg indices in ``cm``)."""
            perm = torch.randperm(q.shape[0], generator=rng).to(dev)
            for s in range(0, q.shape[0], c.batch_size):
                b = perm[s : s + c.batch_size]
                sq = self.dis.sig(feats[qm][q[b]], qm)
                loss = triplet_hinge(sq, self.dis.sig(feats[cm][pos[b]], cm), self.dis.sig(feats[cm][neg[b]], cm), beta)
                self._step(d_opt, loss.mean(), c.d_lr, "d")

        queries = torch.arange(n, device=dev)
        for _ in range(c.pretrain_epochs):
            for qm, cm in directions:
                pos = positives()
                neg = torch.randint(0, n, (n, c.select), generator=rng).to(dev)
                train_d(qm, cm, queries.repeat_interleave(c.select), pos.reshape(-1), neg.reshape(-1))

        for _ in self.ctx.progress.track(range(c.epochs), c.epochs, f"ugach {bits} bits"):
            for qm, cm in directions:  # generator picks negatives for D
                pos, cand = positives(), candidates()
                with torch.no_grad():
                    score = -((gen_net.sig(feats[qm], qm)[:, None, :] - gen_net.sig(feats[cm][cand], cm)) ** 2).sum(-1)
                    prob = torch.softmax(score, dim=1) * (~pos_mask.gather(1, cand)).float()
                    prob[prob.sum(1) == 0] = 1.0
                    pick = torch.multinomial(prob.cpu(), c.select, replacement=True, generator=rng).to(dev)
                neg = cand.gather(1, pick)
                train_d(qm, cm, queries.repeat_interleave(c.select), pos.reshape(-1), neg.reshape(-1))
            for _ in range(c.g_epochs):
                for qm, cm in directions:
                    pos, cand = positives(), candidates()
                    perm = torch.randperm(n, generator=rng).to(dev)
                    for s in range(0, n, c.batch_size):
                        b = perm[s : s + c.batch_size]
                        sq = gen_net.sig(feats[qm][b], qm)
                        score = -((sq[:, None, :] - gen_net.sig(feats[cm][cand[b]], cm)) ** 2).sum(-1)
                        logp = torch.log_softmax(score, dim=1)
                        pick = torch.multinomial(logp.detach().exp().cpu(), c.select, replacement=True, generator=rng).to(dev)
                        neg = cand[b].gather(1, pick)
                        with torch.no_grad():
                            dq = self.dis.sig(feats[qm][b], qm)[:, None, :]
                            reward = torch.sigmoid(
                                triplet_hinge(dq, self.dis.sig(feats[cm][pos[b]], cm), self.dis.sig(feats[cm][neg], cm), beta)
                            )
                        loss = -(logp.gather(1, pick) * reward).mean()
                        self._step(g_opt, loss, c.g_lr, "g")

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` discriminator sigmoid outputs minus 0.5 (sign gives codes)."""
        m = Modality(modality)
        head = self.dis.image if m is Modality.IMAGE else self.dis.text
        return torch.sigmoid(encode_in_batches(head, x)) - 0.5


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``ugach`` teacher."""
    register(
        MethodSpec(
            name="ugach",
            kind="teacher",
            build=UGACH,
            config=UGACHConfig,
            paper="Zhang, Peng, Yuan. Unsupervised Generative Adversarial Cross-Modal Hashing. AAAI 2018.",
            code="https://github.com/PKU-ICST-MIPL/UGACH_AAAI2018",
            summary="policy-gradient generator picks hard pairs off a kNN correlation graph; a hashing "
            "discriminator learns a triplet hinge on manifold pairs",
        )
    )

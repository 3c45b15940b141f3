"""Teacher ``dgcpn``: Deep Graph-neighbor Coherence Preserving Network.

Paper: Jun Yu, Hao Zhou, Yibing Zhan, Dacheng Tao. "Deep Graph-neighbor Coherence Preserving
Network for Unsupervised Cross-modal Hashing." AAAI 2021 (arXiv 2012.13538).
Official code: https://github.com/Atmegal/DGCPN, read whole at HEAD, commit 9f62c56 (2020-12-09;
files ``train.py``, ``train_div.py``, ``models.py``, ``load_data.py``, ``metric.py``, README; the
repository has no settings file and no run scripts). ``train.py`` is the published entry point: it
is the only script (argparse, ``__main__``) and runs ``train_div.Session`` (``train.py:4,7``), so
``train_div.py`` is the training module of that script, not an alternative to it. Lines below are
at that commit.

The official method is feature-based: it reads pre-extracted VGG19 image features
(``load_data.py:55,111``) and bag-of-words tags, so its networks are kept whole at official width
(the DESIGN.md rule for feature-based methods):

- image: ``Linear(d_image, 4096) -> ReLU -> Dropout(0.5) -> Linear(4096, bits) -> tanh``
  (``models.py:12-16,24-27``; ``d_image`` is 4096 there), default initialisation;
- text: ``Linear(d_text, 4096) -> ReLU -> Dropout(0.5) -> Linear(4096, bits) -> tanh`` with the
  text hash layer's weight drawn from N(0, 0.3) (``models.py:38-50``, init ``:44``);
- the ``tanh(alpha h)`` scale stays ``alpha = 1`` (``models.py:15,41``; the ``set_alpha`` calls
  are commented out, ``train_div.py:138-139``). Codes are ``sign(tanh(h))`` of the nets in eval
  mode (``metric.py:9-47``).

Similarity, once over all ``n`` training pairs (``train_div.py:46-49,78-103``):

1. Joint affinity ``A = a1 cos(X_T, X_T) + (1 - a1) cos(X_I, X_I)``, ``a1 = 0.01`` is the *text*
   weight (image 0.99) (``train_div.py:81-88``; ``train.py:52``).
2. kNN graph: each row of ``A`` sorted ascending (``train_div.py:91``); its ``knn_number``
   smallest entries are set to 0 (``:92-93``) and so is its largest (``:94-95``; the item itself,
   cosine 1), leaving ``n - knn_number - 1`` neighbours with their affinities; rows are divided by
   their sums (``:96``): ``P``. ``knn_number = 3000`` (``train.py:61``) on 5000 training pairs,
   i.e. 1999 neighbours; ``train.py:55-60`` says code and paper count the other way
   (K_paper = n - knn_number).
3. Graph-neighbour coherence ``scale * P P^T``, ``scale = 4000`` (``train_div.py:97-98``;
   ``train.py:63``).
4. Target ``S = 2 [(1 - a2) A + a2 scale P P^T] - 1``, ``a2 = 0.3`` (``train_div.py:100-101``;
   ``train.py:53``). ``S`` is not clipped: above 1 for close pairs.

Loss of one minibatch, ``B_X = normalize(code_X)`` row-wise, ``(1 - I)`` masking the diagonal
(``train_div.py:105-131``):
``mse(diag(B_I B_T^T), K)`` with ``K = 1.5`` (``:113-115``; ``train.py:50``)
``+ dw [mse((1-I) B_T B_T^T, (1-I) S) + mse((1-I) B_I B_T^T, (1-I) S) + mse((1-I) B_I B_I^T, (1-I) S)]``
(``:117-119``; the intra-modal terms weigh as much as the inter-modal one)
``+ cw [mse(B_I B_T^T, B_I B_I^T) + mse(B_I B_T^T, B_T B_T^T) + mse(B_I B_I^T, B_T B_T^T) + mse(B_I B_T^T, B_T B_I^T)]``
(``:121-124``), ``dw = cw = 1`` (``:126-127``; ``train.py:47-48``). ``mse`` is the mean over all
``m^2`` entries, masked ones included.

Half-real half-binary optimisation: three sequential optimiser steps per minibatch
(``train_div.py:149-172``; the paper's Algorithm 1, lines 6-8): (1) both nets on
``L(code_I, code_T)``; (2) a fresh forward pass of both nets (new dropout masks), the image net
on ``L(code_I, sign(code_T))``; (3) the text net on ``L(sign(code_I), code_T)`` with the image
codes of that same forward pass (taken before step 2's update). Two SGD optimisers, one per net,
lr 0.005, momentum 0.9, weight decay 5e-4 (``train_div.py:61-65``; ``train.py:39-41``), batch 32
(``train.py:38``), reshuffled every epoch, the last partial batch kept
(``load_data.py:102-103,162-163``), at most 100 epochs (``train.py:37``).

Defaults are those official values; ``knn_number`` and ``scale`` are carried to other training
sizes by a rule (next paragraph). The repository holds one set of values, the argparse defaults,
for every dataset (``train.py:34-64``); it has no per-dataset settings (for Wiki only the remark
at ``train.py:59``, which counts 2100 training pairs, no values), so ``dataset_defaults`` is empty.

Training-set size rule for ``knn_number`` and ``scale``. Both official values are counts tied to
the 5000 training pairs of the official MIRFlickr/NUS-WIDE setting (``train.py:58``), and the
official ``scale`` does not carry over: with 4000 on Wiki's 2173 pairs 86% of the targets are
positive (median 0.80) and the codes collapse. What the term is: a row of ``P`` spreads mass 1
over ``M = n - knn_number - 1`` neighbours, so ``(P P^T)_ij`` is about ``|N_i & N_j| / M^2``:
about ``1/n`` for unrelated items (neighbour sets overlapping by chance, ``M^2/n`` shared) and up
to ``1/M`` for items with the same neighbours. Keeping ``M/n`` and ``scale/n`` fixed therefore
keeps ``scale P P^T`` in the same range at any ``n``. The rule: ``knn_number = round(0.6 n)`` and
``scale = 0.8 n``, which are 3000 and 4000 at ``n = 5000`` (the official values exactly).
Measured on Wiki's features: the off-diagonal 1%/50%/99% quantiles of ``scale P P^T`` are
0.26/0.92/1.81 at ``n = 2173`` and 0.27/0.92/1.80 on its first 1000 pairs under the rule; with
``scale = 4000`` at ``n = 2173`` they are 0.59/2.11/4.17 (86% of the targets positive instead of
57%). Trained on Wiki at 32 bits, ``scale = 4000`` gives every item the same code (mAP 0.111 both
directions, seeds 0 and 1); the rule gives 0.218 / 0.180 i2t / t2i (mean of seeds 0-2) with
hundreds of distinct codes. A positive ``knn_number`` or ``scale`` is used as given
(``knn_fraction = 0`` gives ``knn_number = 0``). On a protocol with 5000 training pairs
(cmhbench's ``djsrh``) the defaults are the official values exactly.

Fidelity: on Wiki features the official code (adapted only where it cannot run here) and this
plugin agree within the benchmark's tolerance, and started from the same weights with the same
minibatches and dropout draws they produce the same parameters to float rounding
(``benchmarks/fidelity.md``, section DGCPN).

Model selection: the official run evaluates labelled validation MAP@All every epoch, stops after
11 epochs without improvement and restores the best epoch (``train.py:15-30``;
``train_div.py:197-223``). Labels are never used in ``fit`` here, so the last of the 100 epochs is
kept.

Departures, and why:

- Model selection: last epoch instead of the labelled early stopping above (cmhbench rule).
- The kNN sort breaks ties by index (stable sort); the official ``sort()`` leaves tie order to the
  device. Only rows with exactly equal affinities (duplicate items) can differ.
- A row of ``P`` whose kept affinities sum to 0 stays 0; the official division gives NaN there
  (only with sparse features whose cosines to all kept neighbours are 0).
- ``P`` is built in row chunks and ``S`` one minibatch block at a time (``P[idx] P[idx]^T``), the
  same numbers as the official full ``n x n`` matrices up to float rounding, with one ``n x n``
  matrix in memory instead of several: ``P`` takes ``4 n^2`` bytes (100 MB at 5000 pairs, 1.3 GB
  at 18015). Above :data:`~cmhbench.interfaces.DENSE_CACHE_BYTES` (2 GiB, n > 23,170; the official
  code would need 136 GB for ``P`` alone at NUS-WIDE's 184,477 database pairs, which UCCH's
  protocol trains on) ``P`` is not kept: :class:`NeighbourRows` keeps 21 bytes a row and
  recomputes the rows of each minibatch (equal to the kept ``P``'s up to float rounding). Memory
  is then linear in ``n``, time still quadratic: one ``(32, n)`` affinity per minibatch, about
  ``2 n^2 (d_image + d_text)`` FLOP per epoch and once more before the first.
- The official ``loss_cal`` draws ``torch.rand(m)`` and overwrites it with ones (``train_div.py:114``);
  the draw only advances the RNG (shifting later dropout masks) and is not reproduced.
- The official loader feeds the training log a label-based mAP of ``S`` each batch
  (``train_div.py:176``); it only prints and is not computed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from cmhbench import interfaces
from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.lazy import F, nn, torch
from cmhbench.registry import MethodSpec
from cmhbench.neighbours import among_k_smallest, kth_smallest
from cmhbench.training import encode_in_batches, l2_normalize, minibatches, sgd_per_head, step

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class DGCPNConfig:
    """DGCPN hyperparameters: the official defaults of ``train.py`` at 9f62c56 (see the module docstring)."""

    text_weight: float = hp(0.01, "a1: weight of the text cosine in the joint affinity (image: 1 - a1)", ge=0, le=1)
    coherence_weight: float = hp(0.3, "a2: weight of the graph-neighbour coherence in the target", ge=0, le=1)
    knn_number: int = hp(0, "entries zeroed per affinity row, the smallest ones (the largest is zeroed too); "
                         "0: round(knn_fraction * n) (official 3000 at n = 5000)", ge=0)
    knn_fraction: float = hp(0.6, "knn_number / n when knn_number = 0 (official 3000 / 5000)", ge=0, lt=1)
    scale: float = hp(0.0, "scale of the coherence P P^T; 0: scale_per_pair * n (official 4000 at n = 5000)", ge=0)
    scale_per_pair: float = hp(0.8, "scale / n when scale = 0 (official 4000 / 5000)", gt=0)
    pair_target: float = hp(1.5, "K: target of the paired image-text code cosine", gt=0)
    dis_weight: float = hp(1.0, "dw: weight of the three similarity-preserving terms", ge=0)
    cons_weight: float = hp(1.0, "cw: weight of the intra/inter-modality consistency terms", ge=0)
    lr: float = hp(0.005, "SGD learning rate of both nets", gt=0)
    momentum: float = hp(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = hp(5e-4, "SGD weight decay", ge=0)
    batch_size: int = hp(32, "pairs per minibatch (last partial batch kept)", ge=1)
    epochs: int = hp(100, "passes over the training pairs (the last epoch is kept)", ge=1)
    hidden: int = hp(4096, "hidden width of both nets", ge=1)
    dropout: float = hp(0.5, "dropout before both hash layers", ge=0, lt=1)
    text_init_std: float = hp(0.3, "std of the N(0, std) initial weights of the text hash layer", gt=0)


def graph_sizes(config: DGCPNConfig, n: int) -> tuple[int, float]:
    """``(knn_number, scale)`` for ``n`` training pairs: the configured values, or the size rule
    ``round(knn_fraction n)`` and ``scale_per_pair n`` where they are 0. Raises ``ValueError``
    when fewer than one neighbour would be left."""
    knn = config.knn_number or round(config.knn_fraction * n)
    scale = config.scale or config.scale_per_pair * n
    if n - knn - 1 < 1:
        raise ValueError(f"dgcpn: knn_number {knn} leaves no neighbour among {n} training pairs (needs <= {n - 2})")
    return knn, scale


def joint_affinity(image: Tensor, text: Tensor, text_weight: float, image_cols: Tensor | None = None,
                   text_cols: Tensor | None = None) -> Tensor:
    """``a1 cos(T, T') + (1 - a1) cos(I, I')`` for unit rows ``image`` ``(m, d_i)`` and ``text``
    ``(m, d_t)`` against ``image_cols``/``text_cols`` (default: the same rows)."""
    image_cols = image if image_cols is None else image_cols
    text_cols = text if text_cols is None else text_cols
    return text_weight * (text @ text_cols.T) + (1.0 - text_weight) * (image @ image_cols.T)


def neighbour_distribution(image: Tensor, text: Tensor, text_weight: float, knn_number: int,
                           chunk_elements: int = 1 << 24) -> Tensor:
    """``(n, n)`` row-stochastic ``P`` of the kNN graph of the joint affinity of ``(n, d)`` features:
    per row the ``knn_number`` smallest affinities and the largest one are zeroed, the rest divided
    by their sum. Built in row chunks of about ``chunk_elements`` entries."""
    image, text = l2_normalize(image), l2_normalize(text)
    n = image.shape[0]
    p = torch.empty(n, n, dtype=image.dtype, device=image.device)
    rows = max(1, chunk_elements // max(n, 1))
    for start in range(0, n, rows):
        a = joint_affinity(image[start : start + rows], text[start : start + rows], text_weight, image, text)
        order = torch.sort(a, dim=1, stable=True).indices
        a.scatter_(1, order[:, :knn_number], 0.0)
        a.scatter_(1, order[:, -1:], 0.0)
        total = a.sum(1, keepdim=True)
        p[start : start + rows] = torch.where(total != 0, a / torch.where(total != 0, total, 1.0), 0.0)
    return p


GRAPH_TILE = 32  # rows of every affinity product behind on-demand rows of P (one minibatch of 32)


class NeighbourRows:
    """Rows of DGCPN's ``P`` (:func:`neighbour_distribution`) computed on demand, for training sets
    whose ``(n, n)`` ``P`` is not kept (above :data:`~cmhbench.interfaces.DENSE_CACHE_BYTES`, 2 GiB:
    n > 23,170; 136 GB at n = 184,477).

    One pass over the rows keeps, per row, what decides its kept set and its scale: the
    ``knn_number``-th smallest affinity and its place in the stable ascending order (the last zeroed
    entry), the place of the largest (zeroed too) and the sum of the kept affinities; 21 bytes a
    row. :meth:`rows` recomputes affinity rows and applies them. The features are not copied: an
    affinity row is ``a1 (T_i . T_j) / (|T_i| |T_j|) + (1 - a1) (I_i . I_j) / (|I_i| |I_j|)`` from
    the raw ``(n, d)`` matrices and the inverse norms.

    Every affinity row, in the pass and in :meth:`rows`, comes from one product of a whole
    :data:`GRAPH_TILE`-row tile against all ``n`` rows (the last tile padded with its first row), so
    its rounding does not depend on which rows share the tile: the kept sets and sums of the pass
    are exactly those of the rows served later. The rows equal :func:`neighbour_distribution`'s up
    to float rounding (its chunks are products of another shape; ``tests/test_dgcpn.py``). Each
    request costs a ``(m, n)`` affinity, ``2 m n (d_image + d_text)`` FLOP (60 GFLOP for a minibatch
    of 32 at n = 184,477 and 5,096 feature dimensions), and the pass costs as much as one epoch's
    requests."""

    def __init__(self, image: Tensor, text: Tensor, text_weight: float, knn_number: int) -> None:
        """``image`` ``(n, d_i)`` and ``text`` ``(n, d_t)`` training features (raw; kept by reference)."""
        self.image, self.text, self.text_weight, self.knn_number = image, text, text_weight, knn_number
        self.inv_image = 1.0 / image.norm(dim=1).clamp(min=1e-12)
        self.inv_text = 1.0 / text.norm(dim=1).clamp(min=1e-12)
        n = image.shape[0]
        self.n = n
        dev = image.device
        self.low_value = torch.empty(n, dtype=image.dtype, device=dev)
        self.low_last = torch.empty(n, dtype=torch.long, device=dev)
        self.low_tied = torch.zeros(n, dtype=torch.bool, device=dev)
        self.top = torch.empty(n, dtype=torch.long, device=dev)
        self.total = torch.empty(n, dtype=image.dtype, device=dev)
        every = torch.arange(n, device=dev)
        for start in range(0, n, GRAPH_TILE):
            rows = every[start : start + GRAPH_TILE]
            a = self._affinity(rows)
            if knn_number > 0:
                v, last, tied = kth_smallest(a, knn_number)
                self.low_value[rows], self.low_last[rows], self.low_tied[rows] = v, last, tied
            self.top[rows] = kth_smallest(a, n)[1]
            self.total[rows] = self._kept(a, rows).sum(1)

    def _affinity(self, rows: Tensor) -> Tensor:
        """``(len(rows), n)`` joint affinities of ``rows``, from whole :data:`GRAPH_TILE`-row tiles."""
        out = []
        for start in range(0, len(rows), GRAPH_TILE):
            tile = rows[start : start + GRAPH_TILE]
            m = len(tile)
            if m < GRAPH_TILE:
                tile = torch.cat([tile, tile[:1].expand(GRAPH_TILE - m)])
            ti = (self.text[tile] @ self.text.T).mul_(self.inv_text[tile, None]).mul_(self.inv_text[None, :])
            ii = (self.image[tile] @ self.image.T).mul_(self.inv_image[tile, None]).mul_(self.inv_image[None, :])
            out.append(ti.mul_(self.text_weight).add_(ii, alpha=1.0 - self.text_weight)[:m])
        return out[0] if len(out) == 1 else torch.cat(out)

    def _kept(self, a: Tensor, rows: Tensor) -> Tensor:
        """``a`` (the affinity rows of ``rows``) with each row's ``knn_number`` smallest entries and
        its largest set to 0, in place."""
        if self.knn_number > 0:
            drop = among_k_smallest(a, self.low_value[rows], self.low_last[rows], self.low_tied[rows])
        else:
            drop = torch.zeros(a.shape, dtype=torch.bool, device=a.device)
        drop[torch.arange(len(rows), device=a.device), self.top[rows]] = True
        return a.masked_fill_(drop, 0.0)

    def rows(self, rows: Tensor) -> Tensor:
        """``(len(rows), n)`` rows of ``P`` for the int64 indices ``rows`` (a row whose kept
        affinities sum to 0 stays 0)."""
        a = self._kept(self._affinity(rows), rows)
        total = self.total[rows, None]
        return torch.where(total != 0, a / torch.where(total != 0, total, 1.0), 0.0)


def coherence_target(affinity: Tensor, p_rows: Tensor, p_cols: Tensor, coherence_weight: float, scale: float) -> Tensor:
    """``2 [(1 - a2) A + a2 scale P_rows P_cols^T] - 1``: the DGCPN target of a block of pairs."""
    return 2.0 * ((1.0 - coherence_weight) * affinity + coherence_weight * scale * (p_rows @ p_cols.T)) - 1.0


def dgcpn_target(image: Tensor, text: Tensor, text_weight: float, coherence_weight: float, knn_number: int,
                 scale: float) -> Tensor:
    """``(n, n)`` DGCPN target ``S`` of ``(n, d)`` training features (``train_div.py:78-103``)."""
    p = neighbour_distribution(image, text, text_weight, knn_number)
    a = joint_affinity(l2_normalize(image), l2_normalize(text), text_weight)
    return coherence_target(a, p, p, coherence_weight, scale)


def dgcpn_loss(code_i: Tensor, code_t: Tensor, target: Tensor, pair_target: float, dis_weight: float,
               cons_weight: float) -> Tensor:
    """The official loss of one minibatch (``train_div.py:105-131``) for codes ``(m, bits)``
    (continuous, or ``sign`` constants) and the target block ``(m, m)``."""
    b_i, b_t = F.normalize(code_i), F.normalize(code_t)
    ii, tt, it = b_i @ b_i.T, b_t @ b_t.T, b_i @ b_t.T
    off = 1.0 - torch.eye(it.shape[0], dtype=it.dtype, device=it.device)
    pair = F.mse_loss(it.diagonal(), torch.full_like(it.diagonal(), pair_target))
    masked = off * target
    dis = F.mse_loss(tt * off, masked) + F.mse_loss(it * off, masked) + F.mse_loss(ii * off, masked)
    cons = F.mse_loss(it, ii) + F.mse_loss(it, tt) + F.mse_loss(ii, tt) + F.mse_loss(it, it.T)
    return pair + dis_weight * dis + cons_weight * cons


def hash_net(in_dim: int, hidden: int, bits: int, dropout: float, hash_init_std: float | None = None) -> nn.Sequential:
    """``Linear(in_dim, hidden) -> ReLU -> Dropout -> Linear(hidden, bits)`` (``models.py``); the hash
    layer's weight drawn from N(0, ``hash_init_std``) when given (the text net)."""
    net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, bits))
    if hash_init_std is not None:
        nn.init.normal_(net[3].weight, mean=0.0, std=hash_init_std)
    return net


class DGCPN:
    """The official DGCPN image and text nets, trained on the graph-neighbour-coherence target."""

    def __init__(self, config: DGCPNConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.nets: dict[Modality, torch.nn.Module] = {}
        self.optimisers: dict[Modality, torch.optim.Optimizer] = {}

    def build(self, image_dim: int, text_dim: int, bits: int) -> None:
        """The two nets (image first, as officially) and their SGD optimisers."""
        c, dev = self.config, self.ctx.device
        self.nets = {
            Modality.IMAGE: hash_net(image_dim, c.hidden, bits, c.dropout).to(dev),
            Modality.TEXT: hash_net(text_dim, c.hidden, bits, c.dropout, c.text_init_std).to(dev),
        }
        lrs = {m: c.lr for m in self.nets}
        self.optimisers = dict(zip(self.nets, sgd_per_head(self.nets, lrs, c.momentum, c.weight_decay)))

    def train_batch(self, image: Tensor, text: Tensor, target: Tensor) -> Tensor:
        """The three official optimiser steps on one minibatch (``train_div.py:149-172``); returns
        the joint loss of step 1."""
        c = self.config
        net_i, net_t = self.nets[Modality.IMAGE], self.nets[Modality.TEXT]
        opt_i, opt_t = self.optimisers[Modality.IMAGE], self.optimisers[Modality.TEXT]

        def loss(code_i: Tensor, code_t: Tensor) -> Tensor:
            return dgcpn_loss(code_i, code_t, target, c.pair_target, c.dis_weight, c.cons_weight)

        joint = loss(torch.tanh(net_i(image)), torch.tanh(net_t(text)))
        step([opt_i, opt_t], joint)
        code_i, code_t = torch.tanh(net_i(image)), torch.tanh(net_t(text))
        step([opt_i], loss(code_i, torch.sign(code_t).detach()))
        step([opt_t], loss(torch.sign(code_i).detach(), code_t))
        return joint.detach()

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Build ``P`` over the training pairs, then train both nets for ``epochs`` passes."""
        c = self.config
        n = len(train)
        knn_number, scale = graph_sizes(c, n)
        self.build(train.image.shape[1], train.text.shape[1], bits)
        with torch.no_grad():
            if interfaces.dense_is_cached(n):
                p = neighbour_distribution(train.image, train.text, c.text_weight, knn_number)
                unit_i, unit_t = l2_normalize(train.image), l2_normalize(train.text)
                p_rows, unit_rows = p.__getitem__, lambda idx: (unit_i[idx], unit_t[idx])
            else:
                p_rows = NeighbourRows(train.image, train.text, c.text_weight, knn_number).rows
                unit_rows = lambda idx: (l2_normalize(train.image[idx]), l2_normalize(train.text[idx]))  # noqa: E731
        for net in self.nets.values():
            net.train()
        gen = self.ctx.generator()
        for _ in self.ctx.progress.track(range(c.epochs), c.epochs, f"dgcpn {bits} bits"):
            for idx in minibatches(n, c.batch_size, gen):
                idx = idx.to(self.ctx.device)
                with torch.no_grad():
                    a = joint_affinity(*unit_rows(idx), c.text_weight)
                    p_batch = p_rows(idx)
                    target = coherence_target(a, p_batch, p_batch, c.coherence_weight, scale)
                self.train_batch(train.image[idx], train.text[idx], target)

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` ``tanh`` outputs of the net in eval mode (sign gives codes)."""
        return torch.tanh(encode_in_batches(self.nets[Modality(modality)], x))


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``dgcpn`` teacher."""
    register(
        MethodSpec(
            name="dgcpn",
            kind="teacher",
            build=DGCPN,
            config=DGCPNConfig,
            paper="Yu, Zhou, Zhan, Tao. Deep Graph-neighbor Coherence Preserving Network for Unsupervised "
            "Cross-modal Hashing. AAAI 2021.",
            code="https://github.com/Atmegal/DGCPN",
            summary="preserves a joint affinity blended with kNN graph-neighbour coherence; three half-real "
            "half-binary SGD steps per batch",
        )
    )

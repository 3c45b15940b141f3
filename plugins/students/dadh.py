"""Student ``dadh``: Deep Adversarial Discrete Hashing, trained on a given similarity.

Paper: Cong Bai, Chao Zeng, Qing Ma, Jinglin Zhang, Shengyong Chen. "Deep Adversarial Discrete
Hashing for Cross-Modal Retrieval." ICMR 2020.
Official code: https://github.com/Zjut-MultimediaPlus/DADH, read whole at HEAD, commit 5869b81
(2022-07-15; files ``main.py``, ``config.py``, ``models/gen_model.py``, ``models/dis_model.py``,
``models/CNN_F.py``, ``triplet_loss.py``, ``datasets/data_handler.py``, ``datasets/dataset.py``,
``utils.py``, ``run_mir.sh``, ``run_nus.sh``, README). Lines below are at that commit.

The official method is feature-based: ``GEN`` reads 4096-d CNN-F features (``cnn_f`` is commented
out, ``gen_model.py:13,97,106``; README "We extracted 4096-d features"), so its networks are kept
whole at official width (the DESIGN.md rule for feature-based methods), ``h = hidden = 8192``
(``config.py:17``):

- generator, per modality (image and text alike), ``Linear(d, h) -> BatchNorm1d -> ReLU ->
  Linear(h, h/2) -> BatchNorm1d -> ReLU -> Linear(h/2, h/4) -> BatchNorm1d -> ReLU`` (the
  features ``f``; ``gen_model.py:44-65``), with ``Dropout(0.5)`` after every ReLU when ``dropout``
  is on (``gen_model.py:14-42``), then ``Linear(h/4, bits) -> Tanh`` (the hash outputs ``h``;
  ``gen_model.py:67-74``). PyTorch's default initialisation: ``GEN.weight_init``
  (``gen_model.py:77-94``) is never called. Codes are ``sign`` of the hash outputs in eval mode
  (BatchNorm running statistics; ``main.py:235-240,295-318``).
- feature discriminator ``Linear(h/4, h/8) -> ReLU -> Linear(h/8, h/16) -> ReLU -> Linear(h/16, 1)``
  and hash discriminator ``Linear(bits, 512) -> ReLU -> Linear(512, 1)`` (``dis_model.py:13-25``;
  built as ``DIS(h/4, h/8, bits)``, ``main.py:53``), Kaiming-normal weights and zero biases
  (``dis_model.py:27-43``). Image is "real", text "fake".
- images standardised by one global mean and standard deviation (``datasets/data_handler.py:17,26``);
  texts as given (``:18,27``).

Per minibatch of 128 pairs (``config.py:15``; ``main.py:31``, reshuffled every epoch, the last
partial batch kept), in this order (``main.py:87-177``):

1. Forward both branches in train mode (``main.py:94``); the batch's hash outputs are stored in
   ``H_i, H_t`` (``:95-96``). The text branch is run a second time for the hash discriminator's
   generator term (``generate_txt_code``, ``:97``; ``gen_model.py:112-116``), its hash layer on
   the detached features.
2. Feature discriminator: ``gamma * (-log sigmoid D(f_i) - log(1 - sigmoid D(f_t)))`` (batch means)
   plus the gradient penalty ``10 * mean (||grad D(x)|| - 1)^2`` at ``x = a f_i + (1 - a) f_t``,
   ``a`` uniform per element (``main.py:102-127``); one Adam step, lr 5e-5, betas (0.5, 0.9),
   weight decay 1e-4 (``main.py:62-65``). Then the hash discriminator the same way on ``h_i, h_t``
   (``main.py:132-155``).
3. Generator loss (``main.py:157-171``)
   ``121 * (T(h_i, h_t) + T(h_t, h_i)) + 1.1 * (||B - h_i||^2 + ||B - h_t||^2)
   + gamma * (-log sigmoid D_f(f_t) - log sigmoid D_h(hash_t(f_t detached)))`` (batch means in
   the last two terms); one Adam step, lr 5e-5, weight decay 5e-4 (``main.py:55-60``, ``:173-175``).
   ``T`` is the weighted cosine triplet loss, summed (``main.py:67``; ``triplet_loss.py:42-77``):
   for anchor i of one modality, positive j and negative k in the other,
   ``w_ijk * max(0, d_ij - d_ik + 0.4)`` with ``d = max(0, 1 - cos)`` (``triplet_loss.py:6-10``),
   ``w_ijk = g_ij - g_ik``, ``g_ij = (2^r_ij - 1) / Z_i`` the NDCG gain of the relevance ``r_ij``
   (the number of shared labels) normalised by the ideal DCG of row i (``triplet_loss.py:13-33``);
   positives ``r_ij > 0``, negatives ``r_ik = 0``, the anchor's own pair included.
4. After each epoch (``main.py:179-185``): ``P = (L^T L + lamb I)^-1 L^T B``,
   ``B = sign(L P + mu/2 (H_i + H_t))``, one ``B`` for both modalities (``B`` starts as
   ``sign(randn)``, ``H_i, H_t`` as zeros: ``main.py:79-82``); then the generator's lr is
   multiplied by 0.8 (not below 1e-6) after epochs 0, 100 and 200 (``main.py:213-215``; the
   discriminators keep theirs).

The loss weights as HEAD computes them from ``config.py:29-31`` (alpha 10, gamma 1, beta 1):
``main.py:19`` sets ``beta = 1 + 0.1 = 1.1``, the quantization weight (``main.py:171``). The
triplet loss takes ``flag = (beta - 0.1) * gamma = 1`` (``triplet_loss.py:14``) and multiplies both
its NDCG weight and its mask by ``flag + 0.1 = 1.1`` (``:30-31``) and, because ``alpha == 10``, by
10 (``:60-61``); ``main.py:170`` then multiplies by ``alpha = 10``: ``10 * 10 * 1.1 * 1.1 = 121``.
``triplet_weight`` and ``quant_weight`` hold those products. (With any ``alpha`` other than 10 HEAD
drops the NDCG weights altogether, ``triplet_loss.py:62-63``; that branch is not reproduced: set
the weights directly.)

Defaults are the official ``run_mir.sh`` / ``config.py`` settings: batch 128 (``config.py:15``),
hidden 8192 (``:17``), 300 epochs (``:21``), lr 5e-5 (``:24``), gamma 1 (``:30``), mu 1e-5 (``:32``),
lamb 1 (``:33``), margin 0.4 (``:35``), no dropout (``:36``), triplet 121 and quantization 1.1
(above), gradient penalty 10 (``main.py:124,152``), weight decay 5e-4 (``main.py:60``), lr x0.8
every 100 epochs from epoch 0 (``main.py:213-215``). ``run_mir.sh:2`` changes nothing but the
dataset and bits. The NUS-WIDE run (``run_nus.sh:2``: ``--lr 1e-5 --dropout True``, dropout p 0.5
by ``gen_model.py:19-41``) is ``dataset_defaults`` for ``nus-wide-tc21`` (the official NUS-WIDE is
TC21, ``config.py:47-54``) and for ``nus-wide-tc10`` (the same NUS-WIDE images and tags); every
other dataset takes the MIRFlickr settings, the only other official setting.

Supervision instead of labels. The relevance is ``r_ij = l_i . l_j`` of the strategy's
``soft_labels`` when present (the ``labels`` strategy: exactly the official shared-label count,
``triplet_loss.py:16-17``), otherwise ``r_ij = S_ij``; positives are ``r_ij > 0`` with labels and
``S_ij >= 0.5`` with the similarity alone (the two agree for 0/1 similarities). The label matrix of
the discrete update is ``soft_labels`` when present (with the ``labels`` strategy exactly the
official ``L``, ``main.py:32``), otherwise the rows of the similarity, ``L = S`` (n x n; the update
then projects ``B`` onto the span of S's columns, the same pseudo-labels as the ``ssah`` student).
S is read by blocks only (``supervision.block``): the minibatch's ``S[idx][:, idx]`` for the triplet
loss, and for the discrete update the dense matrix, kept by the strategy or built from its blocks,
up to 8,192 training pairs (:data:`EXACT_UPDATE_BYTES`: S and the Cholesky factor of ``S^T S + lamb I``
take at most 256 MiB each; Wiki, and the ``djsrh`` protocol's 5,000 pairs); above, the update uses
``L = S`` restricted to its leading ``PROJECTION_RANK`` (256) singular subspace, found once per fit
from row blocks (:func:`label_projection`). The exact update there would hold two more n x n
matrices beside DADH's model (15,000 pairs: 860 MiB each, beside 2 GB of weights, gradients and
Adam moments at width 8192), which took the ``ukd`` protocol's NUS-WIDE run to 2.27x its features.
That is cmhbench's choice, not a departure from DADH, whose code only ever uses labels: exact
where S has rank at most 256 (``labels``-like S of a few hundred classes), otherwise the update
keeps S's 256 strongest directions. It never applies to Wiki's rows. Its effect, measured on Wiki
with the rank-256 update forced at 2,173 pairs (32 bits, 15 epochs, seeds 0-2, mAP@all i2t / t2i):
``djsrh -> sakdh -> dadh`` 0.2451 +- 0.0016 / 0.4864 +- 0.0028 against 0.2480 +- 0.0014 / 0.4865 +-
0.0052 exact, ``djsrh -> ukd -> dadh`` 0.1733 +- 0.0156 / 0.3743 +- 0.0157 against 0.1738 +- 0.0147 /
0.3750 +- 0.0190: within 0.003 of the exact update, inside the seeds' spread. (At 15,000 pairs the
256 directions are a smaller share of S's n; not measured there: no labelled data of that size here.)

Fidelity (``benchmarks/fidelity.md``, section DADH): started from the same weights, with the same
minibatches and random draws, the official ``main.train`` and this plugin end a full epoch at width
8192 (float64) with every trained parameter equal to 2.3e-13 (relative) and the same codes for all
2173 Wiki training pairs. Trained independently on Wiki features (labels, 32 bits, seeds 0-2, both
at 15 epochs) they agree within the benchmark's tolerance: official 0.2766 +- 0.0087 / 0.7159 +-
0.0028 mAP i2t / t2i, this plugin 0.2753 +- 0.0003 / 0.7153 +- 0.0055.

Departures, and why:

- Model selection: the last epoch is kept. The official default ``valid=True`` (``config.py:19-20``)
  evaluates query-vs-database mAP with the test labels every epoch and keeps the best generator
  (``main.py:194-207``); labels are never used to choose a model here (cmhbench rule; the official
  ``valid=False`` path, ``main.py:217-218``, keeps the last epoch as here).
- Image standardisation uses the mean and standard deviation of the training images; the official
  loader takes them over the whole file, query and database included (``data_handler.py:17,26``).
  Both are one scalar each; on Wiki the means are equal (every image row sums to 1) and the
  standard deviations differ by 0.15%.
- ``-log sigmoid(x)`` and ``-log(1 - sigmoid(x))`` are computed as ``softplus(-x)`` and
  ``softplus(x)``: equal, without the official form's overflow to ``inf`` for ``|x| > ~88``.
- The second text forward pass of step 1 is not run when dropout is off: its features equal the
  first pass's (BatchNorm in train mode normalises with batch statistics), so only its side
  effect is reproduced, a second update of the text BatchNorm running statistics with the same
  batch statistics (exact; saves a text forward pass, about 15% of the arithmetic of a step). With
  dropout on it is run (without a graph: only the hash layer receives its gradient,
  ``gen_model.py:115``).
- The triplet loss is computed with a sort and prefix sums per anchor instead of the ``(m, m, m)``
  tensor of every triplet (the same sum and gradients up to rounding, see
  :func:`weighted_cosine_triplet`).
- The ideal-DCG normaliser is clamped away from 0 (rows without positives; cannot happen with
  labels, where every item is its own positive; officially 0/0 = NaN).
- A final minibatch of a single pair is skipped (BatchNorm cannot normalise one sample; the
  official code raises there). It happens only when ``n % batch_size == 1``.
- Speed only, no effect on the numbers beyond rounding: Adam is PyTorch's fused implementation;
  each discriminator scores real and fake in one batch; the generator's adversarial terms do not
  compute the discriminators' (unused) parameter gradients; on CPU, glibc is asked to keep freed
  memory (:func:`keep_freed_memory`).

Schedule and time: the official 300 epochs. On Wiki's 2173 training pairs (17 minibatches per
epoch) at width 8192, one epoch takes 17-17.3 s of CPU on one thread (user + system; 25 s wall on
the shared 2-core machine), so a 300-epoch fit takes about 86 min of one core; the official code on
the same features takes 35-37 s of CPU per epoch (about 3 h per fit). ``--set student.epochs=E``
runs exactly the first E epochs of the same schedule (the lr steps depend on the epoch index only,
and the random draws come in the same order).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from cmhbench import interfaces
from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, Supervision, dense_is_cached, row_slices
from cmhbench.lazy import autograd, F, nn, torch, torch_class
from cmhbench.registry import MethodSpec
from cmhbench.training import encode_in_batches, keep_freed_memory, minibatches, step

if TYPE_CHECKING:
    from torch import Tensor


def official_loss_weights(alpha: float, beta: float, gamma: float) -> tuple[float, float]:
    """``(triplet, quantization)`` weights HEAD trains with for ``config.py``'s ``alpha, beta, gamma``.

    ``main.py:19``: ``beta += 0.1``; ``triplet_loss.py:14``: ``flag = (beta - 0.1) * gamma``;
    ``:30-31``: NDCG weight and mask each times ``flag + 0.1``; ``:60-61``: times 10 when
    ``alpha == 10``; ``main.py:170-171``: ``alpha * triplet + beta * quantization``.
    ``official_loss_weights(10, 1, 1)`` (``config.py:29-31``) is ``(121, 1.1)``.
    """
    if alpha != 10:
        raise ValueError("HEAD drops the NDCG weights when alpha != 10 (triplet_loss.py:62-63); not reproduced")
    beta_used = beta + 0.1
    flag = (beta_used - 0.1) * gamma
    return alpha * 10.0 * (flag + 0.1) ** 2, beta_used


@dataclass(frozen=True)
class DADHConfig:
    """DADH hyperparameters: the official ``run_mir.sh`` / ``config.py`` settings at 5869b81."""

    # official_loss_weights(10, 1, 1) = (121.00000000000001, 1.1), written rounded
    triplet_weight: float = hp(121.0, "weight of the summed triplet losses (HEAD: alpha*10*1.1*1.1 = 121)", ge=0)
    quant_weight: float = hp(1.1, "weight of the quantization term ||B - h||^2 (HEAD: beta + 0.1 = 1.1)", ge=0)
    gamma: float = hp(1.0, "weight of the adversarial terms (discriminators and generator)", ge=0)  # config.py:30
    mu: float = hp(1e-5, "weight of (H_i + H_t)/2 in the discrete update B = sign(L P + mu (H_i + H_t)/2)", ge=0)  # :32
    lamb: float = hp(1.0, "ridge weight of the discrete update's P", gt=0)  # config.py:33
    margin: float = hp(0.4, "triplet margin on cosine distances", ge=0)  # config.py:35
    gradient_penalty: float = hp(10.0, "weight of the discriminators' gradient penalty", ge=0)  # main.py:124,152
    lr: float = hp(5e-5, "Adam learning rate of generator and discriminators", gt=0)  # config.py:24
    lr_decay: float = hp(0.8, "generator lr factor after epoch 0 and every 100th epoch", gt=0, le=1)  # main.py:213-215
    weight_decay: float = hp(5e-4, "generator weight decay", ge=0)  # main.py:60
    dis_weight_decay: float = hp(1e-4, "discriminators' weight decay", ge=0)  # main.py:63-64
    batch_size: int = hp(128, "pairs per minibatch", ge=2)  # config.py:15
    epochs: int = hp(300, "passes over the training pairs", ge=1)  # config.py:21
    hidden: int = hp(8192, "generator width h (layers h, h/2, h/4); discriminator h/8, h/16", ge=16)  # config.py:17
    dropout: float = hp(0.0, "dropout after every generator ReLU (official NUS-WIDE: 0.5)", ge=0, lt=1)  # config.py:36
    standardize_image: bool = hp(True, "standardise image features by one global mean and std")  # data_handler.py:17,26


@torch_class
def _Branch():
    """The ``nn.Module`` class ``_Branch``, defined on first use (see :mod:`cmhbench.lazy`)."""

    class _Branch(nn.Module):
        """One modality of ``GEN``: ``(Linear -> BatchNorm1d -> ReLU (-> Dropout))`` per width, then
        ``Linear -> Tanh`` to ``bits`` (``gen_model.py:14-74``)."""

        def __init__(self, widths: list[int], bits: int, dropout: float = 0.0) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.features = nn.Sequential(*layers)
            self.hash = nn.Sequential(nn.Linear(widths[-1], bits), nn.Tanh())

        def feature(self, x: Tensor, bn_inputs: list | None = None) -> Tensor:
            """``(m, d)`` -> ``(m, h/4)`` features; appends each BatchNorm's input to ``bn_inputs``."""
            for layer in self.features:
                if bn_inputs is not None and isinstance(layer, nn.BatchNorm1d):
                    bn_inputs.append(x)
                x = layer(x)
            return x

        def forward(self, x: Tensor) -> Tensor:
            """``(m, d)`` -> ``(m, bits)`` hash outputs in (-1, 1)."""
            return self.hash(self.features(x))

    return _Branch


def _kaiming(module: nn.Module) -> nn.Module:
    """Kaiming-normal weights and zero biases for every ``Linear`` (``dis_model.py:29-43``)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def discriminators(hidden: int, bits: int) -> tuple[nn.Module, nn.Module]:
    """``DIS(h/4, h/8, bits)``: feature ``h/4 -> h/8 -> h/16 -> 1`` and hash ``bits -> 512 -> 1``
    discriminators, Kaiming-normal initialised (``dis_model.py:13-27``; ``main.py:53``)."""
    feature = nn.Sequential(
        nn.Linear(hidden // 4, hidden // 8), nn.ReLU(inplace=True),
        nn.Linear(hidden // 8, hidden // 16), nn.ReLU(inplace=True),
        nn.Linear(hidden // 16, 1),
    )
    hashed = nn.Sequential(nn.Linear(bits, 512), nn.ReLU(inplace=True), nn.Linear(512, 1))
    return _kaiming(feature), _kaiming(hashed)


def _hinge_sums(x: Tensor, y: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``sum_ijk u_ij v_ik max(0, x_ij - y_ik)`` for ``(m, m)`` inputs, in ``O(m^2 log m)``.

    Per row i the ``y_ik`` are sorted; with the prefix sums ``V(t) = sum v_ik``, ``W(t) = sum v_ik
    y_ik`` over the ``t`` smallest, ``sum_k v_ik max(0, x - y_ik) = x V(t) - W(t)`` where ``t`` counts
    the ``y_ik < x`` (terms with ``y_ik = x`` are 0 either way). Differentiable in ``x`` and ``y``.
    """
    y_sorted, order = torch.sort(y, dim=1)
    v_sorted = v.gather(1, order)
    zero = torch.zeros_like(y[:, :1])
    count = torch.cat([zero, v_sorted.cumsum(1)], 1)  # (m, m + 1): V(0..m)
    total = torch.cat([zero, (v_sorted * y_sorted).cumsum(1)], 1)  # W(0..m)
    t = torch.searchsorted(y_sorted.detach().contiguous(), x.detach().contiguous())  # y_ik < x_ij
    return (u * (x * count.gather(1, t) - total.gather(1, t))).sum()


def weighted_cosine_triplet(
    source: Tensor, target: Tensor, relevance: Tensor, positive: Tensor, margin: float
) -> Tensor:
    """Summed weighted cosine triplet loss (DADH ``TripletLoss``, reduction ``sum``), unscaled.

    ``source`` ``(m, b)`` anchors, ``target`` ``(m, b)`` candidates, ``relevance`` ``(m, m)`` graded
    relevance ``r_ij >= 0`` and ``positive`` ``(m, m)`` bool. Returns
    ``sum_ijk [pos_ij, not pos_ik] * max(0, (g_ij - g_ik) (d_ij - d_ik + margin))`` with cosine
    distances ``d = max(0, 1 - cos)`` and gains ``g_ij = (2^r_ij - 1) / Z_i``, ``Z_i`` the ideal DCG
    ``sum_rank (2^r - 1) / log2(rank + 2)`` of row i sorted descending (``triplet_loss.py:6-33``).
    HEAD's factors ``10 * 1.1 * 1.1`` are in ``triplet_weight``.

    Every positive must be more relevant than every negative of its row (``g_ij >= g_ik``), so that
    ``w_ijk >= 0`` and ``max(0, w x) = w max(0, x)``; both of DADH's relevance rules (shared labels
    > 0; similarity >= 0.5) satisfy this. The weight ``pos_ij neg_ik (g_ij - g_ik)`` is then the
    difference of two products ``u_ij v_ik``, and each ``sum_ijk u_ij v_ik max(0, d_ij + margin -
    d_ik)`` takes a sort and prefix sums per row (:func:`_hinge_sums`) instead of the official
    ``(m, m, m)`` tensor: the same sum and gradients up to float rounding, forward and backward 11 ms
    instead of 71 ms at ``m = 128``, 32 bits, one thread.
    """
    m = source.shape[0]
    dist = (1 - F.normalize(source, dim=1) @ F.normalize(target, dim=1).T).clamp(min=0)
    ideal = torch.sort(relevance, dim=1, descending=True).values
    discount = torch.log2(torch.arange(m, device=source.device, dtype=source.dtype) + 2)
    z = ((2**ideal - 1) / discount).sum(1, keepdim=True).clamp(min=1e-12)
    gain = (2**relevance - 1) / z
    pos = positive.to(source.dtype)
    neg = 1 - pos
    least_positive = torch.where(positive, gain, torch.inf).amin(1)
    most_negative = torch.where(positive, -torch.inf, gain).amax(1)
    if bool((least_positive < most_negative).any()):
        raise ValueError("a negative is more relevant than a positive of the same row")
    shifted = dist + margin
    loss = _hinge_sums(shifted, dist, pos * gain, neg)
    if bool((neg * gain).any()):  # negatives with a gain (graded similarities); 0 with labels
        loss = loss - _hinge_sums(shifted, dist, pos, neg * gain)
    return loss


def discriminator_loss(dis: nn.Module, real: Tensor, fake: Tensor, gamma: float, penalty: float,
                       gen: torch.Generator) -> Tensor:
    """``gamma * mean(-log sigmoid D(real)) + gamma * mean(-log(1 - sigmoid D(fake)))`` plus
    ``penalty * mean_rows (||grad_x D(x)|| - 1)^2`` at ``x = a real + (1 - a) fake``, ``a``
    uniform per element (``main.py:102-125``). ``real``, ``fake``: ``(m, w)``, detached."""
    m = real.shape[0]
    scores = dis(torch.cat([real, fake])).squeeze(1)
    loss = gamma * (F.softplus(-scores[:m]).mean() + F.softplus(scores[m:]).mean())
    if penalty > 0:
        a = torch.rand(real.shape, generator=gen).to(real.device, real.dtype)
        mix = (a * real + (1 - a) * fake).requires_grad_(True)
        grad = autograd.grad(dis(mix).sum(), mix, create_graph=True)[0]
        loss = loss + penalty * (grad.norm(dim=1) - 1).pow(2).mean()
    return loss


@contextmanager
def _frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` without gradients inside the block (the generator's adversarial
    terms need gradients through the discriminators, not of them)."""
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _relevance(labels: Tensor | None, supervision: Supervision, idx: Tensor, dtype) -> tuple[Tensor, Tensor]:
    """``(m, m)`` relevance and positives of the minibatch ``idx``: shared-label counts ``l_i . l_j``
    and ``> 0`` with (soft) labels (``triplet_loss.py:16-17``; ``labels`` ``(n, k)`` on the training
    device), else the block ``S[idx][:, idx]`` in ``dtype`` and ``S_ij >= 0.5``."""
    if labels is not None:
        rel = labels[idx] @ labels[idx].T
        return rel, rel > 0
    rel = supervision.block(idx, idx).to(idx.device, dtype)
    return rel, rel >= 0.5


PROJECTION_RANK = 256  # rank of S's leading subspace in the discrete update above EXACT_UPDATE_BYTES
EXACT_UPDATE_BYTES = 256 * 1024**2  # the largest float32 n x n S (n <= 8,192) whose discrete update is exact
ROW_BLOCK_BYTES = 1 << 26  # S is read in row blocks of at most this many float32 bytes


def _row_blocks(supervision: Supervision) -> Iterator[tuple[slice, Tensor]]:
    """``(rows, S[rows])`` over consecutive row blocks of at most :data:`ROW_BLOCK_BYTES`, for reading
    only: views of the S the supervision keeps (no copy), else blocks computed on demand."""
    kept = supervision.kept_dense
    for rows in row_slices(supervision.n, ROW_BLOCK_BYTES // 4):
        yield rows, (supervision.block(rows) if kept is None else kept[rows])


def _s_times(supervision: Supervision, x: Tensor) -> Tensor:
    """``S x`` for ``(n, r)`` ``x``, reading ``S`` by row blocks."""
    out = torch.empty_like(x)
    for rows, block in _row_blocks(supervision):
        out[rows] = block.to(x) @ x
    return out


def _st_times(supervision: Supervision, x: Tensor) -> Tensor:
    """``S^T x`` for ``(n, r)`` ``x``: the sum over row blocks of ``S[rows]^T x[rows]``, each added
    into the result in place (``addmm_``), without an ``(n, r)`` product beside it per block (at
    184,477 pairs and r = 272, a fresh 200 MB array for every 90 rows; ``benchmarks/subspace_speed.py``
    times the passes)."""
    out = torch.zeros_like(x)
    for rows, block in _row_blocks(supervision):
        out.addmm_(block.to(x).T, x[rows])
    return out


def leading_singular_subspace(supervision: Supervision, rank: int, dtype, device, seed: int,
                              power_iterations: int = 2, oversampling: int = 16) -> tuple[Tensor, Tensor]:
    """``(U, sigma)``: ``(n, r)`` orthonormal left singular vectors of ``S`` and their ``(r,)`` singular
    values, ``r = min(rank, n)``, by a randomised range finder with power iterations (Halko, Martinsson,
    Tropp 2011, algorithms 4.4 and 5.1) that reads ``S`` by row blocks only: ``2 + 2 * power_iterations``
    passes over ``S``, never the ``n x n`` matrix. Exact (to rounding) when ``S`` has rank at most ``r``
    or ``r + oversampling >= n``."""
    n = supervision.n
    k = min(n, rank + oversampling)
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(_s_times(supervision, torch.randn(n, k, generator=gen).to(device, dtype)))[0]
    for _ in range(power_iterations):
        q = torch.linalg.qr(_s_times(supervision, torch.linalg.qr(_st_times(supervision, q))[0]))[0]
    u_small, sigma, _ = torch.linalg.svd(_st_times(supervision, q).T, full_matrices=False)  # Q^T S = (S^T Q)^T
    r = min(rank, n)
    return q @ u_small[:, :r], sigma[:r]


def label_projection(supervision: Supervision, labels: Tensor | None, lamb: float, dtype, device,
                     seed: int) -> Callable[[Tensor], Tensor]:
    """``Z -> L (L^T L + lamb I)^-1 L^T Z`` for ``(n, bits)`` ``Z``: the discrete update's ``L P``
    (``main.py:179-185``). ``L`` is ``labels`` ``(n, k)`` when given, else the dense ``S`` while it
    takes at most :data:`EXACT_UPDATE_BYTES` (n <= 8,192): the one the supervision keeps, or, where
    it keeps none, built here from its operator, so ``L`` depends on n only, never on the strategy's
    cache rule (the same products as always). Above, ``L = S`` restricted to its leading
    ``PROJECTION_RANK`` singular subspace, ``U diag(sigma^2 / (sigma^2 + lamb)) U^T Z``
    (:func:`leading_singular_subspace`; the exact map of ``L = S`` where S has at most that rank),
    which holds ``(n, 272)`` matrices instead of S and an n x n factor beside it."""
    lab = labels
    if lab is None and dense_is_cached(supervision.n, EXACT_UPDATE_BYTES):
        lab = supervision.kept_dense if supervision.kept_dense is not None else supervision.dense()
    if lab is not None:
        lab = lab.to(device, dtype)
        gram = lab.T @ lab  # + lamb I on its diagonal in place: no (k, k) identity and sum beside it (k = n for L = S)
        gram.diagonal().add_(lamb)
        chol = cholesky_lower(gram)
        del gram
        return lambda z: lab @ cholesky_solve_lower(lab.T @ z, chol)
    u, sigma = leading_singular_subspace(supervision, PROJECTION_RANK, dtype, device, seed)
    weight = (sigma**2 / (sigma**2 + lamb))[:, None]
    return lambda z: u @ (weight * (u.T @ z))


def cholesky_lower(gram: Tensor) -> Tensor:
    """The lower Cholesky factor ``C`` (``gram = C C^T``) of the symmetric positive definite ``(k, k)``
    ``gram``: ``torch.linalg.cholesky`` (the factor of every committed row), except on the CPU where
    ``gram`` takes more than :data:`~cmhbench.interfaces.DENSE_FLOOR_BYTES` (k > 8,192 in float32:
    soft labels of more than 8,192 columns, or ``L = S`` with :data:`EXACT_UPDATE_BYTES` raised), where torch's factorisation holds a second k x k
    array (measured: 139 MiB beside a 137 MiB gram) and LAPACK's ``potrf`` runs in ``gram``'s own
    storage instead (SciPy's, on the column-major view of the symmetric matrix; 11 MiB beside it),
    which is returned. Its factor equals torch's up to float rounding (another LAPACK build)."""
    if gram.device.type != "cpu" or gram.dtype not in (torch.float32, torch.float64) \
            or gram.numel() * gram.element_size() <= interfaces.DENSE_FLOOR_BYTES or not gram.is_contiguous():
        return torch.linalg.cholesky(gram)
    from scipy.linalg import lapack

    import numpy as np

    potrf = lapack.spotrf if gram.dtype == torch.float32 else lapack.dpotrf
    column_major = gram.numpy().T  # the same matrix (symmetric), Fortran order: potrf works in place
    upper, info = potrf(column_major, lower=0, overwrite_a=1, clean=1)
    if info != 0:
        raise torch.linalg.LinAlgError(f"cholesky: the leading minor of order {info} is not positive definite")
    if not np.shares_memory(upper, column_major):
        gram.copy_(torch.from_numpy(upper.T))
    return gram  # row-major, the upper factor U of the column-major view is C = U^T, zeros above


def cholesky_solve_lower(y: Tensor, chol: Tensor) -> Tensor:
    """``(C C^T)^-1 y`` for the lower Cholesky factor ``chol`` = C ``(k, k)`` and ``y`` ``(k, m)``: two
    triangular solves, without the copy of the k x k factor that ``torch.cholesky_solve(y, chol)`` makes
    at every call (385 MiB at k = 10,000: once per epoch in :meth:`DADH.fit`'s discrete update). For a
    column-major factor (``torch.linalg.cholesky``'s, the one of every committed row) it equals
    ``torch.cholesky_solve`` bit for bit (tested). For a row-major factor (:func:`cholesky_lower`'s
    in-place path, k > 8,192) BLAS solves the transposed layout, whose rounding depends on the CPU:
    bit-equal on the machines of earlier stops (this test held there), within 8e-7 (float32) and
    3.4e-15 (float64) of the solution's largest entry on an AMD EPYC with MKL 2024.2 at k = 700
    (tested to 1e-5 and 1e-13)."""
    return torch.linalg.solve_triangular(chol.T, torch.linalg.solve_triangular(chol, y, upper=False), upper=True)


def global_mean_std(x: Tensor) -> tuple[float, float]:
    """Mean and (biased) standard deviation of all entries of ``x``, in float64. Where a float64 copy
    of ``x`` takes at most :data:`~cmhbench.interfaces.DENSE_FLOOR_BYTES` (256 MiB: Wiki's and
    MIRFlickr's training images) they come from that copy, as always; above, from two passes over row
    blocks of that size (equal to float64 rounding), never a whole copy (6 GB at 184,477 x 4096)."""
    if 8 * x.numel() <= interfaces.DENSE_FLOOR_BYTES:
        whole = x.double()
        return float(whole.mean()), float(whole.std(unbiased=False))
    step = max(1, interfaces.DENSE_FLOOR_BYTES // (8 * max(1, x.shape[1])))
    blocks = [slice(s, s + step) for s in range(0, x.shape[0], step)]
    count = x.numel()
    mean = sum(float(x[b].double().sum()) for b in blocks) / count
    var = sum(float((x[b].double() - mean).pow_(2).sum()) for b in blocks) / count
    return mean, var**0.5


class DADH:
    """``GEN`` image/text networks, ``DIS`` feature and hash discriminators, and DADH's discrete B update."""

    def __init__(self, config: DADHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.branches: dict[Modality, nn.Module] = {}
        self.image_shift, self.image_scale = 0.0, 1.0

    def _image(self, x: Tensor) -> Tensor:
        """``(n, d)`` image features standardised by the training images' global mean and std."""
        return (x - self.image_shift) / self.image_scale

    def build(self, image_dim: int, text_dim: int, bits: int) -> None:
        """The generator branches (image first, as ``gen_model.py:44,55``) with default initialisation."""
        c = self.config
        widths = [c.hidden, c.hidden // 2, c.hidden // 4]
        dev = self.ctx.device
        self.branches = {
            Modality.IMAGE: _Branch([image_dim, *widths], bits, c.dropout).to(dev),
            Modality.TEXT: _Branch([text_dim, *widths], bits, c.dropout).to(dev),
        }

    def fit(self, train: PairedFeatures, supervision: Supervision, bits: int) -> None:
        """Train for ``epochs`` epochs of discriminator and generator steps and discrete B updates."""
        c = self.config
        dev = self.ctx.device
        if dev.type == "cpu":
            keep_freed_memory()
        n, dtype = len(train), train.image.dtype  # float32 in cmhbench runs
        if c.standardize_image:
            self.image_shift, self.image_scale = global_mean_std(train.image)
        inputs = (train.image, train.text)  # images standardised per minibatch (_train_step)
        labels = supervision.soft_labels
        sup = (None if labels is None else labels.to(dev, dtype), supervision, dtype)
        self.build(train.image.shape[1], train.text.shape[1], bits)
        nets = (self.branches[Modality.IMAGE], self.branches[Modality.TEXT],
                *(d.to(dev) for d in discriminators(c.hidden, bits)))
        adam = functools.partial(torch.optim.Adam, lr=c.lr, fused=True)
        opts = (adam([*nets[0].parameters(), *nets[1].parameters()], weight_decay=c.weight_decay),
                adam(nets[2].parameters(), betas=(0.5, 0.9), weight_decay=c.dis_weight_decay),
                adam(nets[3].parameters(), betas=(0.5, 0.9), weight_decay=c.dis_weight_decay))
        # Discrete update B = sign(L (L^T L + lamb I)^-1 L^T B + mu (H_i + H_t) / 2), L = soft labels or rows of S.
        project = label_projection(supervision, sup[0], c.lamb, dtype, dev, self.ctx.seed)
        gen = self.ctx.generator()
        b = torch.sign(torch.randn(n, bits, generator=gen)).to(dev, dtype)
        h = (torch.zeros(n, bits, device=dev, dtype=dtype), torch.zeros(n, bits, device=dev, dtype=dtype))
        for epoch in self.ctx.progress.track(range(c.epochs), c.epochs, f"dadh {bits} bits"):
            for idx in minibatches(n, c.batch_size, gen):
                if len(idx) > 1:  # BatchNorm needs two samples (the official code raises on one)
                    self._train_step(idx.to(dev), inputs, b, h, sup, nets, opts, gen)
            b = torch.sign(project(b) + 0.5 * c.mu * (h[0] + h[1]))
            if epoch % 100 == 0:
                for group in opts[0].param_groups:
                    group["lr"] = max(group["lr"] * c.lr_decay, 1e-6)

    def _train_step(self, idx: Tensor, inputs: tuple, b: Tensor, h: tuple, sup: tuple, nets: tuple, opts: tuple,
                    gen: torch.Generator) -> None:
        """One minibatch ``idx`` (``main.py:88-175``): forward, store the hash outputs in ``h = (H_i, H_t)``,
        a feature and a hash discriminator step, a generator step. ``inputs``: (images, standardised here,
        texts); ``sup``: (labels or None, the supervision, the training dtype); ``nets``: (image, text, feature dis, hash dis);
        ``opts``: their three optimisers (generator, feature dis, hash dis)."""
        c = self.config
        img, txt, dis_f, dis_h = nets
        bn_inputs: list | None = None if c.dropout > 0 else []
        f_i, f_t = img.feature(self._image(inputs[0][idx])), txt.feature(inputs[1][idx], bn_inputs)
        o_i, o_t = img.hash(f_i), txt.hash(f_t)
        h[0][idx], h[1][idx] = o_i.detach(), o_t.detach()
        o_t_hash_only = self._second_text_pass(txt, inputs[1][idx], f_t, bn_inputs)
        step([opts[1]], discriminator_loss(dis_f, f_i.detach(), f_t.detach(), c.gamma, c.gradient_penalty, gen))
        step([opts[2]], discriminator_loss(dis_h, o_i.detach(), o_t.detach(), c.gamma, c.gradient_penalty, gen))
        rel, pos = _relevance(*sup[:2], idx, sup[2])
        triplet = weighted_cosine_triplet(o_i, o_t, rel, pos, c.margin) + weighted_cosine_triplet(
            o_t, o_i, rel.T, pos.T, c.margin
        )
        quant = (b[idx] - o_i).pow(2).sum() + (b[idx] - o_t).pow(2).sum()
        with _frozen(dis_f, dis_h):
            adv = F.softplus(-dis_f(f_t)).mean() + F.softplus(-dis_h(o_t_hash_only)).mean()
            step([opts[0]], c.triplet_weight * triplet + c.quant_weight * quant + c.gamma * adv)

    @staticmethod
    def _second_text_pass(txt: nn.Module, text: Tensor, f_t: Tensor, bn_inputs: list | None) -> Tensor:
        """``generate_txt_code`` (``main.py:97``): the text hash layer on a second, detached pass of
        the text features. Without dropout that pass equals ``f_t``: only its second update of the
        BatchNorm running statistics is replayed, on the recorded ``bn_inputs`` (same batch statistics)."""
        if bn_inputs is None:
            with torch.no_grad():
                f_again = txt.features(text)
            return txt.hash(f_again)
        with torch.no_grad():
            for bn, x in zip([m for m in txt.features if isinstance(m, nn.BatchNorm1d)], bn_inputs):
                bn(x)
        return txt.hash(f_t.detach())

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` tanh hash outputs in eval mode; sign gives codes."""
        modality = Modality(modality)
        if modality is Modality.IMAGE:
            x = self._image(x)
        return encode_in_batches(self.branches[modality], x)


NUS_WIDE = {"lr": 1e-5, "dropout": 0.5}  # run_nus.sh:2 --lr 1e-5 --dropout True; p 0.5: gen_model.py:19-41


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``dadh`` student."""
    register(
        MethodSpec(
            name="dadh",
            kind="student",
            build=DADH,
            config=DADHConfig,
            paper="Bai, Zeng, Ma, Zhang, Chen. Deep Adversarial Discrete Hashing for Cross-Modal Retrieval. ICMR 2020.",
            code="https://github.com/Zjut-MultimediaPlus/DADH",
            dataset_defaults={"nus-wide-tc21": NUS_WIDE, "nus-wide-tc10": NUS_WIDE},
            summary="BatchNorm MLP generator, NDCG-weighted cosine triplet loss, feature and hash discriminators "
            "with gradient penalty, discrete B update through a label (or similarity-row) regression",
        )
    )

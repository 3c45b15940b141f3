"""Teacher ``ugach``: Unsupervised Generative Adversarial Cross-modal Hashing.

Paper: Jian Zhang, Yuxin Peng, Mingkuan Yuan. "Unsupervised Generative Adversarial Cross-Modal
Hashing." AAAI 2018. Official code (TensorFlow 1, Python 2): PKU-ICST-MIPL/UGACH_AAAI2018 at
``98c163f`` (the three steps of its ``README.md:9-12``: ``KNN/knn_*_cross5.py``, the discriminator
pre-training ``unsuper-pretrain-{mir,nus}-D-beta/train_*.py``, the adversarial training
``UGACH-{mir,nus}/train_*.py`` with ``dis_model_nn.py``, ``gen_model_nn.py``, ``utils.py``).
UGACH is the teacher of UKD (CVPR 2020); UKD's own copy (huhengtong/UKD_CVPR2020 at ``a96a9f7``,
``teacher_model/``) is the named setting ``variant=ukd`` below. Citations ``train_32.py:N`` are
``UGACH-mir/train_32.py``; ``pre/train_32.py:N`` is ``unsuper-pretrain-mir-D-beta/train_32.py``.
The ``_16/_64/_128`` scripts and the ``-nus`` copies differ from these only in ``OUTPUT_DIM``,
``GPU_ID``, ``TEXT_DIM``, ``CLASS_DIM`` and ``WORKDIR``, so no hyperparameter differs per dataset
and ``dataset_defaults`` is empty.

Defaults (``variant=ugach``; the ``variant=ukd`` value where it differs):

================  ===========  ====================================================================
field             default      official source
================  ===========  ====================================================================
k                 5            ``KNN/knn_mir_cross5.py:7,75-79`` (K = 10: 5 image + 5 text neighbours)
positives         knn          ``UGACH-mir/utils.py:36`` (``j in KNN_cross[i]``); ukd: ``pair``
                               (``teacher_model/utils.py:24``, ``i == j``)
epochs            30           ``train_32.py:15`` (WHOLE_EPOCH; D_EPOCH = 1, ``:16``); UKD
                               ``teacher_train.py:19-20``
g_epochs          2            ``train_32.py:17`` (G_EPOCH); UKD ``teacher_train.py:21``
select            2            ``train_32.py:12`` (SELECTNUM); UKD ``teacher_train.py:16``
sample_ratio      50           ``train_32.py:13`` (SAMPLERATIO); UKD ``teacher_train.py:17``
hidden            8192         ``train_32.py:24`` (HIDDEN_DIM); UKD ``teacher_train.py:28``
batch_size        1            ``train_32.py:26`` (D's triplets per step); ukd: 512
                               (``teacher_train.py:30``)
d_lr              0.001        ``train_32.py:28``; ukd: 0.01 (``teacher_train.py:32``)
g_lr              0.01         ``train_32.py:29``; UKD ``teacher_train.py:33``
weight_decay      0.01         ``train_32.py:27``; every loss adds ``0.01 * sum(l2_loss(w))`` over the
                               8 weights and biases (``dis_model_nn.py:86-90,94-98``,
                               ``gen_model_nn.py:74-78``)
margin_per_bit    0.125        ``train_32.py:30`` (BETA = OUTPUT_DIM / 8)
pretrain_epochs   30000        ``pre/train_32.py:14-15`` (WHOLE_EPOCH 30 x D_EPOCH 1000 passes);
                               ukd: 200 (``teacher_pretrain.py:18-19``, 1 x 200)
pretrain_resample 1000         ``pre/train_32.py:16,127`` (new triplets when ``d_epoch % GS_EPOCH
                               == 0``, i.e. once per WHOLE_EPOCH); UKD ``teacher_pretrain.py:20``
pretrain_batch    20           ``pre/train_32.py:23``; ukd: 256 (``teacher_pretrain.py:27``)
pretrain_lr       0.01         ``pre/train_32.py:25``; UKD ``teacher_pretrain.py:29``
pretrain_select   1            ``pre/train_32.py:11``; UKD ``teacher_pretrain.py:15``
================  ===========  ====================================================================

As in the official code:

- Networks (D and G alike, ``dis_model_nn.py:21-64``, ``gen_model_nn.py:22-66``): per modality
  ``Linear(d, 8192) -> tanh -> Linear(8192, bits) -> sigmoid``, weights from a normal truncated at
  two standard deviations (std 0.1), biases 0. UGACH is feature-based officially (VGG19 fc7 and the
  dataset's tag vectors, ``README.md:18``), so the networks are kept whole on cmhbench's features.
- Correlation graph (``knn_mir_cross5.py:71-79``): item i's positives in the other modality are the
  5 nearest training items of i in the image space and the 5 nearest in the text space (Euclidean,
  i itself included: ``argsort(distance[i])[0:K]``); the same list serves i2t and t2i
  (``utils.py:77-78``).
- Pre-training (``pre/train_32.py``): a fresh D is trained on triplets (query, its paired item,
  one uniformly drawn other item) -- positives are the pair only (``pre/utils.py:35``, ``i == j``),
  one triplet per query (``:53-54``), the list shuffled (``:56``) and then passed over
  ``pretrain_resample`` times in the same order before it is redrawn (``:125-134``), i2t list then
  t2i list, minibatches of 20 at lr 0.01 on ``mean(hinge) + weight decay`` (``:59-103``).
- Adversarial epoch (``train_32.py:250-283``): G draws, for every query and both directions, a
  random ``int(n / 50)`` of the other modality's items without repeats (``:57-61``), and
  ``SELECTNUM = 2`` negatives from ``softmax(-||g(q) - g(c)||^2)`` over them, each redrawn until it
  is not a positive (``:76-86``, i.e. the softmax restricted to non-positives), paired with the
  first two of the shuffled positives (``:57,94-95``); the triplet list is shuffled (``:111``).
  D takes one SGD step per triplet (BATCH_SIZE 1) on ``max(0, beta + ||d(q)-d(pos)||^2 -
  ||d(q)-d(neg)||^2) + weight decay`` (``dis_model_nn.py:86-90``), i2t list then t2i list
  (``:260-261``). Then 2 passes of G (``:280-283``), one SGD step per query (``:166-227``):
  2 draws with replacement from the softmax over a fresh ``int(n / 50)`` candidates
  (``:170-192``, positives not rejected), reward ``sigmoid(max(0, beta + d_D(q, pos_k) -
  d_D(q, neg_k)))`` from D (``dis_model_nn.py:91``), loss ``-mean(log(softmax over the two fed
  negatives + 1e-20) * reward) + weight decay`` (``gen_model_nn.py:72-78``).
- Learning rates stay constant: ``tf.train.exponential_decay(lr, global_step, 20000, 0.9)`` is built
  (``dis_model_nn.py:120-126``, ``gen_model_nn.py:80-84``) but ``global_step`` is never passed to
  ``minimize()``, so it stays 0 and the decay never happens (the same in UKD,
  ``teacher_model/dis_model_nn.py:137-150``).
- Each pass over a triplet list starts at index 1 (``train_32.py:116``, ``pre/train_32.py:61``:
  ``index = 1``), so the first triplet of every shuffled list is never trained on; kept.
- ``encode`` returns D's sigmoid outputs (what UKD ranks its neighbours by), shifted by -0.5 so
  that ``sign`` gives the official code ``cast(sig + 0.5, int)`` (``dis_model_nn.py:59,64``); the
  shift leaves Euclidean distances unchanged.

Per-example SGD, exactly: the adversarial phase is the official sequence of single-triplet and
single-query SGD steps, not a batched stand-in (there is no batched equivalent: every step depends
on the previous one). It is made fast by (i) hand-written forward/backward passes of the two-layer
heads (no autograd graph per step), (ii) the weight decay of all 8 tensors applied as one scalar
factor ``s`` per network (weights are stored as ``w / s``; a step multiplies ``s`` by
``1 - lr * wd`` and adds the gradient scaled by ``lr / s``; algebraically the same update
``w <- (1 - lr wd) w - lr g``), so a triplet whose hinge is 0 costs no weight update at all, and
(iii) the G-side sampling of a whole D list computed from one forward pass over all items (G does
not change while the list is drawn, ``train_32.py:256-258``), and likewise D's outputs for the
rewards of a whole G pass (D does not change during ``train_generator``), (iv) ``tanh(z)`` computed
as ``2 sigmoid(2z) - 1`` (the same function; three times faster on CPU), (v) where the
candidates are wide (``d >= 256``, e.g. 4096-d image features; not Wiki's 128-d and 10-d) and
their ``n x hidden`` pre-activations fit in 2 GiB (n <= 65,536 at width 8192), G's first layer of
the ``n / 50`` candidates of each step is read from :class:`PreactivationCache` (computed once a
pass, plus the pass's logged rank-2 updates) instead of recomputed: at 5,000 pairs of 4096-d /
1000-d NUS-WIDE-sized features, width 8192, a t2i step takes 49.5 ms instead of 188.6 ms and an i2t
step 41.9 ms instead of 72.7 ms (one thread; the rest is the memory-bound weight update). Per
step this is the work the official graph does at batch size 1; there is no approximation. A
lock-step test (``tests/test_ugach_network.py``) checks 60 single-triplet steps, a minibatch step
and a generator step against autograd SGD on the official loss lines, in float64, to 1e-9, and a
generator pass with the cache against one without (folds and flushes included), to 1e-9.

Departures, and why:

- ``variant=ukd`` (huhengtong/UKD_CVPR2020 ``teacher_model/``): pair-only positives also in the
  adversarial phase (``utils.py:13-31``), D minibatches of 512 at lr 0.01 (``teacher_train.py:30-33``),
  pre-training 200 passes at batch 256 (``pretrain/teacher_pretrain.py:18-29``). The released
  ``teacher_train.py:86`` reads ``pos_list[i]`` for ``i < SELECTNUM = 2`` from a one-element list
  (IndexError): it cannot run as released. Here both triplets of a query use its one positive (the
  paired item), which is also what its generator step does (``pos_list[0:2]`` has one element and
  the reward broadcasts it, ``teacher_train.py:169-200``). UKD fixes the teacher at 128 bits
  (``teacher_train.py:14``); here the teacher runs at the requested bit count.
- Model selection: the official scripts keep the D with the best test-set mAP, checked after every
  pre-training pass (``pre/train_32.py:136-149``) and every adversarial epoch
  (``train_32.py:263-276``; UKD ``teacher_train.py:272-281``, ``teacher_pretrain.py:136-145``).
  Choosing on test labels is not reproduced: the last D of each phase is kept.
- Pre-training length: 30000 passes (the released script's loop; with the test-set selection
  above the authors presumably stopped it far earlier) is the default. On Wiki that is about
  6.5 million steps of 20 triplets at width 8192 (a pass over both lists takes over 1 s of CPU,
  so the whole loop takes on the order of 10 CPU hours); ``--set teacher.pretrain_epochs=N`` shortens it, and the Wiki
  measurements in ``benchmarks/fidelity.md`` used N = 200 (UKD's count). The adversarial phase at
  the defaults costs about 30 s of CPU per epoch on Wiki (one thread), 15 minutes per fit.
- Measured on Wiki (32 bits, seed 0, ``pretrain_epochs=200``, everything else default): D collapses
  to one code for every item of both modalities (mAP 0.111 both ways, chance level; teacher fit
  3518 s wall on the shared 2-core machine, about 26 CPU minutes). Cause, checked after 20
  pre-training passes: cmhbench's Wiki features are L1-normalised (image rows have norm 0.18, text
  0.48; the official inputs are VGG fc7 activations with norms in the tens), so the first layer
  barely separates items (D's image outputs vary by 0.014 across items, 36 distinct codes) and the
  official weight decay, applied at every one of the ~300,000 single steps, wins; with the same
  features times 50 the outputs vary by 0.34 and 2081 of the 2173 items get distinct codes. The
  official code has no input scaling; none is added here.
- Candidates for G are a random ``int(n / 50)`` subset per query, as officially; if all of them are
  positives (the official ``while True`` loop, ``train_32.py:82-86``, would never end) a uniformly
  drawn non-positive item is used.
- Memory is linear in ``n``: the correlation graph is kept as each item's index list (at most
  ``2k + 1`` entries, :func:`correlation_graph`) instead of the official per-query Python lists of
  all n items (``utils.py:24-40``) or an ``(n, n)`` mask (34 GB at NUS-WIDE's 184,477 pairs), and
  the candidates of G's sampling are drawn ``QUERY_BLOCK`` = 256 queries at a time. Time stays as
  officially quadratic: every G step runs G over ``n / 50`` candidates, about
  ``n^2 / 25 (d + bits) hidden`` FLOP per G pass and direction without the cache of (v) above (at
  n = 184,477 with 4096-d images and width 8192, about 10^16 per pass, where the cache does not
  fit: out of reach of a CPU; at 5,000 pairs 7 x 10^12).
- Random draws use torch's generator, not Python's ``random``/``numpy``; G visits queries in index
  order each pass (officially the order of a Python 2 dict, also fixed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from cmhbench import interfaces
from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.lazy import F, nn, torch, torch_class
from cmhbench.registry import MethodSpec
from cmhbench.neighbours import knn_union_lists
from cmhbench.training import encode_in_batches

if TYPE_CHECKING:
    from torch import Tensor

#: The settings ``variant`` selects for the fields left at ``None`` (file:line in the module docstring).
VARIANTS = {
    "ugach": {"positives": "knn", "batch_size": 1, "d_lr": 0.001, "pretrain_epochs": 30000, "pretrain_batch": 20},
    "ukd": {"positives": "pair", "batch_size": 512, "d_lr": 0.01, "pretrain_epochs": 200, "pretrain_batch": 256},
}


@dataclass(frozen=True)
class UGACHConfig:
    """UGACH hyperparameters: the official ``train_*.py`` / pre-training settings (see the module docstring)."""

    variant: str = hp("ugach", "official code to follow: ugach (UGACH_AAAI2018) or ukd (UKD's teacher_model/)",
                      choices=("ugach", "ukd"))
    k: int = hp(5, "image and text neighbours per item in the correlation graph (KNN_cross5)", ge=1)
    positives: Optional[str] = hp(None, "adversarial positives: knn (graph) or pair; None: knn for ugach, pair for ukd",
                                  choices=("knn", "pair"))
    epochs: int = hp(30, "adversarial epochs (WHOLE_EPOCH)", ge=1)
    g_epochs: int = hp(2, "generator passes per epoch (G_EPOCH)", ge=1)
    select: int = hp(2, "triplets per query and direction (SELECTNUM)", ge=1)
    sample_ratio: int = hp(50, "candidates per query = int(n / sample_ratio) (SAMPLERATIO)", ge=1)
    hidden: int = hp(8192, "hidden width of all heads (HIDDEN_DIM)", ge=1)
    batch_size: Optional[int] = hp(None, "D triplets per SGD step; None: 1 for ugach, 512 for ukd (BATCH_SIZE)", ge=1)
    d_lr: Optional[float] = hp(None, "D SGD learning rate, constant; None: 0.001 for ugach, 0.01 for ukd", gt=0)
    g_lr: float = hp(0.01, "G SGD learning rate, constant (one step per query)", gt=0)
    weight_decay: float = hp(0.01, "L2 penalty weight on all parameters (WEIGHT_DECAY)", ge=0)
    margin_per_bit: float = hp(0.125, "hinge margin beta = margin_per_bit * bits (official bits / 8)", gt=0)
    pretrain_epochs: Optional[int] = hp(None, "D pre-training passes; None: 30000 for ugach, 200 for ukd", ge=0)
    pretrain_resample: int = hp(1000, "pre-training passes per drawn triplet list (GS_EPOCH)", ge=1)
    pretrain_batch: Optional[int] = hp(None, "pre-training triplets per step; None: 20 for ugach, 256 for ukd", ge=1)
    pretrain_lr: float = hp(0.01, "pre-training SGD learning rate, constant", gt=0)
    pretrain_select: int = hp(1, "pre-training triplets per query and direction (SELECTNUM)", ge=1)

    def setting(self, name: str):
        """The value of a variant-dependent field: the field if set, else the variant's value."""
        value = getattr(self, name)
        return VARIANTS[self.variant][name] if value is None else value


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
    """``(n, w)`` int64 manifold pairs as index lists padded with -1: row i lists the j among the k
    nearest neighbours of i in the image or the text features (Euclidean, i itself included), the
    official ``j in KNN_cross[i]`` (:func:`~cmhbench.neighbours.knn_union_lists`; ``w <= 2k + 1``)."""
    return knn_union_lists([image, text], k)


def is_positive(lists: Tensor, cols: Tensor) -> Tensor:
    """``(m, c)`` bool: ``cols[r, s]`` is among the positives ``lists[r]`` (``(m, w)``, -1 padded)."""
    return (cols[:, :, None] == lists[:, None, :]).any(-1)


def hinge_grads(sq: Tensor, sp: Tensor, sn: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Loss ``mean(hinge)`` of ``(m, bits)`` outputs and its gradients w.r.t. ``sq``, ``sp``, ``sn``."""
    dp, dn = sq - sp, sq - sn
    hinge = beta + (dp * dp).sum(1) - (dn * dn).sum(1)
    active = (hinge > 0).to(sq.dtype)[:, None] * (2.0 / sq.shape[0])
    return hinge.clamp(min=0.0).mean(), active * (dp - dn), -active * dp, active * dn


def gen_loss_grads(sq: Tensor, sn: Tensor, reward: Tensor, eps: float = 1e-20) -> tuple[Tensor, Tensor, Tensor]:
    """G loss ``-mean(log(softmax(-||sq - sn_k||^2) + eps) * reward_k)`` (``gen_model_nn.py:68-74``)
    for ``(1, bits)`` query output and ``(m, bits)`` fed negatives; returns loss, d/dsq, d/dsn."""
    diff = sq - sn
    p = torch.softmax(-(diff * diff).sum(1), 0)
    m = sn.shape[0]
    w = reward * p / (p + eps)  # d(-mean(r log(p + eps)))/d score_j = -(1/m) sum_k w_k (delta_kj - p_j)
    dscore = -(w - p * w.sum()) / m
    loss = -(torch.log(p + eps) * reward).mean()
    return loss, (dscore[:, None] * -2.0 * diff).sum(0, keepdim=True), dscore[:, None] * 2.0 * diff


FOLD_BELOW = 1e-3  # the decay scale at which the stored tensors take it back (fold)


class _Heads:
    """Hand-run SGD on a :class:`_Net` whose weight decay is one scalar: true weights = ``scale * stored``."""

    def __init__(self, net) -> None:
        self.net = net
        self.scale = 1.0
        self.caches: list[PreactivationCache] = []  # rescaled with the stored tensors by fold()
        self.p = {Modality.IMAGE: [net.image[0].weight.data, net.image[0].bias.data, net.image[2].weight.data,
                                   net.image[2].bias.data],
                  Modality.TEXT: [net.text[0].weight.data, net.text[0].bias.data, net.text[2].weight.data,
                                  net.text[2].bias.data]}

    def forward(self, m: Modality, x: Tensor) -> tuple[Tensor, tuple]:
        """``(r, d)`` -> ``(r, bits)`` sigmoid outputs and the cache for :meth:`step`."""
        w1, b1 = self.p[m][:2]
        return self.forward_from(m, x, F.linear(x, w1, b1))

    def forward_from(self, m: Modality, x: Tensor, z: Tensor) -> tuple[Tensor, tuple]:
        """:meth:`forward` of ``x`` given its first-layer pre-activations ``z = x w1^T + b1`` in stored
        units (``(r, hidden)``, consumed)."""
        w2, b2 = self.p[m][2:]
        h = z.mul_(2.0 * self.scale).sigmoid_().mul_(2.0).sub_(1.0)  # tanh = 2 sig(2z) - 1, faster
        sig = F.linear(h, w2, b2).mul_(self.scale).sigmoid_()
        return sig, (x, h, sig)

    def step(self, lr: float, wd: float, parts: list) -> list[tuple[Modality, Tensor, Tensor, float]]:
        """One SGD step ``w <- (1 - lr wd) w - lr g`` on all parameters; ``parts`` lists
        ``(modality, cache, dL/dsig)``; the gradient is the sum over parts. Returns, per part, the
        first-layer update in the stored units the step ends with (after a :meth:`fold`, if any),
        ``(modality, x, dz, alpha)``: ``w1 += alpha dz^T x`` and ``b1 += alpha dz^T 1``."""
        grads = []
        for m, (x, h, sig), dsig in parts:
            do = dsig * sig * (1.0 - sig)
            dz = (do @ self.p[m][2]) * self.scale * (1.0 - h * h)
            grads.append((m, x, h, do, dz))
        self.scale *= 1.0 - lr * wd
        alpha = -lr / self.scale
        for m, x, h, do, dz in grads:
            w1, b1, w2, b2 = self.p[m]
            w2.addmm_(do.T, h, alpha=alpha)
            b2.add_(do.sum(0), alpha=alpha)
            w1.addmm_(dz.T, x, alpha=alpha)
            b1.add_(dz.sum(0), alpha=alpha)
        units = 1.0  # stored units of the returned updates: those after a fold
        if self.scale < FOLD_BELOW:
            units = self.scale
            self.fold()
        return [(m, x, dz, alpha * units) for m, x, h, do, dz in grads]

    def decay(self, lr: float, wd: float) -> None:
        """A step whose loss gradient is zero: only the weight decay."""
        self.scale *= 1.0 - lr * wd
        if self.scale < FOLD_BELOW:
            self.fold()

    def fold(self) -> None:
        """Multiply the stored tensors by ``scale`` and reset it to 1 (the network then holds the true weights)."""
        for params in self.p.values():
            for t in params:
                t.mul_(self.scale)
        for cache in self.caches:
            cache.rescale(self.scale)
        self.scale = 1.0


class PreactivationCache:
    """First-layer pre-activations ``Z = X w1^T + b1`` (stored units) of all n items of one head,
    kept through a generator pass so that each step's ``n / 50`` candidates are read, not
    recomputed: ``Z`` is computed at the start, the pass's updates of ``w1`` and ``b1`` (each a
    rank-2 outer product, :meth:`_Heads.step`) are logged, and a candidate's pre-activation is
    ``Z[c] + (x_c X_u^T + 1) D_u`` over the logged rows ``X_u`` and ``D_u = alpha dz_u``; every
    :data:`CACHE_LOG_ROWS` logged rows are folded into ``Z`` by one product over all n.
    Algebraically the official forward (equal to float rounding: tested in float64); per step it
    costs about ``size L (d + hidden)`` instead of ``size d hidden``."""

    def __init__(self, heads: "_Heads", m: Modality, x: Tensor) -> None:
        self.x = x
        w1, b1 = heads.p[m][:2]
        self.z = F.linear(x, w1, b1)
        self.log_x = x.new_empty(0, x.shape[1])
        self.log_d = x.new_empty(0, w1.shape[0])

    def rows(self, cand: Tensor) -> Tensor:
        """``(len(cand), hidden)`` current pre-activations of the items ``cand``."""
        z = self.z[cand]
        if len(self.log_x):
            z.addmm_((self.x[cand] @ self.log_x.T).add_(1.0), self.log_d)
        return z

    def log(self, x: Tensor, dz: Tensor, alpha: float) -> None:
        """Record ``w1 += alpha dz^T x``, ``b1 += alpha dz^T 1``."""
        self.log_x = torch.cat([self.log_x, x])
        self.log_d = torch.cat([self.log_d, alpha * dz])
        if len(self.log_x) >= CACHE_LOG_ROWS:
            self.z.addmm_((self.x @ self.log_x.T).add_(1.0), self.log_d)
            self.log_x, self.log_d = self.log_x[:0], self.log_d[:0]

    def rescale(self, factor: float) -> None:
        """The stored tensors were multiplied by ``factor`` (:meth:`_Heads.fold`)."""
        self.z.mul_(factor)
        self.log_d.mul_(factor)


CACHE_LOG_ROWS = 64  # logged update rows (32 generator steps) folded into the cache at a time
# The cache is used where it pays and fits: the candidates' input width is at least this
# (a candidate's direct forward costs d x hidden, a cached one about CACHE_LOG_ROWS / 2 x (d + hidden))
CACHE_MIN_WIDTH = 256
# and the n x hidden pre-activations take at most DENSE_CACHE_BYTES (n <= 65,536 at width 8192)


def use_preactivation_cache(n: int, d: int, hidden: int) -> bool:
    """Whether a generator pass over ``n`` candidates of width ``d`` keeps their pre-activations."""
    return d >= CACHE_MIN_WIDTH and 4 * n * hidden <= interfaces.DENSE_CACHE_BYTES


QUERY_BLOCK = 256  # queries whose candidates are drawn and scored at a time (fixed: draws do not depend on memory)


def random_subsets(n_rows: int, n: int, size: int, rng: torch.Generator, chunk: int = 1024) -> Tensor:
    """``(n_rows, size)`` per row, ``size`` distinct indices of ``range(n)`` in random order."""
    out = [torch.rand(min(chunk, n_rows - s), n, generator=rng).topk(size, dim=1).indices
           for s in range(0, n_rows, chunk)]
    return torch.cat(out) if out else torch.zeros(0, size, dtype=torch.long)


class UGACH:
    """A generator that picks hard pairs from the kNN graph and a hashing discriminator."""

    def __init__(self, config: UGACHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.dis: _Net | None = None
        self.gen: _Net | None = None

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Pre-train D on pair triplets, then alternate G sampling, per-triplet D steps and per-query G steps."""
        c = self.config
        dev = self.ctx.device
        n = len(train)
        feats = {Modality.IMAGE: train.image.float().to(dev), Modality.TEXT: train.text.float().to(dev)}
        di, dt = feats[Modality.IMAGE].shape[1], feats[Modality.TEXT].shape[1]
        self.dis = _Net(di, dt, c.hidden, bits, self.ctx.generator(1)).to(dev)
        self.gen = _Net(di, dt, c.hidden, bits, self.ctx.generator(2)).to(dev)
        d, g = _Heads(self.dis), _Heads(self.gen)
        self._rng = self.ctx.generator()
        self._beta = c.margin_per_bit * bits
        with torch.no_grad():
            self._pretrain(d, feats, n)
            if c.setting("positives") == "knn":
                positives = correlation_graph(feats[Modality.IMAGE], feats[Modality.TEXT], c.k)
            else:
                positives = torch.arange(n, device=dev)[:, None]
            for _ in self.ctx.progress.track(range(c.epochs), c.epochs, f"ugach {bits} bits"):
                self._epoch(d, g, feats, positives, n)
            d.fold()
            g.fold()

    def _directions(self):
        return ((Modality.IMAGE, Modality.TEXT), (Modality.TEXT, Modality.IMAGE))

    def _train_d(self, d: _Heads, feats: dict, qm: Modality, triplets: Tensor, batch: int, lr: float) -> None:
        """Passes over a shuffled ``(t, 3)`` (query, pos, neg) list from index 1 in steps of ``batch``."""
        c, beta = self.config, self._beta
        xq_all, xc_all = feats[qm], feats[Modality.TEXT if qm is Modality.IMAGE else Modality.IMAGE]
        cm = Modality.TEXT if qm is Modality.IMAGE else Modality.IMAGE
        for s in range(1, triplets.shape[0], batch):  # official ``index = 1``
            t = triplets[s : s + batch]
            m = t.shape[0]
            sq, cq = d.forward(qm, xq_all[t[:, 0]])
            spn, cpn = d.forward(cm, xc_all[torch.cat([t[:, 1], t[:, 2]])])
            _, gq, gp, gn = hinge_grads(sq, spn[:m], spn[m:], beta)
            if not bool(gq.any() or gp.any()):
                d.decay(lr, c.weight_decay)
                continue
            d.step(lr, c.weight_decay, [(qm, cq, gq), (cm, cpn, torch.cat([gp, gn]))])

    def _pretrain(self, d: _Heads, feats: dict, n: int) -> None:
        """``pre/train_32.py``: pair positive, one uniform non-paired negative per query, fixed lists."""
        c, rng, dev = self.config, self._rng, self.ctx.device
        passes, batch = c.setting("pretrain_epochs"), c.setting("pretrain_batch")
        lists = {}
        for p in range(passes):
            if p % c.pretrain_resample == 0:
                for qm, _ in self._directions():
                    q = torch.arange(n).repeat_interleave(c.pretrain_select)
                    neg = (q + torch.randint(1, max(n, 2), q.shape, generator=rng)) % n  # uniform over j != i
                    trip = torch.stack([q, q, neg], 1)
                    lists[qm] = trip[torch.randperm(trip.shape[0], generator=rng)].to(dev)
            for qm, _ in self._directions():
                self._train_d(d, feats, qm, lists[qm], batch, c.pretrain_lr)

    def _positives(self, positives: Tensor) -> Tensor:
        """``(n, select)``: the first ``select`` of each query's shuffled positives (cycled when fewer)
        from the ``(n, w)`` -1-padded lists ``positives``."""
        c = self.config
        valid = positives >= 0
        counts = valid.sum(1, keepdim=True)
        width = min(c.select, int(counts.max()))
        key = torch.rand(positives.shape, generator=self._rng).to(positives.device).masked_fill(~valid, 2.0)
        order = key.topk(width, dim=1, largest=False).indices  # a random order of the positives
        slots = torch.arange(c.select, device=positives.device)[None, :] % counts.clamp(max=width)
        return positives.gather(1, order.gather(1, slots))

    def _negatives(self, gq: Tensor, gc: Tensor, positives: Tensor, n: int, size: int) -> Tensor:
        """``(n, select)`` negatives of ``generate_samples`` (``train_32.py:50-86``): per query, from
        the softmax of ``-||g(q) - g(c)||^2`` over ``size`` random candidates, restricted to
        non-positives (the official redraw loop), with replacement. Queries go in blocks of
        :data:`QUERY_BLOCK` (the candidates of all n queries would take ``8 n size`` bytes, 5.4 GB
        at n = 184,477), each block drawing its candidates, then its picks."""
        c, rng, dev = self.config, self._rng, self.ctx.device
        out = []
        for s in range(0, n, QUERY_BLOCK):
            rows = torch.arange(s, min(s + QUERY_BLOCK, n), device=dev)
            cand = random_subsets(len(rows), n, size, rng).to(dev)
            score = -((gq[rows, None, :] - gc[cand]) ** 2).sum(-1)
            allowed = ~is_positive(positives[rows], cand)
            prob = torch.softmax(score, 1) * allowed
            none = ~allowed.any(1)
            prob[none] = 1.0
            neg = cand.gather(1, torch.multinomial(prob.cpu(), c.select, replacement=True, generator=rng).to(dev))
            for i in none.nonzero().flatten().tolist():  # official loop would not end: uniform non-positive
                barred = torch.zeros(n, dtype=torch.bool, device=dev)
                barred[positives[rows[i]][positives[rows[i]] >= 0]] = True
                choices = (~barred).nonzero().flatten()
                neg[i] = choices[torch.randint(0, len(choices), (c.select,), generator=rng).to(dev)]
            out.append(neg)
        return torch.cat(out)

    def _epoch(self, d: _Heads, g: _Heads, feats: dict, positives: Tensor, n: int) -> None:
        """One official adversarial epoch (``train_32.py:250-283``)."""
        c, rng, dev = self.config, self._rng, self.ctx.device
        size = max(1, int(n / c.sample_ratio))
        lists = {}
        for qm, cm in self._directions():  # generate_samples, G fixed
            pos = self._positives(positives)
            gq = g.forward(qm, feats[qm])[0]
            gc = g.forward(cm, feats[cm])[0]
            neg = self._negatives(gq, gc, positives, n, size)
            q = torch.arange(n, device=dev).repeat_interleave(c.select)
            trip = torch.stack([q, pos.reshape(-1), neg.reshape(-1)], 1)
            lists[qm] = trip[torch.randperm(trip.shape[0], generator=rng).to(dev)]
        for qm, _ in self._directions():
            self._train_d(d, feats, qm, lists[qm], c.setting("batch_size"), c.setting("d_lr"))
        for _ in range(c.g_epochs):
            for qm, cm in self._directions():
                self._train_g(d, g, feats, positives, qm, cm, n, size)

    def _train_g(self, d: _Heads, g: _Heads, feats: dict, positives: Tensor, qm: Modality, cm: Modality,
                 n: int, size: int) -> None:
        """``train_generator``: one policy-gradient SGD step per query (``train_32.py:165-230``); the
        candidates are drawn per block of :data:`QUERY_BLOCK` queries."""
        c, rng, dev, beta = self.config, self._rng, self.ctx.device, self._beta
        pos = self._positives(positives)
        draws = torch.rand(n, c.select, generator=rng).to(dev)
        xq_all, xc_all = feats[qm], feats[cm]
        dq_all, dc_all = d.forward(qm, xq_all)[0], d.forward(cm, xc_all)[0]  # D is fixed during G's pass
        cache = None
        if use_preactivation_cache(n, xc_all.shape[1], g.p[cm][0].shape[0]):
            cache = PreactivationCache(g, cm, xc_all)
            g.caches.append(cache)
        for s in range(0, n, QUERY_BLOCK):
            block = random_subsets(min(QUERY_BLOCK, n - s), n, size, rng).to(dev)
            for i in range(s, s + block.shape[0]):
                cand = block[i - s]
                sq, cq = g.forward(qm, xq_all[i : i + 1])
                if cache is None:
                    sc, (xc, hc, sigc) = g.forward(cm, xc_all[cand])
                else:
                    sc, (xc, hc, sigc) = g.forward_from(cm, xc_all[cand], cache.rows(cand))
                cdf = torch.cumsum(torch.softmax(-((sq - sc) ** 2).sum(1), 0), 0)
                pick = torch.searchsorted(cdf, draws[i] * cdf[-1]).clamp(max=size - 1)
                reward = torch.sigmoid(triplet_hinge(dq_all[i : i + 1], dc_all[pos[i]], dc_all[cand[pick]], beta))
                _, gq, gn = gen_loss_grads(sq, sc[pick], reward)
                applied = g.step(c.g_lr, c.weight_decay, [(qm, cq, gq), (cm, (xc[pick], hc[pick], sigc[pick]), gn)])
                if cache is not None:
                    _, x_u, dz_u, alpha = applied[1]
                    cache.log(x_u, dz_u, alpha)
        if cache is not None:
            g.caches.remove(cache)

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
            "discriminator learns a triplet hinge on manifold pairs (per-triplet SGD, official widths)",
        )
    )

"""Teacher ``dsah``: Deep Semantic-Alignment Hashing.

Paper: Dejie Yang, Dayan Wu, Wanqian Zhang, Haisu Zhang, Bo Li, Weiping Wang. "Deep Semantic-Alignment
Hashing for Unsupervised Cross-Modal Retrieval." ICMR 2020 (doi:10.1145/3372278.3390673).
Official code: https://github.com/idejie/DSAH (``settings.py``, ``train.py``, ``models.py``,
``datasets.py``, ``metric.py``), read at HEAD, commit b231976 (2020-10-20; the code is that of the
first commit da64070, 2020-03-20, later commits edit README.md only). It is a fork of DJSRH (the
``djsrh`` teacher; README.md:47-48).

What it does, per minibatch of ``m`` pairs (as in the official ``Session.train``, ``train.py:75-148``):

1. ``S_I = 2 cos(F_I, F_I) - 1`` and ``S_T = 2 cos(F_T, F_T) - 1`` (``train.py:98-103``), ``F_I`` the
   fixed image features (officially the fc7 output of a second, frozen ImageNet AlexNet, ``FeatNet_I``,
   in eval mode and in no optimiser: ``train.py:59,76,94``) and ``F_T`` the raw text vectors.
2. Modal-fusion similarity ``S = K (alpha S_I + (1 - alpha) S_T)`` (``train.py:112-113``), alpha 0.9
   and K 1.5 (``settings.py:44,42``). Unlike DJSRH there is no second-order term (DSAH's ``ETA`` is a
   loss weight, step 4). :meth:`DSAH.fusion_similarity` gives this matrix over the training pairs, by
   blocks (:class:`FusionSimilarity`).
3. Codes ``B = tanh(a h)`` of both nets with ``a = sqrt(epoch + 1)``, set at the start of every epoch
   (``models.py:26-27,32-33,49-50,55-56``; ``train.py:81-82``); rows L2-normalised (``train.py:105-106``).
   Each net also has a decoder that maps the *sign* of its code to the other modality's feature:
   ``ImgNet.decode = Linear(bits, d_text)`` (``models.py:15,28-29``) and ``TxtNet.decode =
   Linear(bits, d_image)`` (``models.py:42,51-52``; ``image_size`` 4096 officially, the fc7 width).
4. Loss (``train.py:115-128``), mean squared errors, ``cos`` the code cosine matrices:
   ``||cos(B_T,B_T) - S||^2 + ||cos(B_I,B_T) - S||^2 + ||cos(B_I,B_I) - S||^2``
   ``+ ||diag cos(B_I,B_T) - K||^2`` (paired codes aligned at K; ``train.py:121-123``)
   ``+ ||dec_T(sign B_T) - F_I||^2 + ||dec_I(sign B_I) - F_T||^2`` (cross-modal reconstruction of the
   L2-normalised features; ``train.py:124-125``)
   ``+ 2 ||cos(B_I,B_T) - cos(B_I,B_T)^T||^2`` (``train.py:126``)
   ``+ eta (||cos(B_I,B_I) - K S_I||^2 + ||cos(B_T,B_T) - K S_T||^2)`` (``train.py:118-119``), eta 0.1
   (``settings.py:43``). The weights 1, 1, 1, 1, 1, 1, 2 are literals (``train.py:127``).
5. One backward pass, then a step of each of two SGD optimisers (``train.py:63-72,146-148``): ``opt_I``
   on every ``CodeNet_I`` parameter (hash layer and decoder) at ``LR_IMG``, ``opt_T`` on every
   ``CodeNet_T`` parameter (fc1, fc2, decoder) at ``LR_TXT``, both momentum 0.7, Nesterov, weight decay
   5e-4. Retrieval codes are ``sign(tanh(a h))`` (``metric.py:13-14,19-20``).

The reconstruction terms cannot move the codes: the decoders read ``torch.sign(code)``
(``models.py:28,51``), whose gradient is zero, so those two terms train only the decoders, which no
code depends on. They are kept (they are in the official loss and optimisers; the cost is two
``bits x d`` layers), and ``tests/test_dsah_network.py`` checks that dropping them leaves the hash nets'
gradients unchanged.

Defaults are the official settings, which are the same for the three datasets of the code:
``settings.py`` has one block per dataset, each setting ``NUM_EPOCH = 200``, ``LR_IMG = 0.005``,
``LR_TXT = 0.005`` (WIKI: lines 18-20; MIRFlickr: 27-29; NUSWIDE: 37-39; the blocks differ only in
file paths and a comment), and shared values K 1.5, ETA 0.1, ALPHA 0.9 (lines 42-44), batch 32,
momentum 0.7, weight decay 5e-4 (lines 46, 48, 49); Nesterov momentum (``train.py:64-65,68-69,71-72``).
``dataset_defaults`` repeats the per-block values for ``wiki``, ``mirflickr25k``, ``nus-wide-tc10``
(the official NUS-WIDE is TC10: ``settings.py:34-36``) and ``nus-wide-tc21`` (the same NUS-WIDE images
and tags), so a later change of a global default cannot move them; ``synthetic`` and the datasets the
code has no block for (``iapr-tc12``, ``mscoco``, ``raw``) use the same values. The text net's width
``hidden`` is the official 4096 (``models.py:39,41``). ``CODE_LEN`` (``settings.py:47``) is the run's
``bits``. The authors' results are a comment at ``train.py:129-145`` (MIRFlickr and Wiki, i2t / t2i,
three or four runs per code length; the metric is not named: the code logs mAP@50 every epoch,
``train.py:190-194``, and mAP@all only in its final pass, ``train.py:180-184``; on Wiki they come from
fine-tuned AlexNet pixels, not the SIFT features used here).

Networks (official ones after the feature point, :func:`official_nets`):

- Image: officially ``ImgNet`` (``models.py:9-33``) is an ImageNet AlexNet (``models.py:12``) whose
  classifier is cut to its first six children (``models.py:13``: Dropout(0.5), fc6, ReLU, Dropout(0.5),
  fc7, ReLU, so both Dropout layers sit *before* fc6 and fc7 and none after the fc7 output), then
  ``fc_encode = Linear(4096, code_len)`` (``models.py:14``) reads the fc7 output directly
  (``models.py:25-26``). On pre-extracted fc7 features only the hash layer comes after the feature
  point, so the image net here is exactly ``Linear(d_image, bits)``, PyTorch's default initialisation
  as officially, with nothing (no dropout, normalisation or scale) before it. Its decoder is
  ``Linear(bits, d_text)`` (``models.py:15``).
- Text: the official ``TxtNet`` whole (``models.py:36-56``): ``fc1 = Linear(d_text, 4096) -> ReLU ->
  fc2 = Linear(4096, bits)``, no dropout (the one Dropout is commented out, ``models.py:40``), default
  initialisation; its decoder is ``Linear(bits, image_size)`` with ``image_size`` the fc7 width 4096
  officially (``models.py:37,42``), ``d_image`` here (it reconstructs ``F_I``, the image feature).

Departures, and why:

- Feature inputs (the one departure every pixel-based method shares): the AlexNet backbone cannot be
  run or fine-tuned on pre-extracted features, so the whole AlexNet, which the official image optimiser
  fine-tunes on every dataset (``train.py:63-69``), stays fixed here; the classifier's two Dropout(0.5)
  layers, active in the official ``CodeNet_I`` during training (``train.py:78``) but placed before fc6
  and fc7, have nothing to act on, and the MIRFlickr/NUS-WIDE image augmentation (random flip and crop,
  ``datasets.py:136-142,224-230``) does not apply to features. For the same reason the fixed ``F_I``
  behind ``S_I`` (and behind the text decoder's target) and the hash layer's input are one and the same
  feature; officially ``F_I`` is the frozen pretrained fc7 (``FeatNet_I``, eval mode) and the hash layer
  reads the fine-tuned, dropped-out fc7 of ``CodeNet_I``.
- Model selection: the official loop scores the query codes against the database with labels after
  every ``EVAL_INTERVAL`` (1) epochs and keeps the best epoch by mAP@50 (``train.py:190-198``), which it
  reloads at the end (``train.py:241-244``); a label-free teacher cannot, so the last epoch is kept.
- Random draws only: the official code seeds torch with 1 for every run (``train.py:12-13``), also
  draws the unused ``fc_encode`` and ``decode`` of ``FeatNet_I`` (``train.py:59``) between the image
  and the text net, and draws ``m`` uniform numbers per batch only to overwrite them with 1
  (``train.py:122``); here the run's seed is used and only the trained layers are drawn, in the
  official order (image hash layer, image decoder, then fc1, fc2, text decoder:
  ``models.py:14-15,39-42``, ``train.py:58,61``). The batch order comes from the run's generator
  rather than the loader's.
- A final batch smaller than ``batch_size`` is dropped as officially (``train.py:46``), except when it
  is the only one (fewer than ``batch_size`` pairs), where the official loader would train on nothing.
- Datasets and splits: the official MIRFlickr / NUS-WIDE splits (``datasets.py:98-134,192-222``; DJSRH's
  ``datasets.py`` up to whitespace, with numpy seeded 1 at ``datasets.py:10``) are protocols, not part of
  the teacher: they are the algorithm of cmhbench's ``djsrh`` protocol; any named protocol applies.

Checked against the official code (``benchmarks/fidelity.md``; ``tests/test_dsah_network.py``): started
from the same weights and fed the same 335 Wiki minibatches (five epochs, ``a`` from 1 to sqrt(5)), the
official ``Session.train`` and this teacher end with bit-identical parameters of all five layers and
identical sign codes for all 2173 training pairs (the loss builds its terms in the official order,
``train.py:94-128``, so that autograd sums the gradient terms as officially); fed every batch of a whole
official 200-epoch run (its own shuffles), it ends with bit-identical parameters and query and database
codes. On Wiki (32 bits, seeds 0-2, mAP@all) both sides agree: i2t 0.2217 +- 0.0023 official,
0.2234 +- 0.0060 here; t2i 0.1962 +- 0.0065 official, 0.1876 +- 0.0070 here. Over seeds 0-9 t2i stays
about 0.007 lower here (0.1874 against 0.1947; inside the bound, but Welch's t 2.6); with identical draws
the two are bit-identical, so only the random draws differ, and their distributions are the same: an
open observation (``benchmarks/fidelity.md``). Schedule, not a departure: ``epochs`` is the official
200; on Wiki (67 batches per epoch, one torch thread, the shared 2-core machine loaded) a 32-bit fit took
83-128 s of wall time and a ``cmhbench run`` process 45-53 s of CPU time (the official code on the same
features: 98-153 s for training and encoding, 53-65 s of CPU time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import (Modality, PairedFeatures, RunContext, as_index, check_dense_fits, dense_is_cached,
                                 row_chunks)
from cmhbench.lazy import F, torch
from cmhbench.registry import MethodSpec
from cmhbench.training import (NormalizedRows, encode_in_batches, l2_normalize, minibatches, mlp, step,
                               times_transposed)

if TYPE_CHECKING:
    from torch import Tensor

# train.py:127: loss = 1 loss1 + 1 loss2 + 1 loss3 + 1 loss4 + 1 loss5 + 1 loss6 + 2 loss7 + ETA (loss31 + loss32)
SYMMETRY_WEIGHT = 2.0


@dataclass(frozen=True)
class DSAHConfig:
    """DSAH hyperparameters (the official settings, the same on every dataset of the official code)."""

    alpha: float = hp(0.9, "weight of the image similarity S_I in the fused S (1 - alpha: text; official ALPHA)",
                      ge=0, le=1)
    k: float = hp(1.5, "scale K of the fused similarity and of the paired-code target (official K)", gt=0)
    eta: float = hp(0.1, "weight of the per-modality terms ||cos(B_I,B_I) - K S_I||^2 + ||cos(B_T,B_T) - K S_T||^2",
                    ge=0)
    lr_image: float = hp(0.005, "SGD learning rate of the image hash layer and decoder", gt=0)
    lr_text: float = hp(0.005, "SGD learning rate of the text net and decoder", gt=0)
    momentum: float = hp(0.7, "SGD momentum (Nesterov)", ge=0, lt=1)
    weight_decay: float = hp(5e-4, "SGD weight decay", ge=0)
    batch_size: int = hp(32, "pairs per minibatch", ge=2)
    epochs: int = hp(200, "passes over the training pairs", ge=1)
    hidden: int = hp(4096, "hidden width of the text net (official: 4096, models.py:39,41)", ge=1)


def modal_similarities(f_i: Tensor, f_t: Tensor, f_i_cols: Optional[Tensor] = None,
                       f_t_cols: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """``(S_I, S_T)``, each ``(r, c)``: ``2 cos - 1`` between L2-normalised rows ``f_i`` ``(r, d_image)``,
    ``f_t`` ``(r, d_text)`` and the columns ``f_i_cols`` ``(c, d_image)``, ``f_t_cols`` ``(c, d_text)``
    (the rows themselves when None), in the official order of operations (``train.py:99-103``)."""
    s_i = f_i.mm((f_i if f_i_cols is None else f_i_cols).t())
    s_i = s_i * 2 - 1
    s_t = f_t.mm((f_t if f_t_cols is None else f_t_cols).t())
    s_t = s_t * 2 - 1
    return s_i, s_t


def fuse(s_i: Tensor, s_t: Tensor, alpha: float, k: float) -> Tensor:
    """``S = K (alpha S_I + (1 - alpha) S_T)`` (``train.py:112-113``), same shape as ``s_i``."""
    return k * (alpha * s_i + (1 - alpha) * s_t)


class FusionSimilarity:
    """DSAH's modal-fusion similarity ``S = K (alpha S_I + (1 - alpha) S_T)`` over ``n`` training pairs,
    ``S_I = 2 cos(F_I, F_I) - 1`` and ``S_T = 2 cos(F_T, F_T) - 1`` on the input features
    (``train.py:98-103,112-113``), computed block by block.

    Entries are float32 on the official scale: in ``[-K, K]`` for non-negative features (VGG/AlexNet
    fc7, bag-of-words, LDA), in ``[-3K, K]`` in general; the diagonal is ``K`` (for non-zero features).
    It is *not* a :class:`~cmhbench.interfaces.SimilarityOperator` (whose entries lie in [0, 1]): a
    strategy maps it to [0, 1] as it sees fit. It never holds the ``(n, n)`` matrix; a block of ``r x c``
    entries costs ``O(r c (d_image + d_text))``. Where a :class:`~cmhbench.interfaces.Supervision` over
    ``n`` pairs would be kept dense (``dense_is_cached(n)``: n <= 23,170 at 2 GiB, Wiki and MIRFlickr), it
    keeps the L2-normalised features, ``(n, d_image)`` and ``(n, d_text)`` float32, as always; above, it
    keeps a reference to the features and their ``(n,)`` row norms (:class:`NormalizedRows`), not a second
    copy of the features (3.6 GB under UCCH's protocol on NUS-WIDE), and normalises the rows a block
    reads. ``block(idx, idx)`` equals the target the teacher trains on for the batch ``idx`` (the same
    operations on the same shapes) in the first case, and to float32 rounding in the second.
    """

    symmetric = True

    def __init__(self, image: Tensor, text: Tensor, alpha: float, k: float) -> None:
        if image.shape[0] != text.shape[0]:
            raise ValueError("image and text features hold different numbers of items")
        self.n = int(image.shape[0])
        if dense_is_cached(self.n):
            self.f_i: Tensor | NormalizedRows = l2_normalize(image.float())
            self.f_t: Tensor | NormalizedRows = l2_normalize(text.float())
        else:
            self.f_i, self.f_t = NormalizedRows(image), NormalizedRows(text)
        self.alpha, self.k = alpha, k

    @property
    def device(self) -> torch.device:
        """Where blocks are computed and returned (the features' device)."""
        return self.f_i.device

    def modal_blocks(self, rows: Tensor, cols: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``(S_I, S_T)`` blocks ``[rows][:, cols]``, each ``(len(rows), len(cols) or n)`` float32."""
        rows = as_index(rows, self.n, self.device)
        if cols is None:
            if isinstance(self.f_i, NormalizedRows):
                s_i = times_transposed(self.f_i[rows], self.f_i) * 2 - 1
                s_t = times_transposed(self.f_t[rows], self.f_t) * 2 - 1
                return s_i, s_t
            return modal_similarities(self.f_i[rows], self.f_t[rows], self.f_i, self.f_t)
        cols = as_index(cols, self.n, self.device)
        if rows.shape == cols.shape and torch.equal(rows, cols):
            return modal_similarities(self.f_i[rows], self.f_t[rows])
        return modal_similarities(self.f_i[rows], self.f_t[rows], self.f_i[cols], self.f_t[cols])

    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols) or n)`` float32 block ``S[rows][:, cols]`` (``cols`` None: all ``n``
        columns); ``rows``, ``cols``: 1-D integer index tensors (or slices)."""
        return fuse(*self.modal_blocks(rows, cols), self.alpha, self.k)

    def factors(self) -> tuple[list[Tensor], Tensor]:
        """``(parts, M)`` with ``S = U M U^T``, ``U = [F_I, F_T, 1]`` ``(n, d_image + d_text + 1)`` kept as
        its three parts (the normalised features as this object holds them, tensors or
        :class:`NormalizedRows` views, not copied) and ``M = K diag(2 alpha I, 2 (1 - alpha) I,
        -1)`` ``(d, d)`` float64: ``2 cos - 1`` is ``2 F F^T - 1 1^T``. Agrees with :meth:`block` to float
        rounding."""
        d_i, d_t = int(self.f_i.shape[1]), int(self.f_t.shape[1])
        diagonal = torch.cat([
            torch.full((d_i,), 2.0 * self.alpha, dtype=torch.float64),
            torch.full((d_t,), 2.0 * (1.0 - self.alpha), dtype=torch.float64),
            torch.full((1,), -1.0, dtype=torch.float64),
        ]).to(self.device)
        ones = torch.ones(self.n, 1, dtype=self.f_i.dtype, device=self.device)
        return [self.f_i, self.f_t, ones], self.k * torch.diag(diagonal)

    def dense(self) -> Tensor:
        """The ``(n, n)`` float32 matrix, assembled from row blocks; raises :class:`MemoryError` naming its
        size when it would not fit in the free memory."""
        check_dense_fits(self.n, self.device)
        out = torch.empty(self.n, self.n, dtype=torch.float32, device=self.device)
        for rows in row_chunks(self.n, device=self.device):
            out[rows[0] : rows[-1] + 1] = self.block(rows)
        return out


class DSAH:
    """A linear image hash layer and the official one-hidden-layer text net, each with a cross-modal decoder,
    trained so that code cosines align with DSAH's modal-fusion similarity."""

    def __init__(self, config: DSAHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.heads: dict[Modality, torch.nn.Module] = {}
        self.decoders: dict[Modality, torch.nn.Module] = {}
        self.code_scale = 1.0

    def fusion_similarity(self, train: PairedFeatures) -> FusionSimilarity:
        """DSAH's own modal-fusion similarity over the ``n`` pairs of ``train`` (``(n, d_image)`` and
        ``(n, d_text)`` features), ``S = K (alpha S_I + (1 - alpha) S_T)`` with this teacher's ``alpha`` and
        ``K`` (``train.py:98-103,112-113``; official 0.9 and 1.5, ``settings.py:42,44``), as a
        :class:`FusionSimilarity` that serves ``(rows, cols)`` blocks on demand (``.dense()`` for the
        ``(n, n)`` matrix at small ``n``). It reads the features only, so it needs no :meth:`fit`."""
        return FusionSimilarity(train.image, train.text, self.config.alpha, self.config.k)

    def losses(self, image: Tensor, text: Tensor) -> dict[str, Tensor]:
        """The official loss terms (scalars) of a batch of ``(m, d_image)`` and ``(m, d_text)`` features, with
        codes ``tanh(a h)`` of both nets at the current code scale ``a``.

        Keys are the official names ``loss1`` .. ``loss7``, ``loss31``, ``loss32`` and ``total``
        (``train.py:94-128``), built in the official order of operations (image net and decoder, text net
        and decoder, ``models.py:25-29,46-52``, then the targets and terms), so that autograd sums the
        gradient terms as officially."""
        c = self.config
        code_i = torch.tanh(self.code_scale * self.heads[Modality.IMAGE](image))  # models.py:26-27
        decoded_t = self.decoders[Modality.IMAGE](torch.sign(code_i))  # models.py:28-29
        code_t = torch.tanh(self.code_scale * self.heads[Modality.TEXT](text))  # models.py:46-50
        decoded_i = self.decoders[Modality.TEXT](torch.sign(code_t))  # models.py:51-52
        f_i, f_t = l2_normalize(image), l2_normalize(text)  # train.py:98,101
        s_i, s_t = modal_similarities(f_i, f_t)  # train.py:99-103
        b_i, b_t = l2_normalize(code_i), l2_normalize(code_t)  # train.py:105-106
        bi_bi, bt_bt, bi_bt = b_i.mm(b_i.t()), b_t.mm(b_t.t()), b_i.mm(b_t.t())  # train.py:108-110
        s = fuse(s_i, s_t, c.alpha, c.k)  # train.py:112-113
        out = {
            "loss1": F.mse_loss(bt_bt, s),
            "loss2": F.mse_loss(bi_bt, s),
            "loss3": F.mse_loss(bi_bi, s),
            "loss31": F.mse_loss(bi_bi, c.k * s_i),
            "loss32": F.mse_loss(bt_bt, c.k * s_t),
        }  # train.py:115-119
        diagonal = bi_bt.diagonal()  # train.py:121-123
        out["loss4"] = F.mse_loss(diagonal, c.k * torch.ones_like(diagonal))
        out["loss5"] = F.mse_loss(decoded_i, f_i)  # train.py:124
        out["loss6"] = F.mse_loss(decoded_t, f_t)  # train.py:125
        out["loss7"] = F.mse_loss(bi_bt, bi_bt.t())  # train.py:126
        out["total"] = (out["loss1"] + out["loss2"] + out["loss3"] + out["loss4"] + out["loss5"] + out["loss6"]
                        + SYMMETRY_WEIGHT * out["loss7"] + c.eta * (out["loss31"] + out["loss32"]))  # train.py:127
        return out

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Train both nets (and decoders) for ``epochs`` passes of minibatch SGD."""
        c = self.config
        dev = self.ctx.device
        self.heads, self.decoders = official_nets(train.image.shape[1], train.text.shape[1], c.hidden, bits, dev)
        optimisers = self.optimisers()
        gen = self.ctx.generator()
        n = len(train)
        for epoch in self.ctx.progress.track(range(c.epochs), c.epochs, f"dsah {bits} bits"):
            self.code_scale = math.pow(epoch + 1.0, 0.5)  # models.py:33,56; train.py:81-82
            for idx in minibatches(n, c.batch_size, gen, drop_last=True):
                idx = idx.to(dev)
                self.train_batch(train.image[idx], train.text[idx], optimisers)

    def optimisers(self) -> list:
        """``[opt_I, opt_T]``: Nesterov SGD on the image hash layer + decoder at ``lr_image`` and on the text
        net + decoder at ``lr_text`` (``train.py:63-72``)."""
        c = self.config
        groups = ((Modality.IMAGE, c.lr_image), (Modality.TEXT, c.lr_text))
        return [
            torch.optim.SGD([*self.heads[m].parameters(), *self.decoders[m].parameters()], lr=lr,
                            momentum=c.momentum, weight_decay=c.weight_decay, nesterov=True)
            for m, lr in groups
        ]

    def train_batch(self, image: Tensor, text: Tensor, optimisers: list) -> None:
        """One official minibatch update (``train.py:87-148``) on ``(m, d_image)`` and ``(m, d_text)``
        features at the current code scale: loss, one backward pass, one step of each optimiser."""
        step(optimisers, self.losses(image, text)["total"])

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` ``tanh(a h)`` outputs (continuous; sign gives codes)."""
        return torch.tanh(self.code_scale * encode_in_batches(self.heads[Modality(modality)], x))


def official_nets(image_dim: int, text_dim: int, hidden: int, bits: int, device: torch.device) -> tuple[dict, dict]:
    """``(heads, decoders)`` on ``device``: heads ``{IMAGE: Linear(d_image, bits), TEXT: Linear(d_text, hidden)
    -> ReLU -> Linear(hidden, bits)}`` (the official ``ImgNet.fc_encode``, ``models.py:14``, and ``TxtNet``
    ``fc1``/``fc2``, ``models.py:39,41``) and decoders ``{IMAGE: Linear(bits, d_text), TEXT: Linear(bits,
    d_image)}`` (``ImgNet.decode``, ``models.py:15``; ``TxtNet.decode``, ``models.py:42``), default
    initialisation, drawn in the official order: image hash layer, image decoder, fc1, fc2, text decoder."""
    image_head = torch.nn.Linear(image_dim, bits).to(device)
    image_decoder = torch.nn.Linear(bits, text_dim).to(device)
    text_head = mlp(text_dim, [hidden], bits).to(device)
    text_decoder = torch.nn.Linear(bits, image_dim).to(device)
    return ({Modality.IMAGE: image_head, Modality.TEXT: text_head},
            {Modality.IMAGE: image_decoder, Modality.TEXT: text_decoder})


# Every dataset block of settings.py sets the same values (WIKI: 18-20, MIRFlickr: 27-29, NUSWIDE: 37-39).
PER_DATASET = {"epochs": 200, "lr_image": 0.005, "lr_text": 0.005}


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``dsah`` teacher."""
    register(
        MethodSpec(
            name="dsah",
            kind="teacher",
            build=DSAH,
            config=DSAHConfig,
            paper="Yang, Wu, Zhang, Zhang, Li, Wang. Deep Semantic-Alignment Hashing for Unsupervised Cross-Modal "
            "Retrieval. ICMR 2020.",
            code="https://github.com/idejie/DSAH",
            dataset_defaults={
                "wiki": PER_DATASET,  # settings.py:18-20
                "mirflickr25k": PER_DATASET,  # settings.py:27-29
                "nus-wide-tc10": PER_DATASET,  # settings.py:37-39
                "nus-wide-tc21": PER_DATASET,  # settings.py:37-39 (the same NUS-WIDE)
            },
            summary="aligns code cosines with a fused image+text feature similarity, paired codes at K, with "
            "cross-modal decoders",
        )
    )

"""Student ``ssah``: Self-Supervised Adversarial Hashing, trained on a given similarity.

Paper: Chao Li, Cheng Deng, Ning Li, Wei Liu, Xinbo Gao, Dacheng Tao. "Self-Supervised
Adversarial Hashing Networks for Cross-Modal Retrieval." CVPR 2018.
Official code: https://github.com/lelan-li/SSAH (TensorFlow; ``SSAH.py``, ``tnet.py``,
``setting.py``, ``ops.py``).

Networks (as in ``tnet.py``, each ending in a ``SEMANTIC_EMBED = 512`` ReLU feature layer with two
outputs on top, a ``tanh`` hash layer and a ``sigmoid`` label layer):

- LabNet: label vector ``l_i`` (k) -> hidden -> 512 -> hash ``H_i`` (bits) and label ``l^_i`` (k);
- ImgNet / TxtNet: features -> hidden -> 512 -> hash ``F_i`` / ``G_i`` and label prediction;
- two discriminators (512 -> 512 -> 256 -> 1), one telling image semantic features from LabNet's,
  one text features from LabNet's.

Losses (the official ``build_model``; ``Theta(a, b) = 0.5 a b^T``, ``S`` the n x n similarity, the
other network's quantities are buffers over all n items, refreshed batch by batch):

- LabNet: ``alpha * pair(S, Theta(FeatL_all, FeatL_batch)) + gamma * pair(S, Theta(H_all, H_batch))
  + beta * ||sign(H_batch) - H_batch||^2 / 2 + eta * ||l - l^||^2 / 2``;
- ImgNet (TxtNet alike): ``alpha * pair(S, Theta(FeatL_all, FeatI_batch)) + gamma * pair(S,
  Theta(H_all, F_batch)) + beta * ||sign(F_batch) - F_batch||^2 / 2 + eta * ||l - l^_I||^2 / 2 +
  delta * sce(D_IL(FeatI_batch), 1)``;
- discriminators: mean sigmoid cross-entropy, LabNet features labelled 1, image/text features 0.

``pair`` is the paper's negative log-likelihood ``-sum(S Theta - log(1 + exp Theta))`` (the
official code instead minimises ``sum((S Theta - log(1 + exp Theta))^2) / 2`` with ``S`` scaled by
0.999; ``--set student.pairwise=squared`` selects that). Schedule as in the official ``train``:
per epoch, LabNet runs two inner rounds of ``label_passes`` and ``label_passes // 2`` passes, the
discriminators two rounds of ``dis_passes``, then ImgNet and TxtNet each three rounds of
``hash_passes``, ``// 2``, ``// 3`` passes; round r of epoch e runs at ``lr * lr_decay^(e + r)``
(official: rates listed as 10^-(x0 + 0.5 i), i.e. ``lr_decay = 10^-0.5``); a pass is ``n // batch``
Adam steps on random batches of 128. All ``Linear`` layers start from N(0, 0.01) weights and biases
(official ``tnet.py`` / ``ops.py``). Defaults: alpha = gamma = beta = eta = delta = 1 (official
``setting.py``); first-epoch rates LabNet 1e-2, discriminators 1e-3 (official), ImgNet and TxtNet
3e-3 (see below); 3 epochs of 4 / 1 / 6 passes (official 10 / 1 / 15, up to 500 epochs).

Why it stayed at chance before (fixed here; training-set validation: 70% of wiki's train split to
fit, the other 30% as query and database, labels strategy, 32 bits, script
``/tmp/zoo/ssah_trainval.py``): val mAP i2t/t2i 0.134/0.116 (chance ~0.116) before, 0.217/0.145 after
(text-to-LabNet-code mAP 0.43, i.e. t2i is bounded by the weak SIFT image codes). Three causes,
none the pairwise term on ReLU features as such (alpha = 0 stayed at chance too):

1. PyTorch's default initialisation with Adam at LabNet's 1e-2 kills ~98% of LabNet's ReLU
   semantic units within one pass; classes left with all-zero features share the bias code, so
   LabNet's H had 2-8 distinct codes for 10 classes (label-to-label mAP 0.24-0.86). With the
   official N(0, 0.01) init LabNet reaches 10 codes and mAP 1.0 (and the feature term then keeps
   classes apart: with alpha = 0 LabNet collapses to 2 codes, the bias mode of the
   90%-dissimilar likelihood).
2. Wiki's features are tiny (L1-normalised SIFT histograms, entries ~0.01; LDA topic
   proportions), so every hidden unit of ImgNet / TxtNet was bias-dominated and their codes
   nearly constant across items. Here each input dimension is z-scored with the training mean and
   std (``standardize``; the official code mean-centres images, and its inputs, pixels into a
   pretrained CNN and binary tags, are not tiny).
3. Far too few steps: one pass per network per epoch with rates decayed to 1% gave ImgNet/TxtNet
   ~300 small steps; the official schedule runs 15 / 7 / 5 passes per round. The ImgNet/TxtNet
   rate 3e-3 was chosen on the validation split above (1e-3: 0.188/0.160 with 3 epochs,
   10^-3.5: 0.148/0.166, 3e-3: 0.217/0.145; more LabNet passes (10): no gain).

Labels. SSAH's LabNet reads a label vector per item. With ``Supervision.soft_labels`` (the
``labels`` strategy: the multi-hot labels) these are used as in the official code. Without them
(every distillation strategy), the default ``without_labels = "ukd"`` follows UKD's student instead
(below). ``without_labels = "rows"`` feeds item i's row of S to LabNet as its label vector
(n-dimensional); it stayed at chance on a training-split validation (0.110/0.110) and is kept only
for comparison.

UKD's student (``without_labels = "ukd"``, the ``paired_*`` fields). UKD's released student is SSAH
without LabNet, discriminators and label terms: https://github.com/huhengtong/UKD_CVPR2020, read whole
at HEAD a96a9f7, ``student_model/`` (``student_train.py``, ``setting.py``, ``ops.py``, ``tnet.py``,
``vgg19.py``; lines below are in those files). Defaults, each the official value:

- Loss of ImgNet (TxtNet alike, with ``F`` and ``G`` swapped): ``gamma * sum((S_b theta - log(1 +
  e^theta))^2) / 2 + beta * ||B_b - H_b||^2 / 2`` with ``theta = H_b G^T / 2`` against the other net's
  output buffer over all n items (``student_train.py:84-89,94-99``; ``mse_criterion`` is
  ``reduce_mean(l2_loss(.))``, a half sum, ``ops.py:55-56``), ``gamma = beta = 1`` (``setting.py:81-82``),
  ``S_b`` the batch's rows of ``S`` with similar pairs at 0.999 (``setting.py:72``, read as ``Sim[ind].T``,
  ``student_train.py:195,234``): ``paired_pairwise = "squared"`` (:func:`pairwise_loss` applies the 0.999).
  No bit-balance term (``balance = 0``). ``B_b = sign(H_b)`` of the batch (``:210,243``).
- A first forward pass fills the batch's rows of the net's own buffer (``:196,204``; ``:235,238``) and
  gives ``B_b``; the step is on a second pass (``:208-216``), each with its own dropout mask.
- ``F`` and ``G`` start as standard normal draws (``:119-120``). Each of ``paired_epochs = 30`` epochs
  (``setting.py:75``) runs ``paired_rounds = 2`` rounds of one ImgNet pass then one TxtNet pass
  (``student_train.py:131-133``); a pass is ``n // 256`` steps (``paired_batch = 256``, ``setting.py:25``;
  ``student_train.py:184,225``), each on a fresh random batch (``:185-186,226-227``).
- Adam at the constant rate ``paired_lr = 1e-4`` for both nets (``:105,128-129``), with TF 1's update:
  one optimiser serves both nets (``:105-111``), so its ``beta1_power`` / ``beta2_power`` step count is
  shared and advances at every step of either net; epsilon 1e-8 added to ``sqrt(v)``
  (:func:`tf_adam_step`). No weight decay, no clipping (``ClipIfNotNone`` is unused).
- Networks, by the feature-input rule (DESIGN.md). The image net is VGG-19 fine-tuned on 224 x 224 pixels
  (``student_train.py:73-75``, ``vgg19.py:47-88``); UKD's own image features are relu7 of VGG-19
  (MIRFlickr: ``teacher_model/KNN/vgg19.py:88``, ReLU on, dropout off by ``KNN/read_data.py:44``; NUS-WIDE:
  ``KNN/read_feats_nus.py:79-88``), so on features only what follows
  relu7 remains: dropout with keep probability 0.5 in training (``vgg19.py:84-85``; ``keep_prob`` 0.5 at
  ``student_train.py:196,216``, 1.0 when encoding, ``:262``), ``Linear(d_image, bits)``, ``tanh``
  (``vgg19.py:87-88``), weight and bias from a normal with std 0.001 truncated at two std
  (``vgg19.py:128-135``) (:class:`UKDImageNet`). The text net is ``tnet.py`` whole at official width
  (:class:`UKDTextNet`): the multi-scale fusion of the tag vector (five average-pooled copies, windows 50,
  30, 15, 10, 5, each times a learnt scalar, ReLU, resized back by TF 1's bilinear resize), a fully
  connected layer to ``paired_text_hidden = 4096``, ReLU, local response normalisation (radius 2, bias 2,
  alpha 1e-4, beta 0.75), ``Linear(4096, bits)``, ``tanh``; all weights and biases N(0, 0.01^2).
- Inputs raw (``paired_standardize = False``): the official code feeds pixels (mean-subtracted inside
  VGG-19, part of the feature extractor) and tag vectors as they are (``student_train.py:230``).
- Codes: ``sign`` of the outputs without dropout (``:250-275``).

Departures of this mode, and why:

- Feature inputs: VGG-19 cannot be fine-tuned on pre-extracted features; only the layers after relu7 are
  trained (the one departure every pixel-based method shares). On Wiki the image features are 128-d SIFT
  histograms, not relu7; the same hash layer reads them.
- A pooling window longer than the tag vector (Wiki's 10-d LDA topics: windows 50, 30 and 15; the tests'
  12-d text) pools nothing; TF's VALID pooling then yields an empty tensor and the official net cannot be
  built. Its block is 0 here (that channel of the first layer sees zeros).
- ``n < paired_batch`` (tiny test data only): the batch is all n items and a pass is one step (officially
  ``n // 256 = 0`` steps).
- Dropout masks and batches come from the run's generator (TF's and numpy's own RNGs officially).
- No evaluation after every epoch (the official ``test``, ``:148-149``, changes nothing in training).

Before these settings (cmhbench up to 27b392c) this mode used NLL, DCMH's balance term (0.01), Adam at
1e-3 for 5 epochs of 11 passes per net with all ImgNet passes before all TxtNet passes, batch 128, z-scored
inputs and ``d -> 1024 -> 512 -> bits`` MLPs for both modalities.

S is read only by rows of a minibatch against all n items (``supervision.rows(device)[idx]``,
``(batch, n)``), also where it stands in for the labels (``rows`` mode), so no n x n matrix is built.

Departures of the label mode (``soft_labels`` given), and why:

- Feature-based MLP heads ``d -> hidden -> 512`` (official: fine-tuned CNN-F for images; a
  multi-scale text fusion module and 4096-wide layers for text and labels); default hidden width
  1024 (image/text) and 512 (LabNet) for CPU time; no local response normalisation (with the
  official constants it is a near-constant rescaling).
- The adversarial term back-propagates into ImgNet / TxtNet as in the paper; in the official code
  it is computed from a fed-in copy of the features and so has no effect on them.
- No early stopping on a rising training loss (the official code checks the full-data loss after
  each pass); fixed pass counts, fewer of them than official for CPU time (~60 s per wiki run).
- ImgNet / TxtNet rates start at 3e-3 (official 10^-4.5 for fine-tuning a pretrained CNN and
  10^-3.5 for the text net; chosen on training-set validation, see above); inputs z-scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence


from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, Supervision
from cmhbench.lazy import F, nn, torch, torch_class
from cmhbench.registry import MethodSpec
from cmhbench.training import bit_balance, encode_in_batches, mlp, step

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class SSAHConfig:
    """SSAH hyperparameters (official values unless noted)."""

    alpha: float = hp(1.0, "weight of the pairwise term on semantic features", ge=0)
    gamma: float = hp(1.0, "weight of the pairwise term on hash outputs", ge=0)
    beta: float = hp(1.0, "weight of the quantization term", ge=0)
    eta: float = hp(1.0, "weight of the label-prediction term", ge=0)
    delta: float = hp(1.0, "weight of the adversarial term for ImgNet / TxtNet", ge=0)
    pairwise: str = hp("nll", "nll (paper) or squared (official code)", choices=("nll", "squared"))
    lr_label: float = hp(1e-2, "Adam learning rate of LabNet in the first epoch (official)", gt=0)
    lr_image: float = hp(3e-3, "Adam learning rate of ImgNet in the first epoch (official 10^-4.5, fine-tuning a CNN)", gt=0)
    lr_text: float = hp(3e-3, "Adam learning rate of TxtNet in the first epoch (official 10^-3.5)", gt=0)
    lr_dis: float = hp(1e-3, "Adam learning rate of the discriminators in the first epoch (official)", gt=0)
    lr_decay: float = hp(10**-0.5, "factor on every learning rate per epoch and per inner round (official 10^-0.5)", gt=0, le=1)
    batch_size: int = hp(128, "items per minibatch", ge=1)
    epochs: int = hp(3, "outer epochs (official: 500, but its rates are negligible after ~10)", ge=1)
    label_passes: int = hp(4, "LabNet passes in the first inner round; the second runs half as many (official: 10)", ge=0)
    dis_passes: int = hp(1, "discriminator passes in each of two inner rounds (official: 1)", ge=0)
    hash_passes: int = hp(6, "ImgNet / TxtNet passes in the first of three inner rounds, then 1/2 and 1/3 as many (official: 15)", ge=1)
    without_labels: str = hp(
        "ukd", "when the strategy gives no soft labels: ukd (UKD's official SSAH student: no LabNet, ImgNet and "
        "TxtNet paired directly on S) or rows (LabNet reads rows of S)", choices=("ukd", "rows"))
    paired_lr: float = hp(1e-4, "ukd mode: constant Adam rate of ImgNet and TxtNet (UKD student_train.py:128-129)", gt=0)
    paired_epochs: int = hp(30, "ukd mode: epochs (UKD setting.py:75)", ge=1)
    paired_rounds: int = hp(2, "ukd mode: ImgNet-then-TxtNet rounds per epoch, one pass each (UKD student_train.py:131-133)", ge=1)
    paired_batch: int = hp(256, "ukd mode: items per minibatch (UKD setting.py:25)", ge=1)
    paired_pairwise: str = hp("squared", "ukd mode: pairwise loss, squared (UKD student_train.py:85,95, ops.py:55-56) or nll", choices=("nll", "squared"))
    paired_dropout: float = hp(0.5, "ukd mode: dropout before the image hash layer (UKD keep_prob 0.5, student_train.py:196,216)", ge=0, lt=1)
    paired_text_hidden: int = hp(4096, "ukd mode: width of the text net's hidden layer (UKD tnet.py:9-10)", ge=1)
    paired_standardize: bool = hp(False, "ukd mode: z-score inputs with training mean and std (UKD: raw inputs)")
    balance: float = hp(0.0, "ukd mode: weight of DCMH's bit-balance term ||F^T 1||^2 (0: not in UKD)", ge=0)
    standardize: bool = hp(True, "z-score each input dimension with training mean and std (see docstring)")
    semantic_dim: int = hp(512, "width of the semantic feature layer (SEMANTIC_EMBED)", ge=1)
    label_hidden: int = hp(512, "hidden width of LabNet (official: 4096)", ge=1)
    image_hidden: int = hp(1024, "hidden width of ImgNet before the semantic layer (official: CNN-F 4096)", ge=1)
    text_hidden: int = hp(1024, "hidden width of TxtNet (official: 4096)", ge=1)


@torch_class
def SSAHNet():
    """The ``nn.Module`` class ``SSAHNet``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class SSAHNet(nn.Module):
        """``in_dim -> hidden -> semantic (ReLU)``, then ``tanh`` hash and ``sigmoid`` label heads."""

        def __init__(self, in_dim: int, hidden: int, semantic: int, bits: int, classes: int) -> None:
            super().__init__()
            self.body = nn.Sequential(mlp(in_dim, [hidden], semantic), nn.ReLU())
            self.hash = nn.Linear(semantic, bits)
            self.label = nn.Linear(semantic, classes)
            official_init(self)

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            """``(m, in_dim)`` -> hash ``(m, bits)`` in (-1, 1), feature ``(m, semantic)``, label ``(m, classes)`` in (0, 1)."""
            feat = self.body(x)
            return torch.tanh(self.hash(feat)), feat, torch.sigmoid(self.label(feat))

    return SSAHNet


def pairwise_loss(s: Tensor, theta: Tensor, kind: str = "nll") -> Tensor:
    """Summed pairwise loss of similarities ``s`` given inner products ``theta`` (same shape).

    ``nll``: ``-sum(s * theta - log(1 + exp(theta)))`` (the paper); ``squared``:
    ``sum((0.999 s * theta - log(1 + exp(theta)))^2) / 2`` (the official code's ``mse_criterion``).
    """
    if kind == "nll":
        return -(s * theta - F.softplus(theta)).sum()
    return 0.5 * (0.999 * s * theta - F.softplus(theta)).pow(2).sum()


def official_init(module: nn.Module, std: float = 0.01) -> nn.Module:
    """Draw every ``Linear`` weight and bias of ``module`` from N(0, std^2) (official ``tnet.py``); returns it."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.normal_(m.bias, std=std)
    return module


def discriminator(semantic: int) -> nn.Sequential:
    """``semantic -> 512 -> 256 -> 1`` logit (official ``dis_net_IL`` / ``dis_net_TL``, keep_prob 1)."""
    return official_init(mlp(semantic, [512, 256], 1))


def inner_rounds(passes: int, rounds: int) -> list[tuple[int, int]]:
    """The official inner schedule: ``[(r, passes // (r + 1)) for r < rounds]`` (round r runs at rate decay^(epoch + r))."""
    return [(r, passes // (r + 1)) for r in range(rounds)]


@torch_class
def UKDImageNet():
    """The ``nn.Module`` class ``UKDImageNet``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class UKDImageNet(nn.Module):
        """What follows relu7 in UKD's VGG-19 (``vgg19.py:84-88``): dropout, ``Linear(d, bits)``, ``tanh``.

        Weights and biases from a normal with std 0.001 truncated at two std (``vgg19.py:128-133``;
        ``fc_hash`` is not in the pretrained file, so it keeps that draw, ``:138-141``)."""

        def __init__(self, in_dim: int, bits: int, dropout: float) -> None:
            super().__init__()
            self.dropout = dropout
            self.hash = nn.Linear(in_dim, bits)
            for p in (self.hash.weight, self.hash.bias):
                nn.init.trunc_normal_(p, std=0.001, a=-0.002, b=0.002)

        def forward(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
            """``(m, d)`` -> ``(m, bits)`` in (-1, 1); in training mode a fresh dropout mask drawn from ``generator``."""
            return torch.tanh(self.hash(dropout(x, self.dropout, self.training, generator)))

    return UKDImageNet


@torch_class
def UKDTextNet():
    """The ``nn.Module`` class ``UKDTextNet``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class UKDTextNet(nn.Module):
        """UKD's text net, ``student_model/tnet.py`` whole (``txt_net``, ``MultiScaleTxt``, ``interp_block``).

        The ``d``-long tag vector and five pooled copies (average over windows of 50, 30, 15, 10 and 5
        entries, ``tnet.py:44-56,32-35``; each times a learnt scalar, ReLU, resized back to ``d`` by TF 1's
        bilinear resize, ``:36-42``) form ``(d, 6)``; a ``1 x d`` convolution to ``hidden`` = 4096 channels
        (a fully connected layer on the ``6 d`` entries), ReLU, local response normalisation
        (radius 2, bias 2, alpha 1e-4, beta 0.75), ``Linear(hidden, bits)``, ``tanh`` (``:9-30``). Every
        weight and bias, the five scalars included, drawn from N(0, 0.01^2) (``tf.random_normal(...) * 0.01``).
        """

        WINDOWS = (50, 30, 15, 10, 5)  # 5 * level for levels 10, 6, 3, 2, 1 (tnet.py:45-49), in concat order reversed

        def __init__(self, in_dim: int, hidden: int, bits: int) -> None:
            super().__init__()
            self.in_dim = in_dim
            self.scales = nn.Parameter(torch.randn(len(self.WINDOWS)) * 0.01)
            for w in self.WINDOWS:
                self.register_buffer(f"resize{w}", tf1_bilinear_matrix(in_dim // w, in_dim), persistent=False)
            self.fc1 = nn.Linear(6 * in_dim, hidden)
            self.hash = nn.Linear(hidden, bits)
            official_init(self)

        def multi_scale(self, x: Tensor) -> Tensor:
            """``(m, d)`` -> ``(m, d, 6)``: the input, then the blocks of levels 1, 2, 3, 6, 10 (``tnet.py:50-55``).

            A window longer than ``d`` pools nothing (TF's VALID pooling then fails; here its block is 0)."""
            m = x.shape[0]
            blocks = []
            for i, w in enumerate(self.WINDOWS):
                cells = self.in_dim // w
                if cells == 0:
                    blocks.append(x.new_zeros(m, self.in_dim))
                    continue
                pooled = x[:, : cells * w].reshape(m, cells, w).mean(2)
                blocks.append(F.relu(pooled * self.scales[i]) @ getattr(self, f"resize{w}"))
            return torch.stack([x, *reversed(blocks)], dim=2)

        def forward(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
            """``(m, d)`` -> ``(m, bits)`` in (-1, 1) (no dropout in the text net; ``generator`` unused)."""
            h = F.relu(self.fc1(self.multi_scale(x).flatten(1)))
            h = F.local_response_norm(h.unsqueeze(2), size=5, alpha=5 * 1e-4, beta=0.75, k=2.0).squeeze(2)
            return torch.tanh(self.hash(h))

    return UKDTextNet


def tf1_bilinear_matrix(in_size: int, out_size: int) -> Tensor:
    """``(in_size, out_size)`` matrix ``R`` with ``v @ R`` = TF 1's ``resize_images(v, out_size)`` of a
    length-``in_size`` row (bilinear, ``align_corners = False``, no half-pixel centres: output x reads
    input ``x * in_size / out_size``, between its floor and the next entry, clamped at the end)."""
    r = torch.zeros(max(in_size, 1), out_size)
    if in_size == 0:
        return r[:0]
    scale = in_size / out_size
    for x in range(out_size):
        src = x * scale
        lo = int(src)
        hi = min(lo + 1, in_size - 1)
        frac = src - lo
        r[lo, x] += 1.0 - frac
        r[hi, x] += frac
    return r


def dropout(x: Tensor, p: float, training: bool, generator: Optional[torch.Generator]) -> Tensor:
    """Inverted dropout as TF's ``tf.nn.dropout(x, keep_prob = 1 - p)``, its mask drawn from ``generator``."""
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=generator).to(x.device) >= p
    return x * keep / (1.0 - p)


def tf_adam_step(params: Sequence[Tensor], state: dict, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
    """One TF 1 ``AdamOptimizer`` update of ``params`` that have a gradient: ``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``,
    ``p -= lr_t m / (sqrt(v) + eps)``. ``state`` holds the moments per parameter and the step count ``t``,
    which is shared by everything the one optimiser updates (TF keeps one ``beta1_power`` /
    ``beta2_power`` per optimiser and advances it at every ``apply_gradients``; UKD's ImgNet and TxtNet
    share ``optimizer``, ``student_train.py:105-111``)."""
    state["t"] = t = state.get("t", 0) + 1
    lr_t = lr * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                continue
            m, v = state.setdefault(p, (torch.zeros_like(p), torch.zeros_like(p)))
            m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
            p.addcdiv_(m, v.sqrt().add_(eps), value=-lr_t)


class SSAH:
    """LabNet, ImgNet, TxtNet and two modality discriminators trained as in the official SSAH."""

    def __init__(self, config: SSAHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.nets: dict[Modality, nn.Module] = {}
        self.scalers: dict[Modality, tuple[Tensor, Tensor]] = {}
        self._ukd_nets = False  # True once fitted in ukd mode (nets return the hash output alone)

    def _hash_step(self, net, x, labels, idx, s, h_all, feat_all, opt, dis: Optional[nn.Module], bufs):
        """One Adam step of LabNet (``dis`` None) or ImgNet/TxtNet against LabNet's buffers."""
        c = self.config
        hsh, feat, lab = net(x[idx])
        bufs[0][idx] = hsh.detach()
        bufs[1][idx] = feat.detach()
        s_b = s[idx]
        loss = (
            c.alpha * pairwise_loss(s_b, 0.5 * feat @ feat_all.T, c.pairwise)
            + c.gamma * pairwise_loss(s_b, 0.5 * hsh @ h_all.T, c.pairwise)
            + c.beta * 0.5 * (torch.sign(hsh.detach()) - hsh).pow(2).sum()
            + c.eta * 0.5 * (labels[idx] - lab).pow(2).sum()
        )
        if dis is not None and c.delta > 0:
            logit = dis(feat).squeeze(1)
            loss = loss + c.delta * F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
        step([opt], loss)

    def fit(self, train: PairedFeatures, supervision: Supervision, bits: int) -> None:
        """Train LabNet, discriminators, ImgNet and TxtNet in turn for ``epochs`` epochs."""
        c = self.config
        dev = self.ctx.device
        n = len(train)
        s = supervision.rows(dev)  # S read by row blocks s[idx], (batch, n); never the dense matrix
        paired_only = supervision.soft_labels is None and c.without_labels == "ukd"
        self._ukd_nets = paired_only
        labels = supervision.soft_labels.to(dev, torch.float32) if supervision.soft_labels is not None else s
        k = labels.shape[1]
        standardize = c.paired_standardize if paired_only else c.standardize
        for m in Modality:
            x = train.get(m).to(dev, torch.float32)
            mu, sd = x.mean(0), x.std(0)
            self.scalers[m] = (mu, torch.where(sd > 0, sd, torch.ones_like(sd))) if standardize else (torch.zeros_like(mu), torch.ones_like(sd))
        train = PairedFeatures(self._scale(train.image, Modality.IMAGE), self._scale(train.text, Modality.TEXT))
        if paired_only:
            self._fit_ukd(train, s, bits)
            return
        lab_net = SSAHNet(k, c.label_hidden, c.semantic_dim, bits, k).to(dev)
        img_net = SSAHNet(train.image.shape[1], c.image_hidden, c.semantic_dim, bits, k).to(dev)
        txt_net = SSAHNet(train.text.shape[1], c.text_hidden, c.semantic_dim, bits, k).to(dev)
        dis_i, dis_t = discriminator(c.semantic_dim).to(dev), discriminator(c.semantic_dim).to(dev)
        self.nets = {Modality.IMAGE: img_net, Modality.TEXT: txt_net}
        gen = self.ctx.generator()
        h_buf = torch.randn(n, bits, generator=gen).to(dev)
        fl_buf = torch.randn(n, c.semantic_dim, generator=gen).to(dev)
        own = {m: (torch.zeros(n, bits, device=dev), torch.zeros(n, c.semantic_dim, device=dev)) for m in Modality}
        opts = {
            "lab": torch.optim.Adam(lab_net.parameters(), lr=c.lr_label),
            "img": torch.optim.Adam(img_net.parameters(), lr=c.lr_image),
            "txt": torch.optim.Adam(txt_net.parameters(), lr=c.lr_text),
            "dis": torch.optim.Adam([*dis_i.parameters(), *dis_t.parameters()], lr=c.lr_dis),
        }
        starts = {name: opt.param_groups[0]["lr"] for name, opt in opts.items()}
        batch = min(c.batch_size, n)
        steps = max(1, n // batch)
        draw = lambda: torch.randperm(n, generator=gen)[:batch].to(dev)  # noqa: E731

        def set_rate(name: str, epoch: int, r: int) -> None:
            for group in opts[name].param_groups:
                group["lr"] = starts[name] * c.lr_decay ** (epoch + r)

        for epoch in self.ctx.progress.track(range(c.epochs), c.epochs, f"ssah {bits} bits"):
            for r, passes in inner_rounds(c.label_passes, 2):
                set_rate("lab", epoch, r)
                for _ in range(passes * steps):
                    self._hash_step(lab_net, labels, labels, draw(), s, h_buf, fl_buf, opts["lab"], None, (h_buf, fl_buf))
            for r, passes in inner_rounds(c.dis_passes, 2):
                set_rate("dis", epoch, r)
                for _ in range(passes * steps):
                    self._dis_step(lab_net, img_net, txt_net, dis_i, dis_t, train, labels, draw(), opts["dis"])
            for name, net, x, dis, mod in (("img", img_net, train.image, dis_i, Modality.IMAGE), ("txt", txt_net, train.text, dis_t, Modality.TEXT)):
                for r, passes in inner_rounds(c.hash_passes, 3):
                    set_rate(name, epoch, r)
                    for _ in range(passes * steps):
                        self._hash_step(net, x, labels, draw(), s, h_buf, fl_buf, opts[name], dis, own[mod])

    def _fit_ukd(self, train: PairedFeatures, s, bits: int) -> None:
        """UKD's SSAH student (``student_model/student_train.py``): ImgNet and TxtNet alone, paired on S.

        ``F`` and ``G`` (the two nets' output buffers over the n items) start as standard normal draws
        (``:119-120``); each of ``paired_epochs`` epochs runs ``paired_rounds`` rounds of one ImgNet pass
        then one TxtNet pass (``:126-133``), a pass being ``n // batch`` steps on fresh random batches
        (``:184-186,225-227``), all at the constant rate ``paired_lr`` (``:128-129``)."""
        c = self.config
        dev, n = self.ctx.device, len(train)
        img_net = UKDImageNet(train.image.shape[1], bits, c.paired_dropout).to(dev)
        txt_net = UKDTextNet(train.text.shape[1], c.paired_text_hidden, bits).to(dev)
        self.nets = {Modality.IMAGE: img_net, Modality.TEXT: txt_net}
        gen = self.ctx.generator()
        out = {m: torch.randn(n, bits, generator=gen).to(dev) for m in Modality}  # F, then G
        batch = min(c.paired_batch, n)
        draw = lambda: torch.randperm(n, generator=gen)[:batch].to(dev)  # noqa: E731
        adam: dict = {}
        for _ in self.ctx.progress.track(range(c.paired_epochs), c.paired_epochs, f"ssah {bits} bits"):
            for _ in range(c.paired_rounds):
                for mod, other in ((Modality.IMAGE, Modality.TEXT), (Modality.TEXT, Modality.IMAGE)):
                    x = train.get(mod)
                    for _ in range(max(1, n // batch)):
                        self._ukd_step(self.nets[mod], x, draw(), s, out[other], out[mod], adam, gen)

    def _ukd_step(self, net, x, idx, s, other_out, own_out, adam: dict, gen) -> None:
        """One step of UKD's ``loss_i`` / ``loss_t`` (``student_train.py:84-89,94-99``, ``ops.py:55-56``):
        ``gamma * sum((0.999 S_b theta - log(1 + e^theta))^2) / 2 + beta * ||B_b - H_b||^2 / 2``,
        ``theta = H_b other^T / 2`` over all n columns, ``S_b`` the batch's rows of S (``S = Sim[ind].T``,
        ``:195,234``). As officially, a first forward pass (its own dropout mask) fills the batch's rows of
        the net's buffer and gives ``B_b = sign`` of them (``:196,204,210``, ``:235,238,243``); the loss is on a
        second pass with a fresh mask (``:208-216``). Plus ``balance * ||H_all^T 1||^2`` when ``balance > 0``
        (not in UKD)."""
        c = self.config
        if getattr(net, "dropout", 0) > 0:
            with torch.no_grad():
                first = net(x[idx], gen)
            hsh = net(x[idx], gen)
        else:  # the text net has no dropout: both official passes give the same outputs
            hsh = net(x[idx], gen)
            first = hsh.detach()
        own_out[idx] = first
        loss = (c.gamma * pairwise_loss(s[idx], 0.5 * hsh @ other_out.T, c.paired_pairwise)
                + c.beta * 0.5 * (torch.sign(first) - hsh).pow(2).sum())
        if c.balance > 0:
            loss = loss + c.balance * bit_balance(hsh, own_out, idx)
        net.zero_grad(set_to_none=True)
        loss.backward()
        tf_adam_step(list(net.parameters()), adam, c.paired_lr)

    @staticmethod
    def _dis_step(lab_net, img_net, txt_net, dis_i, dis_t, train, labels, idx, opt) -> None:
        """One Adam step of both discriminators: LabNet features are real (1), image/text fake (0)."""
        with torch.no_grad():
            fl, fi, ft = lab_net(labels[idx])[1], img_net(train.image[idx])[1], txt_net(train.text[idx])[1]
        sce = F.binary_cross_entropy_with_logits
        li, lt = dis_i(fi).squeeze(1), dis_t(ft).squeeze(1)
        l1, l2 = dis_i(fl).squeeze(1), dis_t(fl).squeeze(1)
        loss = (sce(li, torch.zeros_like(li)) + sce(lt, torch.zeros_like(lt))
                + sce(l1, torch.ones_like(l1)) + sce(l2, torch.ones_like(l2))) / 4
        step([opt], loss)

    def _scale(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, d)`` standardised with the training statistics (identity if off)."""
        mu, sd = self.scalers[Modality(modality)]
        return (x.to(mu.device, torch.float32) - mu) / sd

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` tanh hash outputs; sign gives codes."""
        net = self.nets[Modality(modality)]
        return encode_in_batches(net if self._ukd_nets else _HashOnly(net), self._scale(x, modality))


@torch_class
def _HashOnly():
    """The ``nn.Module`` class ``_HashOnly``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class _HashOnly(nn.Module):
        """Wraps an :class:`SSAHNet` to return only its hash output."""

        def __init__(self, net: SSAHNet) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Tensor) -> Tensor:
            """``(m, d)`` -> ``(m, bits)``."""
            return self.net(x)[0]

    return _HashOnly


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``ssah`` student."""
    register(
        MethodSpec(
            name="ssah",
            kind="student",
            build=SSAH,
            config=SSAHConfig,
            paper="Li, Deng, Li, Liu, Gao, Tao. Self-Supervised Adversarial Hashing Networks for "
            "Cross-Modal Retrieval. CVPR 2018.",
            code="https://github.com/lelan-li/SSAH",
            summary="label network supervises image/text nets via pairwise likelihood on features and codes, "
            "label prediction, quantization and modality discriminators (labels: soft_labels or rows of S)",
        )
    )

"""Student ``ssah``: Self-Supervised Adversarial Hashing, trained on a given similarity.

Paper: Chao Li, Cheng Deng, Ning Li, Wei Liu, Xinbo Gao, Dacheng Tao. "Self-Supervised
Adversarial Hashing Networks for Cross-Modal Retrieval." CVPR 2018.
Official code: https://github.com/lelan-li/SSAH (TensorFlow 1), read whole at HEAD 8780b20:
``setting.py``, ``SSAH.py``, ``tnet.py``, ``ops.py``, ``load_data.py``, ``utils/calc_hammingranking.py``,
``Main.py``. The label mode below (``Supervision.soft_labels`` given: the ``labels`` strategy) follows it;
every default is the official value, cited file:line. TensorFlow 1 cannot run here, so the official
lines were matched by reading and are written out in numpy/torch in ``tests/test_ssah_official.py``.

Networks (``tnet.py``; every weight and bias drawn from N(0, 0.01^2), ``tf.random_normal(...) * 0.01``;
``SEMANTIC_EMBED = 512``, ``setting.py:21``), each giving a ReLU semantic feature, a ``tanh`` hash output
and a ``sigmoid`` label prediction (:class:`SSAHNet`):

- LabNet (``lab_net``, ``:70-110``): label vector (k) -> ``Linear(k, 4096)`` (``LAYER1_NODE``, ``:71``),
  ReLU, local response normalisation (radius 2, bias 2, alpha 1e-4, beta 0.75, ``:81``; :func:`tf_lrn`),
  ``Linear(4096, 512)``, ReLU = feature; hash ``Linear(512, bits)`` and label ``Linear(512, k)`` on it.
- ImgNet (``img_net``, ``:6-68``): CNN-F (``imagenet-vgg-f.mat``, ``setting.py:12``) up to relu7, then
  ``fc8 = Linear(4096, 512)``, ReLU = feature, hash ``fc9`` and label ``fc10`` on it. By the feature-input
  rule (README, DESIGN.md) only what follows relu7 is kept on features: ``Linear(d_image, 512)``, ReLU, the
  two heads (``image_hidden = 0``: no hidden layer).
- TxtNet (``txt_net``, ``:155-198``), whole at official width: the multi-scale stack of the tag vector
  (``MultiScaleTxt``, ``:200-224``: the vector and five copies average-pooled over windows of 50, 30, 15,
  10 and 5 entries, each times a learnt scalar, ReLU, resized back by TF 1's bilinear resize;
  :class:`MultiScaleText`), ``Linear(6 d, 4096)`` (the ``1 x d x 6`` convolution, ``:158-162``), ReLU,
  LRN, ``Linear(4096, 512)``, ReLU = feature; LRN again and the two heads on that (``:178-196``).
- Two discriminators (``dis_net_IL`` / ``dis_net_TL``, ``:113-153``; ``ops.py:33-39``):
  ``512 -> 512 -> 256 -> 1``, ReLU, dropout at keep probability 1.0 (always fed 1.0).

Losses (``SSAH.py:96-130``; ``mse_criterion`` is half a sum, ``ops.py:55-56``; ``Sim`` the n x batch label
overlap times 0.999, ``ops.py:67-69``; ``pair(S, theta) = sum((S theta - log(1 + e^theta))^2) / 2``,
``pairwise = "squared"``, the paper's likelihood form being ``nll``):

- LabNet: ``alpha pair(S, FeatL_all FeatL_b^T / 2) + gamma pair(S, H_all HshL_b^T / 2) + beta
  ||sign(HshL_b) - HshL_b||^2 / 2 + eta ||L_b - LabL_b||^2 / 2``, ``FeatL_all`` / ``H_all`` LabNet's own
  buffers over the n items with the batch's rows just written (``:104-110,310-320``);
- ImgNet (TxtNet alike): the same four terms with the image net's batch outputs against LabNet's buffers,
  plus ``delta sce(D_IL(I_fea_batch), 1)`` (``:113-120``). ``I_fea_batch`` is a fed-in placeholder (``:78``,
  fed ImgNet's whole feature buffer, ``:399``; TxtNet's batch features, ``:442``), so that term has no
  gradient into ImgNet / TxtNet: it only moves the discriminator's weights, whose gradients
  ``optimizer.compute_gradients(loss_i)`` includes (``:140-144``) (``adversarial = "official"``);
- discriminators: the mean of four mean sigmoid cross-entropies, LabNet features 1, image / text 0
  (``:96-101``).

Schedule (``train``, ``SSAH.py:132-249``), defaults ``setting.py:58-76``: ``epochs = 500``; per epoch, LabNet
two rounds of 10 and 5 passes (``k_lab_net = 10``, ``range(k / (idx + 1))``, ``:184-187``), the
discriminators two rounds of 1 pass (``k_dis_net = 1``, ``:202-205``), ImgNet then TxtNet three rounds of 15,
7 and 5 passes (``k_img_net = k_txt_net = 15``, ``:216-219,234-237``). Round r of epoch e runs at entry
``e + r`` of the rate lists ``0.1 ** arange(x0, 100, 0.5)`` (``var['lr_x'][epoch:][idx]``, ``:185-186,203-204,
217-218,235-236``): LabNet ``10^-2``, ImgNet ``10^-4.5``, TxtNet ``10^-3.5``, discriminators ``10^-3``
(``setting.py:73-76``), i.e. ``lr * lr_decay^(e + r)`` with ``lr_decay = 10^-0.5``, as float32
(placeholders, ``:62-66``). A pass is ``n // 128`` steps (``batch_size``, ``setting.py:23``; ``:298``), each on
the first 128 of a fresh permutation (``:299-300``). A round ends early (``early_stop``) when the full
training loss has not fallen: LabNet after every pass from the third on (``calc_labnet_loss``, ``:191,196-197,
483-495``), ImgNet / TxtNet from the fourth on, comparing the last two losses recorded after passes 0, 2,
4, ... (``calc_loss``, ``:223-231,240-247,498-511``); float64 over all n pairs, by row blocks here. Optimisers
(``:134-147``): one ``AdamOptimizer`` for LabNet, ImgNet and TxtNet, whose step count (TF's
``beta1_power`` / ``beta2_power``) every step of any of them advances, and one for the discriminators;
TF 1's update (:func:`tf_adam_step`). Buffers ``F``, ``G``, ``H``, the label predictions and the features
start as standard normal draws (``:159-167``). Inputs as they are (``standardize = False``): the official
code mean-centres pixels for CNN-F (``:379-380``), part of the feature extractor, and feeds tags as read
(``:421``). Codes: ``sign`` of the hash outputs (``generate_code``, ``:447-481``).

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

S is read only by rows, those of a minibatch against all n items (``supervision.rows(device)[idx]``,
``(batch, n)``, also where it stands in for the labels in ``rows`` mode) and blocks of rows (32 MiB each) for the
early-stopping losses, so no n x n matrix is built.

What these settings do on Wiki (labels strategy, 32 bits, seed 0; ``tests/test_ssah_official.py`` checks the
pieces against the official lines, so this is read as the official method's behaviour on these features): they
collapse. LabNet's ReLU features die in epoch 0 (after one epoch 4.5e-6 of its buffered features are > 0): near
``theta = 0`` the squared pairwise term pushes the feature products of the 90% dissimilar pairs down harder than
the 10% similar pairs pull them up, and Adam at 10^-2 moves every weight of a layer drawn from N(0, 0.01^2) by
about 10^-2 a step. With LabNet's features at 0 the feature term tells ImgNet and TxtNet nothing, their hash
outputs stay at tanh of their biases (std over the items 8e-4 and 7e-4) and every image and every text gets the
same code: mAP@all i2t / t2i 0.111 / 0.111, chance. The full fit took 951 s on a shared 2-core machine (one
thread): about 50 s for each of the first epochs, 24 s once early stopping shortens the rounds.

Departures of the label mode (``soft_labels`` given), and why:

- Feature inputs: CNN-F cannot be fine-tuned on pre-extracted features; only the layers after relu7 are
  trained (the one departure every pixel-based method shares). On Wiki the image features are 128-d SIFT
  histograms, not fc7; the same layers read them.
- A pooling window longer than the tag vector (Wiki's 10-d LDA topics: windows 50, 30 and 15) pools nothing;
  TF's VALID pooling then fails and the official net cannot be built. Its block is 0 here.
- Length of training. ``epochs = 500`` as ``setting.py:58``, but the official run cannot get there: the
  ImgNet rate list has 191 entries (``np.arange(4.5, 100, 0.5)``, ``setting.py:74``) and round 2 of epoch 189
  reads entry 191 (``:217-218``), an ``IndexError``; the codes it leaves are those written by ``test()`` after
  epoch 188 (``:251-252,281-289``). Long before that its rates stop mattering, and here training ends at the
  first epoch from which no step of any net can change a parameter that reaches a code
  (:func:`steps_round_away`: an Adam step moves a parameter by at most 7.27 times the rate, which then
  rounds away in float32 for every parameter of the three nets); the official run's later epochs leave
  those parameters, hence its codes, as they are too. On Wiki (32 bits) that is after 30 epochs (seed 0; 28 for seeds 1, 2)
  (``epochs_run`` records it); later official epochs would only draw batches and refresh buffers.
- The discriminators. In the official wiring nothing they compute reaches ImgNet, TxtNet or LabNet (the
  adversarial terms read fed-in features, see above), so by default (``train_inert = False``) they are not
  trained; their batches are still drawn, so every other random draw is the same, and the codes are
  identical to those with ``train_inert = True``, which runs their official updates (their own two rounds,
  ``SSAH.py:199-213``, and their gradient in each ImgNet / TxtNet step at that net's rate, ``:140-144,399,442``;
  ``tests/test_ssah_official.py`` checks the codes are equal). With ``dis_passes > 2`` and
  ``train_inert = False`` the discriminators' own early stop (``:212-213``) cannot be evaluated and all their
  passes are drawn.
- LabNet runs once per distinct label vector of a batch and its outputs are spread back to the batch
  (:func:`_forward_distinct`; Wiki has 10), which gives the same values and gradients up to float rounding.
- Random streams: batches, the initial buffers and weights come from the run's generator and torch's
  (numpy's and TF's officially). The buffers are float32 (official float64 arrays of float32 outputs, and
  float64 initial draws); the early-stopping losses are summed in float64 as there.
- Not done: the evaluation and checkpoint after every epoch (``:251-255``; they change nothing in training),
  and ``B = sign(H + G + F)`` (``:169,190,249``), never read by a loss.
- The LRN, the bilinear resize and Adam are written out (TF 1's formulas, not its kernels).
- ``without_labels = "rows"`` (LabNet reads rows of S) has no official counterpart; it uses the same
  networks and schedule, with n-dimensional label vectors.

Before these settings (cmhbench up to 7075d3e, the parent of 11b8039) the label mode ran 3 epochs of 4 / 1 / 6 passes, ImgNet and
TxtNet at 3e-3, the NLL pairwise loss, z-scored inputs, ``d -> 1024 -> 512`` MLPs for images and text and
``k -> 512 -> 512`` for labels, no LRN, no multi-scale text stack, no early stopping, a separate PyTorch Adam
per net, and the adversarial gradient into ImgNet / TxtNet, choices made on a training-split validation of
Wiki (val mAP i2t/t2i 0.217/0.145). Wiki test split, 32 bits, mAP@all i2t / t2i, seeds 0, 1, 2: before
0.254 / 0.518, 0.273 / 0.507, 0.242 / 0.465 (fits of 51-59 s); official settings 0.111 / 0.111 for every seed
(one code for all items in each set; fits of 760-951 s, 28-30 epochs); official settings with ``pairwise =
nll`` and ``standardize = true``, seed 0: 0.122 / 0.168 (888 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence


from cmhbench import interfaces
from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, Supervision
from cmhbench.lazy import F, nn, torch, torch_class
from cmhbench.registry import MethodSpec
from cmhbench.training import bit_balance, encode_in_batches, keep_freed_memory, mlp

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class SSAHConfig:
    """SSAH hyperparameters; every default is the official value (lelan-li/SSAH 8780b20, cited per field)."""

    alpha: float = hp(1.0, "weight of the pairwise term on semantic features (setting.py:66)", ge=0)
    gamma: float = hp(1.0, "weight of the pairwise term on hash outputs (setting.py:67; UKD setting.py:81)", ge=0)
    beta: float = hp(1.0, "weight of the quantization term (setting.py:68; UKD setting.py:82)", ge=0)
    eta: float = hp(1.0, "weight of the label-prediction term (setting.py:69)", ge=0)
    delta: float = hp(1.0, "weight of the adversarial term of ImgNet / TxtNet (setting.py:70)", ge=0)
    pairwise: str = hp("squared", "squared: 0.5 sum((0.999 S theta - log(1 + e^theta))^2), the official code "
                       "(SSAH.py:105-126, ops.py:55-56,67-69); nll: the paper's likelihood", choices=("nll", "squared"))
    lr_label: float = hp(1e-2, "Adam rate of LabNet in round 0 of epoch 0 (setting.py:73: 10^-2)", gt=0)
    lr_image: float = hp(10**-4.5, "Adam rate of ImgNet in round 0 of epoch 0 (setting.py:74: 10^-4.5)", gt=0)
    lr_text: float = hp(10**-3.5, "Adam rate of TxtNet in round 0 of epoch 0 (setting.py:75: 10^-3.5)", gt=0)
    lr_dis: float = hp(1e-3, "Adam rate of the discriminators in round 0 of epoch 0 (setting.py:76: 10^-3)", gt=0)
    lr_decay: float = hp(10**-0.5, "round r of epoch e runs at lr * lr_decay^(e + r) (setting.py:73-76 step the "
                         "exponent by 0.5; SSAH.py:185-186,203-204,217-218,235-236 read list[epoch + r])", gt=0, le=1)
    batch_size: int = hp(128, "items per minibatch (setting.py:23)", ge=1)
    epochs: int = hp(500, "outer epochs (setting.py:58, Epoch = 500)", ge=1)
    label_passes: int = hp(10, "LabNet passes in round 0; round 1 runs half as many (setting.py:59, SSAH.py:184-187)", ge=0)
    dis_passes: int = hp(1, "discriminator passes in each of two rounds (setting.py:62, SSAH.py:202-205)", ge=0)
    hash_passes: int = hp(15, "ImgNet / TxtNet passes in round 0 of three, then 1/2 and 1/3 as many "
                          "(setting.py:60-61, SSAH.py:216-219,234-237)", ge=1)
    early_stop: bool = hp(True, "end a round when the full training loss stops falling (SSAH.py:191,196-197,"
                          "223-231,240-247)")
    adversarial: str = hp("official", "official: the adversarial term of ImgNet / TxtNet reads a fed-in copy of "
                          "the features and cannot move them (SSAH.py:74-79,91-94,119,129,399,442); paper: it "
                          "back-propagates into them", choices=("official", "paper"))
    train_inert: bool = hp(False, "official adversarial mode: also run the discriminator updates, which cannot "
                           "change any code there (SSAH.py:199-213,140-147); same codes, slower")
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
    standardize: bool = hp(False, "z-score each input dimension with training mean and std (official: features "
                           "and tags as they are, SSAH.py:379-380,421)")
    semantic_dim: int = hp(512, "width of the semantic feature layer (setting.py:21, SEMANTIC_EMBED)", ge=1)
    label_hidden: int = hp(4096, "hidden width of LabNet (tnet.py:71, LAYER1_NODE)", ge=1)
    image_hidden: int = hp(0, "hidden layer of ImgNet before the semantic layer; 0: none, fc8 reads the fc7 "
                           "features (tnet.py:38-46)", ge=0)
    text_hidden: int = hp(4096, "hidden width of TxtNet (tnet.py:158-159)", ge=1)


@torch_class
def SSAHNet():
    """The ``nn.Module`` class ``SSAHNet``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class SSAHNet(nn.Module):
        """``trunk`` -> ReLU semantic feature; a ``tanh`` hash head and a ``sigmoid`` label head on top.

        The heads read the feature itself (LabNet ``tnet.py:89-108``, ImgNet ``:45-66``) or, with
        ``lrn_heads`` (TxtNet ``:175-196``), its local response normalisation. Every ``Linear`` weight and
        bias starts from N(0, 0.01^2) (``tf.random_normal(...) * 0.01`` throughout ``tnet.py``)."""

        def __init__(self, trunk: nn.Module, semantic: int, bits: int, classes: int, lrn_heads: bool = False) -> None:
            super().__init__()
            self.trunk = trunk
            self.hash = nn.Linear(semantic, bits)
            self.label = nn.Linear(semantic, classes)
            self.lrn_heads = lrn_heads
            official_init(self)

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            """``(m, in_dim)`` -> hash ``(m, bits)`` in (-1, 1), feature ``(m, semantic)`` >= 0, label ``(m, classes)`` in (0, 1)."""
            feat = F.relu(self.trunk(x))
            top = tf_lrn(feat) if self.lrn_heads else feat
            return torch.tanh(self.hash(top)), feat, torch.sigmoid(self.label(top))

    return SSAHNet


@torch_class
def TFLocalResponseNorm():
    """The ``nn.Module`` class ``TFLocalResponseNorm``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class TFLocalResponseNorm(nn.Module):
        """:func:`tf_lrn` as a layer (``tf.nn.local_response_normalization`` with SSAH's constants)."""

        def forward(self, x: Tensor) -> Tensor:
            """``(m, c)`` -> ``(m, c)``."""
            return tf_lrn(x)

    return TFLocalResponseNorm


@torch_class
def MultiScaleText():
    """The ``nn.Module`` class ``MultiScaleText``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class MultiScaleText(nn.Module):
        """SSAH's ``MultiScaleTxt`` (``tnet.py:200-224``), flattened: ``(m, d)`` -> ``(m, 6 d)``.

        The tag vector and five copies average-pooled over windows of 50, 30, 15, 10, 5 entries, each times
        a learnt scalar (N(0, 0.01^2), ``:204-207``), ReLU, resized back to ``d`` by TF 1's bilinear resize
        (``:208-209``), stacked as ``(d, 6)`` in ``tnet.py``'s concat order (``:218-223``), so that the
        following ``1 x d x 6`` convolution (``:158-162``) is a ``Linear(6 d, hidden)`` on the flattened stack."""

        WINDOWS = (50, 30, 15, 10, 5)  # 5 * level for levels 10, 6, 3, 2, 1 (tnet.py:213-217)

        def __init__(self, in_dim: int) -> None:
            super().__init__()
            self.scales = nn.Parameter(torch.randn(len(self.WINDOWS)) * 0.01)
            for w in self.WINDOWS:
                self.register_buffer(f"resize{w}", tf1_bilinear_matrix(in_dim // w, in_dim), persistent=False)

        def forward(self, x: Tensor) -> Tensor:
            """``(m, d)`` -> ``(m, 6 d)`` (entry ``6 i + j`` is channel j of position i)."""
            resizes = [getattr(self, f"resize{w}") for w in self.WINDOWS]
            return multi_scale_stack(x, self.scales, resizes, self.WINDOWS).flatten(1)

    return MultiScaleText


def multi_scale_stack(x: Tensor, scales: Tensor, resizes: Sequence[Tensor], windows: Sequence[int]) -> Tensor:
    """``(m, d)`` -> ``(m, d, 6)``: ``x``, then per window (in reverse order of ``windows``) ``relu(avgpool(x) *
    scale) @ resize``. A window longer than ``d`` pools nothing (TF's VALID pooling then fails; here its block is 0)."""
    m, d = x.shape
    blocks = []
    for i, w in enumerate(windows):
        cells = d // w
        if cells == 0:
            blocks.append(x.new_zeros(m, d))
            continue
        pooled = x[:, : cells * w].reshape(m, cells, w).mean(2)
        blocks.append(F.relu(pooled * scales[i]) @ resizes[i])
    return torch.stack([x, *reversed(blocks)], dim=2)


def tf_lrn(x: Tensor, radius: int = 2, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.75) -> Tensor:
    """``(m, c)`` -> ``(m, c)``: TF 1's ``local_response_normalization`` over the c channels with SSAH's constants
    (``tnet.py:81,167,178``): ``x_i / (bias + alpha * sum_{|j - i| <= radius} x_j^2)^beta``, with its gradient
    written out (:func:`_TFLRN`)."""
    return _TFLRN.cls().apply(x, radius, bias, alpha, beta)


def _window_sum(z: Tensor, radius: int) -> Tensor:
    """``(m, c)`` -> ``(m, c)``: ``sum_{|j - i| <= radius} z_j`` along the channels, zero beyond the ends."""
    c = z.shape[1]
    padded = F.pad(z, (radius, radius))
    total = padded[:, :c].clone()
    for j in range(1, 2 * radius + 1):
        total += padded[:, j : j + c]
    return total


@torch_class
def _TFLRN():
    """The ``autograd.Function`` ``_TFLRN``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class _TFLRN(torch.autograd.Function):
        """``y = x D^-beta``, ``D = bias + alpha W(x^2)`` (``W``: :func:`_window_sum`); backward
        ``g D^-beta - 2 alpha beta x W(g x D^(-beta-1))`` (the window is symmetric)."""

        @staticmethod
        def forward(ctx, x, radius, bias, alpha, beta):  # noqa: D102
            d = _window_sum(x * x, radius).mul_(alpha).add_(bias)
            scale = d.pow(-beta)
            ctx.save_for_backward(x, d, scale)
            ctx.constants = (radius, alpha, beta)
            return x * scale

        @staticmethod
        def backward(ctx, g):  # noqa: D102
            x, d, scale = ctx.saved_tensors
            radius, alpha, beta = ctx.constants
            inner = _window_sum(g * x * scale / d, radius)
            return g * scale - (2 * alpha * beta) * x * inner, None, None, None, None

    return _TFLRN


def label_trunk(classes: int, hidden: int, semantic: int) -> nn.Sequential:
    """LabNet before its feature ReLU (``tnet.py:70-88``): ``Linear(k, hidden)``, ReLU, LRN, ``Linear(hidden, semantic)``."""
    return nn.Sequential(nn.Linear(classes, hidden), nn.ReLU(), TFLocalResponseNorm(), nn.Linear(hidden, semantic))


def image_trunk(in_dim: int, hidden: int, semantic: int) -> nn.Module:
    """ImgNet after the fc7 features, before its feature ReLU: ``fc8 = Linear(d, semantic)`` (``tnet.py:38-44``).
    ``hidden > 0`` puts a ``Linear(d, hidden)`` and ReLU before it (not official; small test networks)."""
    if hidden == 0:
        return nn.Linear(in_dim, semantic)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, semantic))


def text_trunk(in_dim: int, hidden: int, semantic: int) -> nn.Sequential:
    """TxtNet before its feature ReLU (``tnet.py:155-174``): multi-scale stack, ``Linear(6 d, hidden)``, ReLU, LRN,
    ``Linear(hidden, semantic)``."""
    return nn.Sequential(MultiScaleText(in_dim), nn.Linear(6 * in_dim, hidden), nn.ReLU(), TFLocalResponseNorm(),
                         nn.Linear(hidden, semantic))


def pairwise_loss(s: Tensor, theta: Tensor, kind: str = "nll") -> Tensor:
    """Summed pairwise loss of similarities ``s`` given inner products ``theta`` (same shape).

    ``nll``: ``-sum(s * theta - log(1 + exp(theta)))`` (the paper); ``squared``:
    ``sum((0.999 s * theta - log(1 + exp(theta)))^2) / 2`` (the official code's ``mse_criterion``).
    """
    if kind == "nll":
        return -(s * theta - F.softplus(theta)).sum()
    return 0.5 * (0.999 * s * theta - F.softplus(theta)).pow(2).sum()


LEAN_PAIRWISE_ENTRIES = 1 << 24  # above this many entries of theta (m x n), the lean pairwise loss
LEAN_CHUNK_ENTRIES = 1 << 20  # entries of theta per row chunk of its elementwise terms


def pairwise_product_loss(s: Tensor, a: Tensor, b: Tensor, kind: str = "nll", scale: float = 0.5) -> Tensor:
    """:func:`pairwise_loss` of ``s`` ``(m, n)`` at ``theta = (scale a) b^T``, ``a`` ``(m, d)`` (the batch's
    outputs, with gradient), ``b`` ``(n, d)`` (a buffer over all n items, no gradient). Up to
    :data:`LEAN_PAIRWISE_ENTRIES` entries of ``theta`` (Wiki, MIRFlickr, every protocol below 131,072
    training pairs) it is that expression, with autograd's graph; above, one autograd node keeps ``theta``
    only and forms the elementwise terms and ``dtheta`` by row chunks (:func:`_LeanPairwise`), the same
    sum and gradient up to float rounding. At n = 184,477 (the ``ucch`` protocol on NUS-WIDE) autograd's
    graph of the squared loss held about five ``(128, n)`` float32 arrays (94 MB each) per term."""
    if a.shape[0] * b.shape[0] <= LEAN_PAIRWISE_ENTRIES or b.requires_grad or s.requires_grad:
        return pairwise_loss(s, scale * a @ b.T, kind)
    return _LeanPairwise.cls().apply(a, b, s, scale, kind)


def _pairwise_sum(s: Tensor, theta: Tensor, kind: str) -> Tensor:
    """:func:`pairwise_loss` of one chunk, summed in float64."""
    if kind == "nll":
        return F.softplus(theta).sub_(s * theta).sum(dtype=torch.float64)
    return (0.999 * s).mul_(theta).sub_(F.softplus(theta)).pow_(2).sum(dtype=torch.float64).mul_(0.5)


def _pairwise_dtheta(s: Tensor, theta: Tensor, kind: str) -> Tensor:
    """``d pairwise_loss / d theta`` of one chunk: ``sigmoid(theta) - s`` (nll), ``r (0.999 s - sigmoid(theta))``
    with ``r = 0.999 s theta - softplus(theta)`` (squared)."""
    if kind == "nll":
        return torch.sigmoid(theta).sub_(s)
    s_scaled = 0.999 * s
    residual = (s_scaled * theta).sub_(F.softplus(theta))
    return residual.mul_(s_scaled.sub_(torch.sigmoid(theta)))


@torch_class
def _LeanPairwise():
    """The ``autograd.Function`` ``_LeanPairwise``, defined on first use (see :mod:`cmhbench.lazy`)."""
    class _LeanPairwise(torch.autograd.Function):
        """``pairwise_loss(s, (scale a) b^T, kind)`` with ``theta`` the only saved array; gradient to ``a`` only."""

        @staticmethod
        def forward(ctx, a, b, s, scale, kind):  # noqa: D102
            theta = (scale * a) @ b.T
            total = torch.zeros((), dtype=torch.float64, device=a.device)
            for rows in interfaces.row_slices(theta.shape[0], LEAN_CHUNK_ENTRIES, theta.shape[1]):
                total += _pairwise_sum(s[rows], theta[rows], kind)
            ctx.save_for_backward(theta, b, s)
            ctx.constants = (scale, kind)
            return total.to(a.dtype)

        @staticmethod
        def backward(ctx, g):  # noqa: D102
            theta, b, s = ctx.saved_tensors
            scale, kind = ctx.constants
            grad = torch.empty(theta.shape[0], b.shape[1], dtype=theta.dtype, device=theta.device)
            for rows in interfaces.row_slices(theta.shape[0], LEAN_CHUNK_ENTRIES, theta.shape[1]):
                grad[rows] = _pairwise_dtheta(s[rows], theta[rows], kind) @ b
            return grad.mul_(g * scale), None, None, None, None

    return _LeanPairwise


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
            resizes = [getattr(self, f"resize{w}") for w in self.WINDOWS]
            return multi_scale_stack(x, self.scales, resizes, self.WINDOWS)

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
            if p not in state:
                state[p] = (torch.zeros_like(p), torch.zeros_like(p))
            m, v = state[p]
            m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
            p.addcdiv_(m, v.sqrt().add_(eps), value=-lr_t)


class SSAH:
    """LabNet, ImgNet, TxtNet and two modality discriminators trained as in the official SSAH."""

    def __init__(self, config: SSAHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.nets: dict[Modality, nn.Module] = {}
        self.scalers: dict[Modality, Optional[tuple[Tensor, Tensor]]] = {}
        self._ukd_nets = False  # True once fitted in ukd mode (nets return the hash output alone)
        self.epochs_run = 0  # label mode: epochs trained before no step could change a parameter (steps_round_away)

    def fit(self, train: PairedFeatures, supervision: Supervision, bits: int) -> None:
        """Label mode (soft labels given, or ``without_labels = "rows"``): :meth:`_fit_labels`; else UKD's student."""
        c = self.config
        dev = self.ctx.device
        s = supervision.rows(dev)  # S read by row blocks s[idx], (batch, n); never the dense matrix
        paired_only = supervision.soft_labels is None and c.without_labels == "ukd"
        self._ukd_nets = paired_only
        standardize = c.paired_standardize if paired_only else c.standardize
        for m in Modality:
            self.scalers[m] = None  # raw inputs (the official default): no statistics, no scaled copy
            if standardize:
                x = train.get(m).to(dev, torch.float32)
                mu, sd = x.mean(0), x.std(0)
                self.scalers[m] = (mu, torch.where(sd > 0, sd, torch.ones_like(sd)))
        train = PairedFeatures(self._scale(train.image, Modality.IMAGE), self._scale(train.text, Modality.TEXT))
        if paired_only:
            self._fit_ukd(train, s, bits)
            return
        labels = supervision.soft_labels.to(dev, torch.float32) if supervision.soft_labels is not None else s
        self._fit_labels(train, s, labels, bits)

    def _fit_labels(self, train: PairedFeatures, s, labels, bits: int) -> None:
        """The official ``train`` (``SSAH.py:132-249``): per epoch, LabNet (two rounds), the discriminators (two
        rounds), ImgNet (three rounds), TxtNet (three rounds); round r of epoch e at ``lr * lr_decay^(e + r)``,
        each round ended early when the full training loss stops falling (``early_stop``). ``labels`` ``(n, k)``
        are LabNet's input and every net's label target. Stops before the first epoch from which no step can
        change a parameter that reaches a code (:func:`steps_round_away` at the epoch's largest rates, float32
        as the official placeholders, ``SSAH.py:62-66``); ``epochs_run`` counts the epochs trained."""
        c = self.config
        dev, n, k = self.ctx.device, len(train), labels.shape[1]
        if dev.type == "cpu":
            keep_freed_memory()  # the 4096 x 512 layers' gradients and Adam temporaries are reused, not mapped anew
        lab_net = SSAHNet(label_trunk(k, c.label_hidden, c.semantic_dim), c.semantic_dim, bits, k).to(dev)
        img_net = SSAHNet(image_trunk(train.image.shape[1], c.image_hidden, c.semantic_dim), c.semantic_dim, bits, k).to(dev)
        txt_net = SSAHNet(text_trunk(train.text.shape[1], c.text_hidden, c.semantic_dim), c.semantic_dim, bits, k,
                          lrn_heads=True).to(dev)
        dis = {Modality.IMAGE: discriminator(c.semantic_dim).to(dev), Modality.TEXT: discriminator(c.semantic_dim).to(dev)}
        self.nets = {Modality.IMAGE: img_net, Modality.TEXT: txt_net}
        gen = self.ctx.generator()
        # SSAH.py:159-167: F, G, H, LABEL_L/I/T and feat_I/T/L start as standard normal draws over the n items
        randn = lambda *shape: torch.randn(*shape, generator=gen).to(dev)  # noqa: E731
        out = {m: randn(n, bits) for m in Modality}
        h_buf = randn(n, bits)
        lab_bufs = {name: randn(n, k) if c.early_stop else None for name in ("lab", "img", "txt")}
        feat_i = randn(n, c.semantic_dim)  # read only by the official discriminator update (train_inert)
        fl_buf = randn(n, c.semantic_dim)
        hash_adam: dict = {}  # one AdamOptimizer for LabNet, ImgNet and TxtNet (SSAH.py:134,137-144)
        dis_adam: dict = {}  # dis_optim (SSAH.py:135,146-147)
        batch = min(c.batch_size, n)
        steps = max(1, n // batch)  # SSAH.py:298,325,373,415: num_train / batch_size steps per pass
        draw = lambda: torch.randperm(n, generator=gen)[:batch].to(dev)  # noqa: E731  # SSAH.py:299-300
        train_dis = c.adversarial == "paper" or c.train_inert
        moving = [(lab_net, c.lr_label), (img_net, c.lr_image), (txt_net, c.lr_text)]
        if c.adversarial == "paper":  # the discriminators then reach ImgNet / TxtNet through their gradients
            moving += [(dis[m], c.lr_dis) for m in Modality]
        self.epochs_run = 0
        for epoch in self.ctx.progress.track(range(c.epochs), c.epochs, f"ssah {bits} bits"):
            if all(steps_round_away(net.parameters(), float32_rate(lr, c.lr_decay, epoch, 0)) for net, lr in moving):
                break  # no later step can change a parameter that reaches a code
            self.epochs_run = epoch + 1
            losses: list[float] = []
            for r, passes in inner_rounds(c.label_passes, 2):  # SSAH.py:182-197
                lr = float32_rate(c.lr_label, c.lr_decay, epoch, r)
                for kk in range(passes):
                    for _ in range(steps):
                        self._hash_step(lab_net, labels, labels, draw(), s, h_buf, fl_buf, (h_buf, fl_buf, lab_bufs["lab"]),
                                        hash_adam, lr, distinct=True)
                    if c.early_stop:
                        losses.append(self._labnet_loss(h_buf, lab_bufs["lab"], fl_buf, labels, s))
                        if kk > 1 and losses[-1] - losses[-2] >= 0:
                            break
            d_losses: list[float] = []
            for r, passes in inner_rounds(c.dis_passes, 2):  # SSAH.py:199-213
                lr = float32_rate(c.lr_dis, c.lr_decay, epoch, r)
                for kk in range(passes):
                    for _ in range(steps):
                        idx = draw()  # drawn in every mode, so that the batches that follow are the same
                        if train_dis:
                            d_loss = self._dis_step(lab_net, img_net, txt_net, dis, train, labels, idx, dis_adam, lr)
                    if train_dis and c.early_stop:
                        d_losses.append(d_loss)
                        if kk > 1 and d_losses[-1] - d_losses[-2] <= 0:
                            break
            for mod, net, x in ((Modality.IMAGE, img_net, train.image), (Modality.TEXT, txt_net, train.text)):
                base, bufs = (c.lr_image, "img") if mod is Modality.IMAGE else (c.lr_text, "txt")
                feat_own = feat_i if mod is Modality.IMAGE and c.train_inert and c.adversarial == "official" else None
                losses = []
                for r, passes in inner_rounds(c.hash_passes, 3):  # SSAH.py:215-247
                    lr = float32_rate(base, c.lr_decay, epoch, r)
                    for kk in range(passes):
                        for _ in range(steps):
                            self._hash_step(net, x, labels, draw(), s, h_buf, fl_buf, (out[mod], feat_own, lab_bufs[bufs]),
                                            hash_adam, lr, dis[mod] if train_dis else None)
                        if c.early_stop:
                            if kk % 2 == 0:
                                losses.append(self._hash_loss(out[mod], h_buf, lab_bufs[bufs], labels, s, mod))
                            if kk > 2 and losses[-1] - losses[-2] >= 0:
                                break

    def _hash_step(self, net, x, labels, idx, s, h_all, feat_all, bufs, adam: dict, lr: float, dis=None,
                   distinct: bool = False) -> None:
        """One step of ``train_lab_net`` (``SSAH.py:291-321``) or ``train_img_net`` / ``train_txt_net`` (``:365-445``).

        A forward pass writes the batch's rows of the net's buffers ``bufs = (hash, feature, label)`` (None: not
        kept), then one TF Adam step on ``alpha * pair(S_b, FeatL_all Feat_b^T / 2) + gamma * pair(S_b, H_all
        Hsh_b^T / 2) + beta * ||sign(Hsh_b) - Hsh_b||^2 / 2 + eta * ||L_b - Lab_b||^2 / 2`` (``:104-130``;
        ``mse_criterion`` is half a sum, ``ops.py:55-56``), against LabNet's buffers ``h_all`` ``(n, bits)`` and
        ``feat_all`` ``(n, semantic)`` (for LabNet its own, rows just written). With ``dis`` (ImgNet / TxtNet,
        when discriminators are trained) the adversarial term ``delta * sce(dis(Feat), 1)``: in ``paper`` mode on
        the batch features, into the net; in the official wiring on the fed-in features (ImgNet: its whole
        feature buffer, ``:399``; TxtNet: the batch, ``:442``), moving only the discriminator (its gradient in
        ``optimizer.compute_gradients(loss_i)``, ``:140-141``, with the hashing nets' optimiser). ``distinct``
        (LabNet): the net runs once per distinct input row of the batch (:func:`_forward_distinct`)."""
        c = self.config
        hsh, feat, lab = _forward_distinct(net, x[idx]) if distinct else net(x[idx])
        with torch.no_grad():
            for buf, value in zip(bufs, (hsh, feat, lab)):
                if buf is not None:
                    buf[idx] = value
        s_b = s[idx]
        loss = (
            c.alpha * pairwise_product_loss(s_b, feat, feat_all, c.pairwise)
            + c.gamma * pairwise_product_loss(s_b, hsh, h_all, c.pairwise)
            + c.beta * 0.5 * (torch.sign(hsh.detach()) - hsh).pow(2).sum()
            + c.eta * 0.5 * (labels[idx] - lab).pow(2).sum()
        )
        params = list(net.parameters())
        if dis is not None and c.delta > 0:
            fake = feat if c.adversarial == "paper" else (bufs[1] if bufs[1] is not None else feat.detach())
            logit = dis(fake).squeeze(1)
            loss = loss + c.delta * F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
            if c.adversarial == "official":
                params += list(dis.parameters())
        for p in params:
            p.grad = None
        loss.backward()
        tf_adam_step(params, adam, lr)

    @staticmethod
    def _dis_step(lab_net, img_net, txt_net, dis, train, labels, idx, adam: dict, lr: float) -> float:
        """One step of ``train_dis_net`` (``SSAH.py:323-345``): LabNet features are real (1), image and text
        features fake (0), ``Loss_D`` the mean of the four mean sigmoid cross-entropies (``:96-101``); one TF
        Adam step of both discriminators. Returns ``Loss_D`` after the step (``:355-359``)."""
        with torch.no_grad():
            fl, fi, ft = lab_net(labels[idx])[1], img_net(train.image[idx])[1], txt_net(train.text[idx])[1]
        d_i, d_t = dis[Modality.IMAGE], dis[Modality.TEXT]

        def loss_d():
            sce = F.binary_cross_entropy_with_logits
            li, lt, l1, l2 = (d(f).squeeze(1) for d, f in ((d_i, fi), (d_t, ft), (d_i, fl), (d_t, fl)))
            return (sce(li, torch.zeros_like(li)) + sce(lt, torch.zeros_like(lt))
                    + sce(l1, torch.ones_like(l1)) + sce(l2, torch.ones_like(l2))) / 4

        params = [*d_i.parameters(), *d_t.parameters()]
        for p in params:
            p.grad = None
        loss_d().backward()
        tf_adam_step(params, adam, lr)
        with torch.no_grad():
            return float(loss_d())

    def _labnet_loss(self, h_buf: Tensor, lab_buf: Tensor, feat_buf: Tensor, labels, s) -> float:
        """``calc_labnet_loss`` (``SSAH.py:483-495``) over the n items, float64 as numpy: ``alpha * ||LABEL_L -
        L||^2 + gamma * nll(H H^T / 2) + beta * nll(FeatL FeatL^T / 2)``, ``nll(theta) = sum(log(1 + e^theta) -
        0.999 S theta)`` (``Sim``, ``setting.py:53``); read by row blocks of S."""
        c = self.config
        h, f = h_buf.double(), feat_buf.double()
        total = 0.0
        for rows, s_blk in _row_blocks(s):
            total += (c.alpha * (lab_buf[rows].double() - labels[rows].double()).pow(2).sum()
                      + c.gamma * _numpy_nll(0.5 * h[rows] @ h.T, s_blk)
                      + c.beta * _numpy_nll(0.5 * f[rows] @ f.T, s_blk)).item()
        return total

    def _hash_loss(self, own: Tensor, h_buf: Tensor, lab_buf: Tensor, labels, s, modality: Modality) -> float:
        """``calc_loss`` as ImgNet / TxtNet call it (``SSAH.py:224-225,241``, body ``:498-511``), float64 over the n
        items: with ``B = sign(own)``, ``alpha * nll(own H^T / 2) + beta * (||B - own||^2 + ||B - H||^2) + gamma *
        ||H - own||^2 + eta * ||LABEL - L||^2`` (ImgNet; TxtNet's ``theta`` is ``H G^T / 2``, the same sum)."""
        c = self.config
        o, h = own.double(), h_buf.double()
        b = torch.sign(o)
        total = (c.beta * ((b - o).pow(2).sum() + (b - h).pow(2).sum()) + c.gamma * (h - o).pow(2).sum()).item()
        first, second = (o, h) if modality is Modality.IMAGE else (h, o)
        for rows, s_blk in _row_blocks(s):
            total += (c.alpha * _numpy_nll(0.5 * first[rows] @ second.T, s_blk)
                      + c.eta * (lab_buf[rows].double() - labels[rows].double()).pow(2).sum()).item()
        return total

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
        loss = (c.gamma * pairwise_product_loss(s[idx], hsh, other_out, c.paired_pairwise)
                + c.beta * 0.5 * (torch.sign(first) - hsh).pow(2).sum())
        if c.balance > 0:
            loss = loss + c.balance * bit_balance(hsh, own_out, idx)
        net.zero_grad(set_to_none=True)
        loss.backward()
        tf_adam_step(list(net.parameters()), adam, c.paired_lr)

    def _scale(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, d)`` standardised with the training statistics; with standardisation
        off, the float32 features on the run's device as they are (no copy where they already are)."""
        scaler = self.scalers[Modality(modality)]
        if scaler is None:
            return x.to(self.ctx.device, torch.float32)
        mu, sd = scaler
        return (x.to(mu.device, torch.float32) - mu) / sd

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` tanh hash outputs; sign gives codes."""
        net = self.nets[Modality(modality)]
        return encode_in_batches(net if self._ukd_nets else _HashOnly(net), self._scale(x, modality))


def _forward_distinct(net: nn.Module, x: Tensor) -> tuple[Tensor, ...]:
    """``net(x)`` computed once per distinct row of ``(m, d)`` ``x`` and spread back to the m rows (same values up
    to rounding; gradients summed over equal rows by autograd). LabNet's batch of 128 label vectors holds at most
    as many distinct rows as there are label combinations (10 on Wiki), so its 4096-wide layers run on those."""
    uniq, inv = torch.unique(x, dim=0, return_inverse=True)
    if 2 * len(uniq) > len(x):
        return net(x)
    return tuple(out[inv] for out in net(uniq))


def _row_blocks(s, block: Optional[int] = None):
    """Yield ``(rows, S[rows])`` for consecutive blocks of rows of the ``(n, n)`` row view ``s``, ``S`` in float64;
    ``block`` rows at a time, default ``CHUNK_ENTRIES / 4`` entries a block (32 MiB per float64 ``(block, n)``
    array: the losses hold a few, e.g. 1.5 GB each at n = 184,477 with 1024-row blocks)."""
    n = s.shape[0]
    entries = block * n if block else interfaces.CHUNK_ENTRIES // 4
    for rows in interfaces.row_chunks(n, device=s.device, entries=entries):
        yield rows, s[rows].double()


def _numpy_nll(theta: Tensor, s: Tensor) -> Tensor:
    """``sum(log(1 + exp(theta)) - 0.999 s theta)`` in float64 exactly as numpy computes it in ``SSAH.py:487,489,500``
    (``exp`` overflows to inf above 709, as there; ``Sim`` carries the 0.999, ``setting.py:53``)."""
    return (torch.log(1.0 + torch.exp(theta)) - 0.999 * s * theta).sum()


ADAM_STEP_BOUND = math.sqrt(0.1**2 / 0.001 / (1 - 0.9**2 / 0.999))  # 7.27


def steps_round_away(params, lr: float) -> bool:
    """True when no TF Adam step (:func:`tf_adam_step`, beta1 0.9, beta2 0.999) at a rate ``<= lr`` can change
    any of ``params`` in float32. Such a step moves a parameter by ``lr_t |m| / (sqrt(v) + eps)`` with ``lr_t =
    lr sqrt(1 - beta2^t) / (1 - beta1^t) <= lr``, ``m = sum_j (1 - beta1) beta1^j g_j`` and ``v = sum_j (1 - beta2)
    beta2^j g_j^2`` over the same gradients, so by Cauchy-Schwarz ``|m| / sqrt(v) <= sqrt(sum_j (1 - beta1)^2
    beta1^(2j) / ((1 - beta2) beta2^j))`` = 7.27 (``ADAM_STEP_BOUND``) whatever the gradients. A move below half
    the float32 spacing under ``|p|`` rounds away; checked with a factor 2 to spare for rounding in the step."""
    if lr == 0:
        return True
    bound = 2 * ADAM_STEP_BOUND * lr
    with torch.no_grad():
        for p in params:
            a = p.detach().abs()
            if bool((a - torch.nextafter(a, torch.zeros_like(a)) <= 2 * bound).any()):
                return False
    return True


def float32_rate(base: float, decay: float, epoch: int, r: int) -> float:
    """The rate of round ``r`` of ``epoch``, ``base * decay^(epoch + r)`` (``setting.py:73-76`` list entry ``epoch + r``,
    ``SSAH.py:185-186``), rounded to float32 as the official ``lr`` placeholders (``SSAH.py:62-66``); 0 once it underflows."""
    return float(torch.tensor(base * decay ** (epoch + r), dtype=torch.float32))


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

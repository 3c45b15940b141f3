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
(every distillation strategy), the default ``without_labels = "ukd"`` follows UKD's official SSAH
student (``student_model/student_train.py`` of https://github.com/huhengtong/UKD_CVPR2020): LabNet,
the discriminators and the label term are dropped and ImgNet and TxtNet are paired directly on the
distilled S, each step ``gamma * pair(S, 0.5 G_all F_batch^T) + beta * ||sign(F) - F||^2 / 2``
against the other network's output buffer (both start as standard normal draws), at a constant
learning rate (UKD: 1e-4 for both), ``hash_passes`` rounds per network per epoch. Two departures
in this mode, chosen on a training-split validation (wiki, 32 bits, fit on 70% of the training
pairs, validated on the other 30%; S from the training labels without soft labels): without a
balance term both networks collapse to one or a few codes (val mAP 0.149/0.160 with 7 distinct
image codes), so DCMH's bit-balance term ``balance * ||F_all^T 1||^2`` (weight 0.01, as the
``dcmh`` student) is added; and the constant rate is ``paired_lr = 1e-3`` for 5 epochs (1e-4:
0.189/0.193 after 6 epochs; 3e-3: collapse; 1e-3: 0.243/0.588). With ``djsrh -> ukd`` on the
same split: 0.182/0.222 (``paired_lr`` 1e-4: 0.175/0.146). ``without_labels = "rows"`` instead
feeds item i's row of S to LabNet as its label vector (n-dimensional); it stays at chance on that
validation (0.110/0.110) and is kept only for comparison.

S is read only by rows of a minibatch against all n items (``supervision.rows(device)[idx]``,
``(batch, n)``), also where it stands in for the labels (``rows`` mode), so no n x n matrix is built.

Departures, and why:

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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional


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
    paired_lr: float = hp(1e-3, "ukd mode only: constant Adam rate of ImgNet and TxtNet (UKD: 1e-4, fine-tuning VGG-19)", gt=0)
    paired_epochs: int = hp(5, "ukd mode only: epochs of the hash_passes rounds", ge=1)
    balance: float = hp(0.01, "ukd mode only: weight of DCMH's bit-balance term ||F^T 1||^2 (not in SSAH or UKD; see docstring)", ge=0)
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


class SSAH:
    """LabNet, ImgNet, TxtNet and two modality discriminators trained as in the official SSAH."""

    def __init__(self, config: SSAHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.nets: dict[Modality, nn.Module] = {}
        self.scalers: dict[Modality, tuple[Tensor, Tensor]] = {}

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
        labels = supervision.soft_labels.to(dev, torch.float32) if supervision.soft_labels is not None else s
        k = labels.shape[1]
        for m in Modality:
            x = train.get(m).to(dev, torch.float32)
            mu, sd = x.mean(0), x.std(0)
            self.scalers[m] = (mu, torch.where(sd > 0, sd, torch.ones_like(sd))) if c.standardize else (torch.zeros_like(mu), torch.ones_like(sd))
        train = PairedFeatures(self._scale(train.image, Modality.IMAGE), self._scale(train.text, Modality.TEXT))
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

        if paired_only:
            for m in Modality:  # F and G start as standard normal draws (UKD's student, as DCMH)
                own[m][0].copy_(torch.randn(n, bits, generator=gen))
            self._fit_paired(train, s, own, opts, steps, draw, bits)
            return
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

    def _fit_paired(self, train, s, own, opts, steps, draw, bits) -> None:
        """UKD's SSAH student: ImgNet and TxtNet alternate, each paired with the other's hash buffer on S."""
        c = self.config
        nets = {Modality.IMAGE: ("img", train.image), Modality.TEXT: ("txt", train.text)}
        for name in ("img", "txt"):
            for group in opts[name].param_groups:
                group["lr"] = c.paired_lr
        for _ in self.ctx.progress.track(range(c.paired_epochs), c.paired_epochs, f"ssah {bits} bits"):
            for mod, other in ((Modality.IMAGE, Modality.TEXT), (Modality.TEXT, Modality.IMAGE)):
                name, x = nets[mod]
                for _, passes in inner_rounds(c.hash_passes, 3):
                    for _ in range(passes * steps):
                        self._paired_step(self.nets[mod], x, draw(), s, own[other][0], own[mod][0], opts[name])

    def _paired_step(self, net, x, idx, s, other_hash, own_hash, opt) -> None:
        """One Adam step of ``gamma * pair(S, 0.5 H_other H^T) + beta * ||sign(H) - H||^2 / 2 + balance * ||H_all^T 1||^2``."""
        c = self.config
        hsh = net(x[idx])[0]
        own_hash[idx] = hsh.detach()
        balance = bit_balance(hsh, own_hash, idx)
        loss = (c.gamma * pairwise_loss(s[idx], 0.5 * hsh @ other_hash.T, c.pairwise)
                + c.beta * 0.5 * (torch.sign(hsh.detach()) - hsh).pow(2).sum() + c.balance * balance)
        step([opt], loss)

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
        return encode_in_batches(_HashOnly(net), self._scale(x, modality))


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

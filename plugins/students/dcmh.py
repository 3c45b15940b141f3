"""Student ``dcmh``: Deep Cross-Modal Hashing, trained on a given similarity instead of labels.

Paper: Qing-Yuan Jiang, Wu-Jun Li. "Deep Cross-Modal Hashing." CVPR 2017.
Official code: https://github.com/jiangqy/DCMH-CVPR2017, read whole at HEAD, commit 67d0e84 (2020-08-21). It holds a
MATLAB/MatConvNet release (``DCMH_matlab/DCMH_matlab/``: ``DCMH_demo.m``, ``process_DCMH.m``, ``update_net.m``,
``net_structure_img.m``, ``net_structure_txt.m``, ``utils/normZeroMean.m``) and a TensorFlow demo
(``DCMH_tensorflow/DCMH_tensorflow/``: ``DCMH_demo.py``, ``net_structure_img.py``, ``net_structure_txt.py``).
cmhbench follows the MATLAB release: the authors recommend it (``README.md:10``, "We recommend you use matlab
version"; the TensorFlow ``readme.txt:7``, "We recommend you re-implement DCMH with matconvnet version"). Lines
below are in ``DCMH_matlab/DCMH_matlab/`` at that commit unless another file is named. The PyTorch port
https://github.com/WendellGul/DCMH (HEAD db070d0: ``main.py``, ``config.py``, ``models/img_module.py``,
``models/txt_module.py``) follows the TensorFlow demo; it is the official code run in the differential check
(``benchmarks/fidelity.md``), with the MATLAB settings patched in.

Objective over the n training pairs, with ``F`` (image outputs), ``G`` (text outputs), ``B`` (n x bits) and
``Theta_ij = 0.5 F_i . G_j`` (``process_DCMH.m:118-124``):

    - sum_ij (S_ij Theta_ij - log(1 + exp(Theta_ij)))         pairwise negative log-likelihood
    + gamma * (||B - F||^2 + ||B - G||^2)                       quantization
    + eta * (||F^T 1||^2 + ||G^T 1||^2)                         bit balance

Alternating optimisation (``process_DCMH.m:30-81``): ``F = G = 0`` at the start (``:18-19``); each epoch first
sets ``B = sign(gamma (F + G))`` (``:31``; ``e_sign`` ``:157-161`` keeps 0 at 0, so ``B = 0`` in the first
epoch and for items no batch has drawn yet), then takes ``ceil(n / batch)`` steps on the text net (``:33-52``),
each on a fresh random batch (``:34-35``) with ``F`` fixed and the batch's rows of ``G`` replaced by the new
outputs (``:40``), then as many on the image net with ``G`` fixed (``:54-75``). A step back-propagates the
gradient of the objective with respect to the batch's outputs, which the official code writes in closed form
(``:42-45,66-69``; the balance part ``2 eta G 1`` sums all n rows, the batch's new ones included), divided by
``batch * n`` (``update_net.m:6,8``); :meth:`DCMH._step` forms the same expression (checked against autograd of the
objective in ``tests/test_dcmh_network.py``). Codes are the signs of the outputs (``process_DCMH.m:126-155``).

Defaults (``DCMH_demo.m`` sets one configuration, for its MIRFlickr demo; the release has no other, so every
dataset uses it and ``dataset_defaults`` is empty):

- ``epochs = 500`` (``DCMH_demo.m:19``), ``batch_size = 128`` (``:24``), ``gamma = 1`` (``:22``), ``eta = 1``
  (``:23``).
- Plain SGD (no momentum) with weight decay ``5e-4`` on weights and biases (``update_net.m:2,5-8``:
  ``w <- w - lr (dJ/dw / (batch n) + 5e-4 w)``); learning rate ``logspace(-1.5, -3, epochs)`` for both nets
  (``DCMH_demo.m:20-21``, used at ``process_DCMH.m:50,74``): epoch ``e`` (0-based) uses
  ``10^(-1.5 - 1.5 e / (epochs - 1))``, from ``0.0316`` down to ``1e-3``.
- Text input zero-meaned per dimension (``DCMH_demo.m:27``, ``utils/normZeroMean.m:4-5``).
- Networks, by the feature-input rule (DESIGN.md). Officially the image net is CNN-F on raw pixels
  (``vgg_net.mat``, ``process_DCMH.m:22,25``; every layer with weights is trained, ``update_net.m:3-10``) whose
  last layer (layer 20, fc8) is replaced by a hash layer ``4096 -> bits`` reading relu7, its weights and biases
  drawn from N(0, 0.01^2) (``net_structure_img.m:11-17``; CNN-F has no dropout, see its layer list in the
  TensorFlow ``net_structure_img.py:9-11``). On pre-extracted
  features only the layers after the feature point remain: the image net is that hash layer alone,
  ``Linear(d_image, bits)``, N(0, 0.01^2) weights and biases, nothing between the feature and the layer. The text
  net is the official one whole, at official width: ``Linear(d_text, 8192) -> ReLU -> Linear(8192, bits)``, all
  weights and biases N(0, 0.01^2) (``net_structure_txt.m:2-3,10-13,15-21``: a ``1 x d_text`` convolution is a
  fully connected layer; the same 8192 in the TensorFlow ``net_structure_txt.py:5`` and the port's
  ``models/txt_module.py:6,9-12,25-26``). The text net is drawn before the image net, as officially
  (``process_DCMH.m:24-25``).

Departures, and why:

- Feature inputs (the one departure every pixel-based method shares): CNN-F cannot be run or fine-tuned on
  pre-extracted features; only its hash layer is trained, and the pixel-mean subtraction
  (``process_DCMH.m:58``) belongs to the feature extractor.
- The text mean is that of the training pairs, kept and subtracted at encoding too; ``normZeroMean`` runs once
  over all items, training, query and database (``DCMH_demo.m:27``), which a student that sees only its training
  pairs cannot do. On Wiki the two means differ by at most 0.0018 per dimension (LDA topic proportions, mean 0.1).
- ``S`` comes from the strategy (``S_ij`` in [0, 1]); the official ``S = L L^T > 0`` from labels
  (``process_DCMH.m:6``) is what the ``labels`` strategy gives.
- ``image_hidden`` (default 0, official) can put a hidden layer before the image hash layer. It is not official;
  it exists because small tests set it. With N(0, 0.01^2) weights in both layers such a net barely moves: on the
  tests' tiny data, ``image_hidden = text_hidden = 64``, 500 epochs stay at chance (0.27), where the official
  hash layer with ``text_hidden = 256`` reaches 0.98.

Measured with these official settings (not a departure; the defaults stay official):

- On Wiki's features (128-d SIFT histograms normalised to sum 1, mean squared norm 0.036; 10-d LDA) the nets
  hardly learn. ``labels`` strategy, 32 bits, seeds 0-2: mAP i2t 0.150 ± 0.002, t2i 0.115 ± 0.003 (random codes:
  0.111; the earlier Adam/eta 0.01/1024-wide defaults gave 0.248 / 0.364). From ``F = G = 0`` the likelihood
  gradient of each net is proportional to the other net's outputs, the balance term removes their mean, and the
  outputs stay tiny: mean ``|F|`` 0.0011 from epoch 10 to 500, ``|G|`` 0.0016-0.0022 (seed 0). The
  official code does the same on the same features (PyTorch port with the MATLAB settings: 0.154 ± 0.002 /
  0.121 ± 0.004; the port with its own settings 0.162 ± 0.003 / 0.123 ± 0.004, cmhbench with those settings
  0.153 ± 0.003 / 0.118 ± 0.003), and given the same initial weights and batches the two take the same steps
  (parameters equal to 1e-7 after 1020 steps); ``benchmarks/fidelity.md``.
- On the tests' tiny data (20-d Gaussian features) they learn: 0.98 / 0.98 after 500 epochs (``text_hidden``
  256), 0.53 / 0.52 after 60 (the schedule then decays 8 times faster).
- The earlier docstring's explanations do not hold: the balance term does not stall SGD (it drives the per-bit
  mean of the outputs to 0 within 10 epochs; their spread, not their mean, stays at 1e-3), and the port's text
  balance term does carry gradient at HEAD (``main.py:130``; it had none before the port's commit 64baa8c).

Speed: the closed-form gradient instead of autograd through ``softplus``; the first text weight stored
column-major (autograd then forms its gradient as ``x^T g``, several times faster for a narrow input and a
wide layer); weight decay added to the gradients in place (``SGD(weight_decay=...)`` allocates a copy of every
parameter per step). A 32-bit Wiki fit at the official 500 epochs (17 + 17 steps per epoch) takes about 100 s
of CPU on one thread (180-260 s wall on the shared 2-core machine); the port, same features and settings,
230-250 s CPU (620-645 s wall). On 1386-d tag vectors (MIRFlickr, ``synthetic``) the ``1386 x 8192`` first text
layer dominates, about 0.11 s per text step: the main job (``cmhbench run --teacher djsrh --student dcmh``,
``synthetic``, 1000 training pairs, 16/32/64 bits) took 653-729 s per dcmh fit and 2421 s in all on one thread
(1592 s CPU) on the shared machine.

The TensorFlow demo and the PyTorch port (which agree with each other) differ from the MATLAB release; the settings
``alternation=tensorflow lr_spacing=linear lr_end=1e-6 weight_decay=0 text_zero_mean=false`` select their
behaviour: ``F`` and ``G`` drawn from N(0, 1) (TF ``DCMH_demo.py:187-189``, port ``main.py:44-45,53``), the image
net updated before the text net (TF ``:238-241``, port ``main.py:73-136``), ``floor(n / batch)`` steps per net
and epoch (TF ``:38,61``, port ``main.py:74,106``), learning rate ``linspace(10^-1.5, 1e-6, epochs + 1)``, epoch
``e`` using entry ``e`` (TF ``:182``, port ``main.py:61,157``), no weight decay (TF ``:219``, port
``main.py:58-59``), raw text (TF ``:66``, port ``main.py:112``). Configs without these fields (the ``linear``
student's, which inherits this class) keep this student's behaviour from before it followed the MATLAB release:
that TensorFlow behaviour with their own learning rates (:data:`EARLIER_SETTINGS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, Supervision
from cmhbench.lazy import F, nn, torch, torch_class
from cmhbench.registry import MethodSpec
from cmhbench.training import encode_in_batches, keep_freed_memory, mlp

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class DCMHConfig:
    """DCMH hyperparameters: the official MATLAB release (``DCMH_demo.m``, ``update_net.m``, ``net_structure_*.m``)."""

    gamma: float = hp(1.0, "weight of the quantization term (DCMH_demo.m:22)", ge=0)
    eta: float = hp(1.0, "weight of the bit-balance term (DCMH_demo.m:23)", ge=0)
    optimizer: str = hp("sgd", "sgd (official, update_net.m), or adam", choices=("sgd", "adam"))
    lr_start: float = hp(10**-1.5, "learning rate of the first epoch (DCMH_demo.m:20-21)", gt=0)
    lr_end: float = hp(1e-3, "learning rate of the last epoch (DCMH_demo.m:20-21)", gt=0)
    lr_spacing: str = hp(
        "log", "log: logspace(lr_start, lr_end, epochs) (MATLAB); linear: linspace over epochs + 1 points "
        "(TensorFlow demo, PyTorch port)", choices=("log", "linear"),
    )
    weight_decay: float = hp(5e-4, "weight decay of both nets, biases included (update_net.m:2)", ge=0)
    batch_size: int = hp(128, "pairs per minibatch (DCMH_demo.m:24)", ge=1)
    epochs: int = hp(500, "alternating passes (DCMH_demo.m:19)", ge=1)
    text_hidden: int = hp(8192, "hidden width of the text net (net_structure_txt.m:2)", ge=1)
    image_hidden: int = hp(
        0, "0 (official): the image net is the hash layer alone; > 0 puts a hidden layer of this width before it "
        "(not official; small tests)", ge=0,
    )
    init_std: float = hp(0.01, "std of the N(0, std) initial weights and biases (net_structure_*.m)", gt=0)
    text_zero_mean: bool = hp(True, "subtract the training mean from the text input (DCMH_demo.m:27)")
    alternation: str = hp(
        "matlab", "matlab: F = G = 0 at start, text net first, ceil(n / batch) steps (process_DCMH.m); "
        "tensorflow: F, G ~ N(0, 1), image net first, floor(n / batch) steps (TF demo, PyTorch port)",
        choices=("matlab", "tensorflow"),
    )


# What a config without these fields gets: this student's behaviour before it followed the MATLAB release.
# The ``linear`` student's config (plugins/students/linear.py) predates them and keeps that behaviour.
EARLIER_SETTINGS = {"weight_decay": 0.0, "lr_spacing": "linear", "text_zero_mean": False, "alternation": "tensorflow"}


def official_nets(
    image_dim: int, text_dim: int, text_hidden: int, bits: int, init_std: float, image_hidden: int = 0
) -> tuple[nn.Module, nn.Module]:
    """``(image, text)``: the official hash layer ``Linear(d_image, bits)`` (``net_structure_img.m:11-17``; with
    ``image_hidden > 0``, not official, ``d_image -> image_hidden -> ReLU -> bits``) and text net
    ``Linear(d_text, text_hidden) -> ReLU -> Linear(text_hidden, bits)`` (``net_structure_txt.m``), every
    weight and bias drawn from N(0, init_std^2) with torch's global generator; the text net is drawn first, as
    officially (``process_DCMH.m:24-25``)."""
    text = mlp(text_dim, [text_hidden], bits)
    # Same (hidden, d_text) weight, stored column-major: autograd then forms its gradient as x^T g, which
    # for a narrow input and a wide layer is several times faster than the (g^T x)^T it uses otherwise.
    text[0].weight = nn.Parameter(torch.empty(text_dim, text_hidden).t())
    image = mlp(image_dim, [image_hidden], bits) if image_hidden else nn.Linear(image_dim, bits)
    with torch.no_grad():
        for net in (text, image):
            for p in net.parameters():
                p.normal_(0.0, init_std)
    return image, text


def lr_schedule(start: float, end: float, epochs: int, spacing: str) -> np.ndarray:
    """``(epochs,)`` learning rate of each epoch: ``log`` is MATLAB's ``logspace(log10 start, log10 end, epochs)``
    (``DCMH_demo.m:20-21``); ``linear`` is ``linspace(start, end, epochs + 1)[:epochs]`` (port ``main.py:61,157``)."""
    if spacing == "log":
        if epochs == 1:
            return np.array([end])  # MATLAB's logspace(a, b, 1) is 10^b
        return np.logspace(math.log10(start), math.log10(end), epochs)
    return np.linspace(start, end, epochs + 1)[:epochs]


SPARSE_INPUT_DENSITY = 0.05  # text inputs with fewer non-zeros than this take the sparse first layer


@torch_class
def _CentredSparseLinear():
    """The ``autograd.Function`` class ``_CentredSparseLinear``, defined on first use (see :mod:`cmhbench.lazy`)."""

    class _CentredSparseLinear(torch.autograd.Function):
        """``(x - mean) W^T + b`` computed from the non-zeros of ``x``: see :func:`centred_sparse_linear`."""

        @staticmethod
        def forward(ctx, x, mean, weight, bias):
            rows, cols = x.nonzero(as_tuple=True)  # row-major order: rows sorted
            values = x[rows, cols]
            offsets = torch.searchsorted(rows, torch.arange(x.shape[0], device=x.device))
            wt = weight.t().contiguous()  # (d, h); no copy for official_nets' column-major weight
            out = F.embedding_bag(cols, wt, offsets, mode="sum", per_sample_weights=values)
            out += bias - mean @ wt
            ctx.save_for_backward(rows, cols, values, mean)
            return out

        @staticmethod
        def backward(ctx, grad):
            rows, cols, values, mean = ctx.saved_tensors
            grad_bias = grad.sum(0)
            grad_wt = torch.outer(mean, grad_bias).neg_()  # -(mean^T)(1^T g)
            grad_wt.index_add_(0, cols, grad[rows] * values[:, None])  # + x^T g over the non-zeros
            return None, None, grad_wt.t(), grad_bias

    return _CentredSparseLinear


def centred_sparse_linear(x: Tensor, mean: Tensor, linear: nn.Linear) -> Tensor:
    """``linear(x - mean)`` for an ``(m, d)`` input ``x`` with few non-zeros (tag bag-of-words) and a ``(d,)``
    ``mean``: ``(m, h)``, equal up to float rounding, differentiable in the layer's weight and bias.

    The product runs over the non-zeros only (an embedding-bag sum of weight columns) and subtracts
    ``mean W^T`` once; backward forms the weight gradient as the non-zeros' ``x^T g`` (an index-add) minus the
    outer product ``mean^T (1^T g)``. The dense path multiplies every zero of the centred input: for MIRFlickr's
    1386 tags (about ten per item) into the 8192-wide text layer a text step takes about 0.03 s instead of
    0.08-0.11 s on one thread.
    """
    return _CentredSparseLinear.cls().apply(x, mean, linear.weight, linear.bias)


def text_forward(net: nn.Module, text: Tensor, mean: Optional[Tensor]) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """``(forward, inputs)`` with ``forward(inputs[idx]) == net(text[idx] - mean)`` up to rounding (``mean`` None:
    no centring). For a sparse ``(n, d)`` ``text`` (fewer than :data:`SPARSE_INPUT_DENSITY` non-zeros) and an
    MLP ``net`` the inputs stay raw and the first layer is :func:`centred_sparse_linear`; otherwise the inputs
    are the centred text and ``forward`` is ``net``."""
    sparse = (
        isinstance(net, nn.Sequential) and len(net) > 1 and isinstance(net[0], nn.Linear)
        and int(torch.count_nonzero(text)) < SPARSE_INPUT_DENSITY * text.numel()
    )
    if not sparse:
        return net, text if mean is None else text - mean
    centre = torch.zeros_like(text[0]) if mean is None else mean
    rest = net[1:]
    return (lambda x: rest(centred_sparse_linear(x, centre, net[0]))), text


class DCMH:
    """An image hash layer and a text MLP trained with DCMH's alternating pairwise likelihood objective."""

    name = "dcmh"

    def __init__(self, config: DCMHConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.heads: dict[Modality, torch.nn.Module] = {}
        self.text_mean: Optional[Tensor] = None
        self.optimisers: dict[Modality, torch.optim.Optimizer] = {}

    def setting(self, name: str):
        """The config's value of ``name``, or :data:`EARLIER_SETTINGS`' for configs that lack the field."""
        return getattr(self.config, name, EARLIER_SETTINGS[name])

    def build_heads(self, train: PairedFeatures, bits: int) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The image and text nets (subclasses swap the architecture): :func:`official_nets`."""
        c = self.config
        return official_nets(train.image.shape[1], train.text.shape[1], c.text_hidden, bits, c.init_std, c.image_hidden)

    def _step(self, net, x, idx, other, similarity, own, codes, opt) -> None:
        """One optimiser step of ``net`` on the batch ``idx`` (``m`` rows): its outputs ``U`` ``(m, bits)``
        replace rows ``idx`` of ``own`` ``(n, bits)``; ``other`` ``(n, bits)`` is the other net's fixed outputs.
        The gradient of the objective with respect to ``U``, computed in closed form as the official code does
        (``process_DCMH.m:42-45,66-69``), divided by ``n m`` (``update_net.m:6``), is back-propagated:

            0.5 (sigmoid(0.5 U other^T) - S[idx]) other + 2 gamma (U - B[idx]) + 2 eta own^T 1
        """
        c = self.config
        n, m = similarity.shape[0], len(idx)
        out = net(x[idx])
        with torch.no_grad():
            own[idx] = out
            grad = 0.5 * (torch.sigmoid(0.5 * out @ other.T) - similarity[idx]) @ other
            grad += 2.0 * c.gamma * (out - codes[idx]) + 2.0 * c.eta * own.sum(0)
            grad /= n * m
        self._update(opt, (out * grad).sum())  # d/dU of this surrogate is grad

    def _optimiser(self, net: nn.Module) -> torch.optim.Optimizer:
        """``net``'s optimiser at ``lr_start``: plain SGD (no momentum), whose weight decay :meth:`_update`
        adds to the gradients in place, or Adam with its own (L2) weight decay."""
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(net.parameters(), lr=c.lr_start)
        return torch.optim.Adam(net.parameters(), lr=c.lr_start, weight_decay=self.setting("weight_decay"))

    def _update(self, opt: torch.optim.Optimizer, surrogate: Tensor) -> None:
        """Back-propagate ``surrogate`` and step ``opt``; with SGD, ``w -= lr (dJ/dw + weight_decay w)`` for
        weights and biases (``update_net.m:5-8``). The decay is added to the gradient in place, which is what
        ``SGD(weight_decay=...)`` computes, without the copy of every parameter it allocates per step (30 ms
        on a 1386 x 8192 text layer)."""
        opt.zero_grad(set_to_none=True)
        surrogate.backward()
        decay = self.setting("weight_decay") if self.config.optimizer == "sgd" else 0.0
        if decay:
            with torch.no_grad():
                for group in opt.param_groups:
                    for p in group["params"]:
                        p.grad.add_(p, alpha=decay)
        opt.step()

    def fit(self, train: PairedFeatures, supervision: Supervision, bits: int) -> None:
        """Alternate text-net, image-net and ``B`` updates for ``epochs`` epochs (order per ``alternation``)."""
        c = self.config
        dev = self.ctx.device
        n = len(train)
        s = supervision.rows(dev)  # S by row blocks (slices of S where the strategy keeps it dense)
        if dev.type == "cpu":
            keep_freed_memory()
        self.text_mean = train.text.mean(0) if self.setting("text_zero_mean") else None
        image_net, text_net = (net.to(dev) for net in self.build_heads(train, bits))
        self.heads = {Modality.IMAGE: image_net, Modality.TEXT: text_net}
        text_step, text = text_forward(text_net, train.text, self.text_mean)
        gen = self.ctx.generator()
        matlab = self.setting("alternation") == "matlab"
        if matlab:  # process_DCMH.m:18-19
            f_buf, g_buf = torch.zeros(n, bits, device=dev), torch.zeros(n, bits, device=dev)
        else:  # TF DCMH_demo.py:187-188, port main.py:44-45
            f_buf = torch.randn(n, bits, generator=gen).to(dev)
            g_buf = torch.randn(n, bits, generator=gen).to(dev)
        opt_i, opt_t = self._optimiser(image_net), self._optimiser(text_net)
        self.optimisers = {Modality.IMAGE: opt_i, Modality.TEXT: opt_t}
        schedule = lr_schedule(c.lr_start, c.lr_end, c.epochs, self.setting("lr_spacing"))
        batch = min(c.batch_size, n)
        steps = math.ceil(n / batch) if matlab else max(1, n // batch)
        sides = [(image_net, train.image, g_buf, f_buf, s, opt_i),
                 (text_step, text, f_buf, g_buf, s.T.contiguous(), opt_t)]  # S^T copied once: fast row reads
        if matlab:
            sides.reverse()
        for epoch in self.ctx.progress.track(range(c.epochs), c.epochs, f"{self.name} {bits} bits"):
            codes = torch.sign(c.gamma * (f_buf + g_buf))
            for opt in (opt_i, opt_t):
                for group in opt.param_groups:
                    group["lr"] = float(schedule[epoch])
            for net, x, other, own, s_side, opt in sides:
                for _ in range(steps):
                    idx = torch.randperm(n, generator=gen)[:batch].to(dev)
                    self._step(net, x, idx, other, s_side, own, codes, opt)

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` real outputs; sign gives codes."""
        modality = Modality(modality)
        if modality is Modality.TEXT and self.text_mean is not None:
            x = x - self.text_mean.to(x.device)
        return encode_in_batches(self.heads[modality], x)


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``dcmh`` student."""
    register(
        MethodSpec(
            name="dcmh",
            kind="student",
            build=DCMH,
            config=DCMHConfig,
            paper="Jiang, Li. Deep Cross-Modal Hashing. CVPR 2017.",
            code="https://github.com/jiangqy/DCMH-CVPR2017",
            summary="pairwise negative log-likelihood on S with quantization and bit-balance terms, alternating B updates",
        )
    )

"""Teacher ``dgcpn``: Deep Graph-neighbor Coherence Preserving Network.

Paper: Jun Yu, Hao Zhou, Yibing Zhan, Dacheng Tao. "Deep Graph-neighbor Coherence Preserving
Network for Unsupervised Cross-modal Hashing." AAAI 2021 (arXiv 2012.13538).
Official code: https://github.com/Atmegal/DGCPN (PyTorch, built on the DJSRH code base).

Source caveat: the stored copy of the official repository available while writing this plugin
holds only its README, so the code could not be read. The formulas below follow the paper's
description (graph-neighbour coherence over a kNN graph of the joint feature affinity, three
similarity-preserving losses, half-real half-binary codes) and the DJSRH code base it extends;
where a constant could not be checked against the official scripts it is marked "unverified".

Similarity, computed once over all n training pairs from the fixed input features:

1. Coexistent (joint) affinity ``A = alpha cos(X_I, X_I) + (1 - alpha) cos(X_T, X_T)``.
2. kNN graph: ``P`` keeps each row's ``k`` largest entries of ``A`` (others 0) and rows are
   normalised to sum 1, so row i describes how i spreads over its neighbours.
3. Graph-neighbour coherence ``C_ij = cos(P_i, P_j)`` in ``[0, 1]``: two items are coherent
   when they have the same neighbours, even if their own features differ (the paper's point).
4. Target ``S = (1 - gamma) A + gamma (2 C - 1)`` in ``[-1, 1]``.

Loss per minibatch with continuous codes ``H = tanh(h)`` of both heads and binary codes
``B = sign(H)`` (constants), ``cos`` the row-normalised inner product, MSE against ``S``:
``sum over (X, Y) in {(I, T), (I, I), (T, T)}`` of ``w_XY * (||S - cos(H_X, H_Y)||^2 +
||S - cos(H_X, B_Y)||^2 + ||S - cos(B_X, H_Y)||^2)`` with ``w_IT = 1`` (inter-modality) and
``w_II = w_TT = lambda`` (intra-modality consistency). The binary-code terms are the paper's
half-real half-binary optimisation: each continuous code is pulled towards the similarities
that the other side's *binary* code gives, which reduces the quantisation gap.

Optimisation as in the DJSRH code base: two SGD optimisers (image lr 0.001, text lr 0.01, momentum
0.9, weight decay 5e-4), batch 32.

Defaults: alpha 0.5, gamma 0.3, lambda 0.1 (unverified), k = 5% of the training pairs per item
(unverified; the paper sets K on MIRFlickr in the thousands), 100 epochs. No per-dataset
settings are registered because the official per-dataset values could not be checked.

Departures, and why:

- Feature-based heads ``d -> 1024 -> bits`` (official: VGG/AlexNet image branch, wider text MLP)
  for CPU time; ``--set teacher.hidden=4096`` widens them.
- The constants above could not be checked against the official scripts (see the caveat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable


from cmhbench.config import hp
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.lazy import F, torch
from cmhbench.registry import MethodSpec
from cmhbench.training import cosine_similarity_matrix, encode_in_batches, l2_normalize, minibatches, paired_mlp_heads, sgd_per_head, step

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class DGCPNConfig:
    """DGCPN hyperparameters (see the module docstring for which are unverified)."""

    alpha: float = hp(0.5, "weight of the image affinity in the joint affinity (1-alpha: text)", ge=0, le=1)
    gamma: float = hp(0.3, "weight of the graph-neighbour coherence in the target", ge=0, le=1)
    lamb: float = hp(0.1, "weight of the intra-modality (I-I, T-T) terms", ge=0)
    k: int = hp(0, "neighbours per item in the kNN graph (0: use k_fraction)", ge=0)
    k_fraction: float = hp(0.05, "neighbours as a fraction of the training pairs when k = 0", gt=0, le=1)
    lr_image: float = hp(0.001, "SGD learning rate of the image head", gt=0)
    lr_text: float = hp(0.01, "SGD learning rate of the text head", gt=0)
    momentum: float = hp(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = hp(5e-4, "SGD weight decay", ge=0)
    batch_size: int = hp(32, "pairs per minibatch", ge=2)
    epochs: int = hp(100, "passes over the training pairs", ge=1)
    hidden: int = hp(1024, "hidden width of both heads", ge=1)


def neighbour_coherence(affinity: Tensor, k: int) -> Tensor:
    """``(n, n)`` graph-neighbour coherence ``cos(P_i, P_j)`` in ``[0, 1]`` of an ``(n, n)``
    affinity: ``P`` keeps each row's ``k`` largest entries (clamped at 0), rows summing to 1."""
    k = min(k, affinity.shape[1])
    top = torch.topk(affinity, k, dim=1)
    p = torch.zeros_like(affinity).scatter_(1, top.indices, top.values.clamp(min=0.0))
    p = p / p.sum(1, keepdim=True).clamp(min=1e-12)
    return (l2_normalize(p) @ l2_normalize(p).T).clamp(0.0, 1.0)


def dgcpn_similarity(image: Tensor, text: Tensor, alpha: float, gamma: float, k: int) -> Tensor:
    """``(n, n)`` DGCPN target ``(1 - gamma) A + gamma (2 C - 1)`` for ``(n, d)`` features, with the
    joint affinity ``A = alpha cos_I + (1 - alpha) cos_T`` and its neighbour coherence ``C``."""
    a = alpha * cosine_similarity_matrix(image) + (1.0 - alpha) * cosine_similarity_matrix(text)
    return (1.0 - gamma) * a + gamma * (2.0 * neighbour_coherence(a, k) - 1.0)


def half_binary_loss(h_x: Tensor, h_y: Tensor, target: Tensor) -> Tensor:
    """Scalar ``mse(cos(H_X, H_Y)) + mse(cos(H_X, B_Y)) + mse(cos(B_X, H_Y))`` against ``target``
    ``(m, m)``, for continuous codes ``(m, bits)`` and ``B = sign(H)`` held constant."""
    hx, hy = l2_normalize(h_x), l2_normalize(h_y)
    bx, by = l2_normalize(torch.sign(h_x.detach())), l2_normalize(torch.sign(h_y.detach()))
    return F.mse_loss(hx @ hy.T, target) + F.mse_loss(hx @ by.T, target) + F.mse_loss(bx @ hy.T, target)


class DGCPN:
    """Two MLP hash heads preserving the graph-neighbour-coherence similarity."""

    def __init__(self, config: DGCPNConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self.heads: dict[Modality, torch.nn.Module] = {}

    def fit(self, train: PairedFeatures, bits: int) -> None:
        """Build the target over the training pairs, then train both heads with minibatch SGD."""
        c = self.config
        dev = self.ctx.device
        n = len(train)
        k = c.k or max(1, round(c.k_fraction * n))
        target = dgcpn_similarity(train.image, train.text, c.alpha, c.gamma, k)
        self.heads = paired_mlp_heads(train.image.shape[1], train.text.shape[1], c.hidden, bits, dev)
        lrs = {Modality.IMAGE: c.lr_image, Modality.TEXT: c.lr_text}
        optimisers = sgd_per_head(self.heads, lrs, c.momentum, c.weight_decay)
        gen = self.ctx.generator()
        for _ in self.ctx.progress.track(range(c.epochs), c.epochs, f"dgcpn {bits} bits"):
            for idx in minibatches(n, c.batch_size, gen, drop_last=True):
                idx = idx.to(dev)
                s = target[idx][:, idx]
                h_i = torch.tanh(self.heads[Modality.IMAGE](train.image[idx]))
                h_t = torch.tanh(self.heads[Modality.TEXT](train.text[idx]))
                loss = (
                    half_binary_loss(h_i, h_t, s)
                    + c.lamb * half_binary_loss(h_i, h_i, s)
                    + c.lamb * half_binary_loss(h_t, h_t, s)
                )
                step(optimisers, loss)

    def encode(self, x: Tensor, modality: Modality) -> Tensor:
        """``(n, d)`` features -> ``(n, bits)`` ``tanh`` outputs (continuous; sign gives codes)."""
        return torch.tanh(encode_in_batches(self.heads[Modality(modality)], x))


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
            summary="preserves a joint affinity blended with kNN-graph neighbour coherence, half-real half-binary losses",
        )
    )

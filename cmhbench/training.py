"""Small building blocks that method plugins share: seeding, MLP heads, minibatches, encoding."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

import numpy as np

from cmhbench.lazy import nn, no_grad, torch

if TYPE_CHECKING:
    from torch import Tensor


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, *, dropout: float = 0.0, batch_norm: bool = False) -> nn.Sequential:
    """``Linear -> ReLU (-> BatchNorm) (-> Dropout)`` per hidden width, then a final ``Linear`` to ``out_dim``."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def minibatches(n: int, batch_size: int, generator: torch.Generator, *, drop_last: bool = False) -> Iterator[Tensor]:
    """Index tensors of one shuffled pass over ``n`` items (CPU int64), drawn from ``generator``.

    With ``drop_last``, a final batch smaller than ``batch_size`` is dropped unless it is the only one.
    """
    perm = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield perm[start : start + batch_size]


@no_grad
def encode_in_batches(module: nn.Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    """Apply ``module`` in eval mode to ``(n, d)`` ``x`` in batches; returns ``(n, out)``."""
    was_training = module.training
    module.eval()
    try:
        return torch.cat([module(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    finally:
        module.train(was_training)


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows of ``x`` scaled to unit Euclidean norm (zero rows stay zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp(min=eps)


class NormalizedRows:
    """The rows of ``x`` ``(n, d)`` scaled to unit Euclidean norm, as :func:`l2_normalize` gives them, without
    a normalised copy of ``x``: it keeps a reference to ``x`` and the ``(n,)`` float32 row norms (clamped at
    ``eps``), and normalises only the rows asked for. Indexing (``view[rows]``, a slice or a 1-D index
    tensor) returns ``(len(rows), d)`` float32; :meth:`times_transposed` gives ``left @ view^T`` over all ``n``
    rows. Values agree with ``l2_normalize(x)`` to float32 rounding."""

    def __init__(self, x: Tensor, eps: float = 1e-12, block_entries: int = 1 << 24) -> None:
        self.x = x
        self.block_rows = max(1, block_entries // max(1, int(x.shape[1])))
        self.norms = torch.cat([x[start : start + self.block_rows].float().norm(dim=1).clamp(min=eps)
                                for start in range(0, int(x.shape[0]), self.block_rows)]) if x.shape[0] else \
            torch.empty(0, dtype=torch.float32, device=x.device)

    @property
    def shape(self) -> torch.Size:
        return self.x.shape

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, rows: "Tensor | slice") -> Tensor:
        return self.x[rows].float() / self.norms[rows].unsqueeze(1)

    def times_transposed(self, left: Tensor) -> Tensor:
        """``left @ view^T``, ``(r, n)`` float32 for ``left`` ``(r, d)``, over row blocks of ``x`` (no float
        copy of the whole of ``x``)."""
        n = int(self.x.shape[0])
        out = torch.empty(left.shape[0], n, dtype=torch.float32, device=left.device)
        for start in range(0, n, self.block_rows):
            stop = min(n, start + self.block_rows)
            out[:, start:stop] = (left @ self.x[start:stop].float().T).div_(self.norms[start:stop])
        return out


def times_transposed(left: Tensor, right: "Tensor | NormalizedRows") -> Tensor:
    """``left @ right^T`` ``(r, n)`` for ``left`` ``(r, d)`` and ``right`` ``(n, d)``, a tensor or a
    :class:`NormalizedRows` view."""
    if isinstance(right, NormalizedRows):
        return right.times_transposed(left)
    return left @ right.T


def blockwise_products(views: Sequence["Tensor | NormalizedRows"], pairs: Sequence[tuple[int, int]],
                       transform: Optional[Callable[[int, Tensor], Tensor]] = None,
                       entries: int = 1 << 21) -> list[Tensor]:
    """float64 sums ``Z_a^T Z_b`` ``(d_a, d_b)`` for each ``(a, b)`` in ``pairs``, where ``Z_v`` are the rows of
    ``views[v]`` (``(n, d_v)``, all with the same ``n``), passed through ``transform(v, rows)`` when given and
    cast to float64. Summed over row blocks of at most ``entries`` entries of the widest view (default 2^21:
    16 MiB as float64), so no transformed or float64 copy of a whole view is held. The first block's
    products start the sums and later blocks are added by ``addmm_``: data of one block gives exactly the
    products of the whole matrices."""
    n = int(views[0].shape[0])
    step = max(1, entries // max(1, max(int(v.shape[1]) for v in views)))
    sums: Optional[list[Tensor]] = None
    for start in range(0, n, step):
        z = [v[start : start + step] for v in views]
        z = [(block if transform is None else transform(i, block)).double() for i, block in enumerate(z)]
        if sums is None:
            sums = [z[a].T @ z[b] for a, b in pairs]
        else:
            for total, (a, b) in zip(sums, pairs):
                total.addmm_(z[a].T, z[b])
    if sums is None:
        sums = [torch.zeros(int(views[a].shape[1]), int(views[b].shape[1]), dtype=torch.float64, device=views[0].device)
                for a, b in pairs]
    return sums


def cosine_similarity_matrix(a: Tensor, b: Tensor | None = None) -> Tensor:
    """``(n, m)`` cosine similarities between the rows of ``a`` ``(n, d)`` and ``b`` ``(m, d)`` (``b = a`` if None)."""
    a_n = l2_normalize(a)
    return a_n @ (a_n if b is None else l2_normalize(b)).T


def fill_block_diagonal_(block: Tensor, rows: Tensor, cols: Optional[Tensor] = None, value: float = 1.0) -> Tensor:
    """Set the entries of ``block`` ``= S[rows][:, cols]`` (``cols`` None: all columns) that lie on the
    diagonal of S (``rows[p] == cols[q]``) to ``value``, in place; returns ``block``."""
    if cols is None:
        block[torch.arange(len(rows), device=block.device), rows] = value
    else:
        block[rows[:, None] == cols[None, :]] = value
    return block



def sgd_per_head(heads: dict, lrs: dict, momentum: float, weight_decay: float) -> list[torch.optim.Optimizer]:
    """One SGD optimiser per head (in ``heads`` order), each with its own learning rate from ``lrs``."""
    return [
        torch.optim.SGD(head.parameters(), lr=lrs[m], momentum=momentum, weight_decay=weight_decay)
        for m, head in heads.items()
    ]


def step(optimisers: Sequence[torch.optim.Optimizer], loss: Tensor) -> None:
    """Zero every optimiser's gradients, back-propagate the scalar ``loss``, step every optimiser."""
    for opt in optimisers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimisers:
        opt.step()


def bit_balance(out: Tensor, buffer: Tensor, idx: Tensor) -> Tensor:
    """DCMH's bit-balance term ``||F^T 1||^2``: ``out`` ``(m, bits)`` are the batch rows ``idx`` of
    the ``(n, bits)`` output ``buffer``; the other rows enter as constants. Returns a scalar."""
    rest = torch.ones(buffer.shape[0], dtype=torch.bool, device=buffer.device)
    rest[idx] = False
    return (out.sum(0) + buffer[rest].sum(0)).pow(2).sum()


def keep_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to serve blocks up to 1 GiB from its heap and to keep freed memory
    (``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``); False where there is no glibc.

    Wide layers allocate and free gradients and activations in blocks above glibc's 32 MiB mmap
    ceiling (a 4096 x 8192 weight gradient is 128 MiB), so by default each one is a fresh ``mmap``
    whose pages the kernel zeroes on first touch: for ``dadh`` at width 8192 on Wiki, 2.6 s of
    system time in an epoch of 22.5 s CPU, 0.05 s with this. Process-wide and lasting:
    the process keeps its peak heap (about 2 GB here) for reuse instead of returning it.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))

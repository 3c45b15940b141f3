"""Hamming-ranking retrieval metrics, following the contract in DESIGN.md.

- Relevance: a database item is relevant to a query when they share a label (``q . l > 0``).
- Ranking: ascending Hamming distance, ties in database order (a stable sort).
- ``map``: mean over *all* queries of AP over the full ranking; a query with no relevant item
  scores 0 and stays in the mean (the DCMH convention).
- ``map@K``: AP over the first K items with R = relevant items within the top K (the
  DJSRH/DGCPN/DeepHash convention); 0 when the top K holds no relevant item.
- ``p@K``: relevant items among the first ``min(K, n)`` divided by ``min(K, n)``.
- ``map_tie_aware``: expected AP@all over all orders of equal-distance items (McSherry & Najork,
  ECIR 2008), in closed form from per-distance counts; equals ``map`` when no ties fall across
  relevant and irrelevant items.
- ``pr_curve``: precision and recall of the items within Hamming radius r, r = 0..bits, averaged
  over queries (a query with nothing retrieved has precision 0; with nothing relevant, recall 0);
  ``p@r2`` is its precision at radius 2.
- ``pk_curve``: ``p@K`` at the cutoffs of :func:`pk_curve_ks` (for plots).

The ranking itself is summarised by :mod:`cmhbench.evaluation.engine` (numba counting sort on
the CPU, torch on CUDA); everything here is float64 arithmetic on those integer summaries with
exactly rounded means, so a metric never depends on the device or on chunking.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Optional, Sequence

import numpy as np

from cmhbench.evaluation.engine import SCALE, RankingSummary, summarize_cpu, summarize_torch
from cmhbench.lazy import is_tensor, torch

DEFAULT_TOPK = (50, 500)
DEFAULT_PRECISION_AT = (50, 100, 500, 1000)
PK_CURVE_GRID = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000)


def pk_curve_ks(n_database: int) -> tuple[int, ...]:
    """The cutoffs of the stored precision@K curve: a log-like grid up to, and including, n."""
    return tuple(k for k in PK_CURVE_GRID if k < n_database) + (n_database,)
TORCH_BYTES_PER_CELL = 48  # distances, sort indices, relevance, ordinals, float64 and int64 terms


def default_chunk_size(n_database: int, budget_bytes: int = 256 * 2**20) -> int:
    """Queries per chunk for the torch path, so its work arrays stay within ``budget_bytes``."""
    return max(1, budget_bytes // (TORCH_BYTES_PER_CELL * max(1, n_database)))


# Device files present wherever a CUDA (or ROCm) device can be: without any of them, torch (1.7 s
# to import) is not asked. Other systems than Linux always ask torch.
GPU_DEVICE_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def cuda_available() -> bool:
    """Whether torch sees a CUDA device, answered without importing torch where no GPU driver is present."""
    if sys.platform.startswith("linux") and not any(os.path.exists(f) for f in GPU_DEVICE_FILES):
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: Optional[str | torch.device] = None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; otherwise the named device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    return torch.device(device)


def _wants_cuda(device: Optional[str | torch.device]) -> bool:
    if device is None or str(device) == "auto":
        return cuda_available()
    return str(device).startswith("cuda")


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if is_tensor(x) else np.asarray(x)


def _mean(values: np.ndarray) -> float:
    """Exactly rounded mean of a 1-D float64 array."""
    return math.fsum(values.tolist()) / len(values) if len(values) else 0.0


def tie_aware_ap(hist_all: np.ndarray, hist_rel: np.ndarray) -> np.ndarray:
    """Expected AP@all per query over random orders of tied items, from ``(q, bits+1)`` counts.

    For a group of ``n`` items at one distance, ``r`` of them relevant, preceded by ``N`` items of
    which ``Rp`` relevant, the expected sum of precisions at its relevant items is
    ``r/n * [(Rp + 1) * (H(N+n) - H(N)) + (r-1)/(n-1) * (n - (N+1) * (H(N+n) - H(N)))]``
    with ``H`` the harmonic numbers.
    """
    n_db = int(hist_all[0].sum()) if len(hist_all) else 0
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n_db + 1, dtype=np.float64))])
    n = hist_all.astype(np.float64)
    r = hist_rel.astype(np.float64)
    before = np.cumsum(hist_all, 1) - hist_all
    rel_before = (np.cumsum(hist_rel, 1) - hist_rel).astype(np.float64)
    d_h = harmonic[before + hist_all] - harmonic[before]
    spread = np.divide(r - 1.0, n - 1.0, out=np.zeros_like(n), where=n > 1)
    term = (rel_before + 1.0) * d_h + spread * (n - (before + 1.0) * d_h)
    contrib = np.divide(r, n, out=np.zeros_like(n), where=n > 0) * term
    contrib[r == 0] = 0.0
    total_rel = r.sum(1)
    return np.divide(contrib.sum(1), total_rel, out=np.zeros_like(total_rel), where=total_rel > 0)


def metrics_from_summary(
    summary: RankingSummary, topk: Sequence[int], precision_at: Sequence[int], curve_ks: Sequence[int] = ()
) -> dict[str, Any]:
    """All contract metrics from a :class:`RankingSummary` (JSON-ready dict); ``curve_ks`` are the
    cutoffs of the stored ``pk_curve`` (none: no curve)."""
    n_q = summary.ap_fixed.shape[0]
    n_db = summary.n_database
    k_index = {k: i for i, k in enumerate(summary.ks)}
    total_rel = summary.hist_rel.sum(1)
    out: dict[str, Any] = {}
    ap = np.divide(summary.ap_fixed.astype(np.float64) / SCALE, total_rel, out=np.zeros(n_q), where=total_rel > 0)
    out["map"] = _mean(ap)
    for k in topk:
        i = k_index[k]
        rel_k = summary.rel_at[:, i]
        apk = np.divide(summary.apk_fixed[:, i].astype(np.float64) / SCALE, rel_k, out=np.zeros(n_q), where=rel_k > 0)
        out[f"map@{k}"] = _mean(apk)
    out["map_tie_aware"] = _mean(tie_aware_ap(summary.hist_all, summary.hist_rel))
    for k in precision_at:
        out[f"p@{k}"] = _mean(summary.rel_at[:, k_index[k]] / min(k, n_db))
    retrieved = np.cumsum(summary.hist_all, 1).astype(np.float64)
    true_pos = np.cumsum(summary.hist_rel, 1).astype(np.float64)
    precision = np.divide(true_pos, retrieved, out=np.zeros_like(true_pos), where=retrieved > 0)
    recall = np.divide(true_pos, total_rel[:, None].astype(np.float64), out=np.zeros_like(true_pos), where=total_rel[:, None] > 0)
    curve_p = [_mean(col) for col in precision.T]
    curve_r = [_mean(col) for col in recall.T]
    bits = summary.hist_all.shape[1] - 1
    out["p@r2"] = curve_p[min(2, bits)]
    out["pr_curve"] = {"radius": list(range(bits + 1)), "precision": curve_p, "recall": curve_r}
    if curve_ks:
        out["pk_curve"] = {"k": list(curve_ks), "precision": [_mean(summary.rel_at[:, k_index[k]] / min(k, n_db)) for k in curve_ks]}
    out["n_queries"] = int(n_q)
    out["n_database"] = int(n_db)
    out["queries_without_relevant"] = int((total_rel == 0).sum())
    return out


def retrieval_metrics(
    query_codes: torch.Tensor | np.ndarray,
    database_codes: torch.Tensor | np.ndarray,
    query_labels: torch.Tensor | np.ndarray,
    database_labels: torch.Tensor | np.ndarray,
    *,
    topk: Sequence[int] = DEFAULT_TOPK,
    precision_at: Sequence[int] = DEFAULT_PRECISION_AT,
    device: Optional[str | torch.device] = None,
    engine: str = "auto",
    chunk_size: Optional[int] = None,
    pk_curve: bool = True,
) -> dict[str, Any]:
    """All contract metrics for one retrieval direction.

    ``query_codes`` ``(q, bits)`` and ``database_codes`` ``(n, bits)`` hold ``{-1,+1}``;
    ``query_labels`` ``(q, c)`` and ``database_labels`` ``(n, c)`` are 0/1 multi-hot.
    ``engine``: ``"cpu"`` (numba counting sort), ``"torch"`` (sort-based, on ``device``), or
    ``"auto"`` (torch on CUDA, the CPU kernel otherwise). Every engine gives identical numbers.
    Returns a JSON-ready dict with ``map``, ``map@K``, ``map_tie_aware``, ``p@K``, ``p@r2``,
    ``pr_curve`` (``radius``, ``precision``, ``recall`` lists), ``n_queries``, ``n_database``
    and ``queries_without_relevant``, and with ``pk_curve`` the ``pk_curve`` (``k``, ``precision``).
    """
    if device is None and is_tensor(query_codes):
        device = query_codes.device
    q_shape, db_shape = tuple(query_codes.shape), tuple(database_codes.shape)
    if len(q_shape) != 2 or len(db_shape) != 2 or q_shape[1] != db_shape[1]:
        raise ValueError(f"codes must be (q, bits) and (n, bits) with equal bits, got {q_shape} and {db_shape}")
    if query_labels.shape[0] != q_shape[0] or database_labels.shape[0] != db_shape[0] or query_labels.shape[1] != database_labels.shape[1]:
        raise ValueError("labels do not match the codes' item counts or each other's class counts")
    topk = sorted({int(k) for k in topk})
    precision_at = sorted({int(k) for k in precision_at})
    if any(k <= 0 for k in topk + precision_at):
        raise ValueError("K must be positive")
    curve_ks = pk_curve_ks(db_shape[0]) if pk_curve else ()
    ks = sorted(set(topk) | set(precision_at) | set(curve_ks))
    if engine not in ("auto", "cpu", "torch"):
        raise ValueError(f"unknown engine {engine!r}")
    use_torch = engine == "torch" or (engine == "auto" and _wants_cuda(device))
    if use_torch:
        dev = resolve_device(device)
        tensors = [
            (x if is_tensor(x) else torch.from_numpy(np.ascontiguousarray(x))).to(dev)
            for x in (query_codes, database_codes, query_labels, database_labels)
        ]
        summary = summarize_torch(*tensors, ks=ks, chunk_size=chunk_size or default_chunk_size(db_shape[0]))
    else:
        summary = summarize_cpu(*(_numpy(x) for x in (query_codes, database_codes, query_labels, database_labels)), ks=ks)
    return metrics_from_summary(summary, topk, precision_at, curve_ks)

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

All sums are float64. Queries are processed in chunks sized to a memory budget, on CUDA when the
tensors (or ``device``) are there.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from cmhbench.evaluation.codes import hamming_distances

DEFAULT_TOPK = (50, 500)
DEFAULT_PRECISION_AT = (50, 100, 500, 1000)
BYTES_PER_CELL = 40  # distances, sort keys and indices, relevance, cumulative counts, float64 terms


def _as_tensor(x: Any, device: torch.device, dtype: torch.dtype) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x.to(device=device, dtype=dtype)


def default_chunk_size(n_database: int, budget_bytes: int = 256 * 2**20) -> int:
    """Queries per chunk so that the per-chunk work arrays stay within ``budget_bytes``."""
    return max(1, budget_bytes // (BYTES_PER_CELL * max(1, n_database)))


def resolve_device(device: Optional[str | torch.device] = None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; otherwise the named device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _tie_aware_ap(counts_all: Tensor, counts_rel: Tensor, harmonic: Tensor) -> Tensor:
    """Expected AP@all per query from ``(m, bits+1)`` per-distance counts (all / relevant)."""
    n = counts_all.double()
    r = counts_rel.double()
    before = torch.cumsum(counts_all, 1) - counts_all
    rel_before = (torch.cumsum(counts_rel, 1) - counts_rel).double()
    d_h = harmonic[before + counts_all] - harmonic[before]
    term = (rel_before + 1.0) * d_h
    spread = torch.where(n > 1, (r - 1.0) / (n - 1.0).clamp(min=1.0), torch.zeros_like(n))
    term = term + spread * (n - (before.double() + 1.0) * d_h)
    contrib = torch.where(r > 0, r / n.clamp(min=1.0) * term, torch.zeros_like(n))
    total_rel = r.sum(1)
    return torch.where(total_rel > 0, contrib.sum(1) / total_rel.clamp(min=1.0), torch.zeros_like(total_rel))


def retrieval_metrics(
    query_codes: Tensor | np.ndarray,
    database_codes: Tensor | np.ndarray,
    query_labels: Tensor | np.ndarray,
    database_labels: Tensor | np.ndarray,
    *,
    topk: Sequence[int] = DEFAULT_TOPK,
    precision_at: Sequence[int] = DEFAULT_PRECISION_AT,
    device: Optional[str | torch.device] = None,
    chunk_size: Optional[int] = None,
) -> dict[str, Any]:
    """All contract metrics for one retrieval direction.

    ``query_codes`` ``(q, bits)`` and ``database_codes`` ``(n, bits)`` hold ``{-1,+1}``;
    ``query_labels`` ``(q, c)`` and ``database_labels`` ``(n, c)`` are 0/1 multi-hot.
    Returns a JSON-ready dict with ``map``, ``map@K``, ``map_tie_aware``, ``p@K``, ``p@r2``,
    ``pr_curve`` (``radius``, ``precision``, ``recall`` lists), ``n_queries``, ``n_database``
    and ``queries_without_relevant``.
    """
    dev = resolve_device(device if device is not None else (query_codes.device if isinstance(query_codes, Tensor) else None))
    qc = _as_tensor(query_codes, dev, torch.float32)
    dc = _as_tensor(database_codes, dev, torch.float32)
    ql = _as_tensor(query_labels, dev, torch.float32)
    dl = _as_tensor(database_labels, dev, torch.float32)
    n_q, bits = qc.shape
    n_db = dc.shape[0]
    if dc.shape[1] != bits:
        raise ValueError(f"query codes have {bits} bits but database codes {dc.shape[1]}")
    if ql.shape[0] != n_q or dl.shape[0] != n_db or ql.shape[1] != dl.shape[1]:
        raise ValueError("labels do not match the codes' item counts or each other's class counts")
    topk = sorted({int(k) for k in topk})
    precision_at = sorted({int(k) for k in precision_at})
    if any(k <= 0 for k in topk + precision_at):
        raise ValueError("K must be positive")
    chunk = chunk_size or default_chunk_size(n_db)

    ranks = torch.arange(1, n_db + 1, device=dev, dtype=torch.float64)
    harmonic = torch.cat([torch.zeros(1, dtype=torch.float64, device=dev), torch.cumsum(1.0 / ranks, 0)])
    per_query: dict[str, list[Tensor]] = {}
    no_relevant = 0

    def add(key: str, values: Tensor) -> None:
        per_query.setdefault(key, []).append(values.double().cpu())

    for start in range(0, n_q, chunk):
        dist = hamming_distances(qc[start : start + chunk], dc)
        rel = (ql[start : start + chunk] @ dl.T) > 0
        m = dist.shape[0]

        dist_long = dist.long()
        counts_all = torch.zeros(m, bits + 1, dtype=torch.long, device=dev).scatter_add_(1, dist_long, torch.ones_like(dist_long))
        counts_rel = torch.zeros(m, bits + 1, dtype=torch.long, device=dev).scatter_add_(1, dist_long, rel.long())
        total_rel = counts_rel.sum(1)
        no_relevant += int((total_rel == 0).sum())

        order = torch.sort(dist, dim=1, stable=True).indices
        rel_sorted = rel.gather(1, order)
        del order, dist, dist_long
        cum = torch.cumsum(rel_sorted, 1, dtype=torch.int64)
        hits = rel_sorted.double() * cum.double() / ranks
        del rel_sorted

        add("map", torch.where(total_rel > 0, hits.sum(1) / total_rel.clamp(min=1).double(), 0.0))
        for k in topk:
            kk = min(k, n_db)
            rel_k = cum[:, kk - 1]
            add(f"map@{k}", torch.where(rel_k > 0, hits[:, :kk].sum(1) / rel_k.clamp(min=1).double(), 0.0))
        for k in precision_at:
            kk = min(k, n_db)
            add(f"p@{k}", cum[:, kk - 1].double() / kk)
        del hits, cum

        add("map_tie_aware", _tie_aware_ap(counts_all, counts_rel, harmonic))
        retrieved = torch.cumsum(counts_all, 1).double()
        true_pos = torch.cumsum(counts_rel, 1).double()
        add("pr_precision", torch.where(retrieved > 0, true_pos / retrieved.clamp(min=1.0), 0.0))
        add("pr_recall", torch.where(total_rel[:, None] > 0, true_pos / total_rel[:, None].clamp(min=1).double(), 0.0))

    # Exactly rounded means (math.fsum): the result does not depend on chunking or device.
    out: dict[str, Any] = {}
    for key, parts in per_query.items():
        values = torch.cat(parts).numpy()
        if values.ndim == 1:
            out[key] = math.fsum(values.tolist()) / n_q
        else:
            out[key] = [math.fsum(col) / n_q for col in values.T.tolist()]
    precision, recall = out.pop("pr_precision"), out.pop("pr_recall")
    out["p@r2"] = precision[min(2, bits)]
    out["pr_curve"] = {"radius": list(range(bits + 1)), "precision": precision, "recall": recall}
    out["n_queries"] = int(n_q)
    out["n_database"] = int(n_db)
    out["queries_without_relevant"] = int(no_relevant)
    ordered = ["map"] + [f"map@{k}" for k in topk] + ["map_tie_aware"] + [f"p@{k}" for k in precision_at]
    return {key: out[key] for key in ordered} | {k: v for k, v in out.items() if k not in ordered}

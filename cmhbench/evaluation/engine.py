"""The ranking engine: per-query integer summaries of a Hamming ranking, on CPU or GPU.

Every metric of the contract is a function of a few integers per query, which this module
computes in one pass:

- ``hist_all[q, d]`` / ``hist_rel[q, d]``: database items (all / relevant) at Hamming distance
  ``d = 0..bits``; they give R, the precision-recall curve, P@radius and the tie-aware mAP;
- ``ap_fixed[q]``: the sum over relevant items of ``P@rank(item)``, each term rounded to a
  multiple of ``2^-40`` and added as an integer (fixed point);
- ``apk_fixed[q, i]`` / ``rel_at[q, i]``: the same sum and the relevant count restricted to the
  first ``ks[i]`` ranks (mAP@K and P@K).

Fixed-point sums do not depend on the order of addition, so the CPU kernel, the GPU path and any
chunking give bit-identical metrics. The rounding moves an AP by at most ``2^-41`` (about
4.5e-13), far below any reported digit; n up to 8 million items fit in int64.

CPU: a counting sort. Hamming distances take only ``bits + 1`` values, so one pass computes
distances (popcount of packed words) and per-distance histograms, and a second pass in database
order assigns each item its rank ``start[d] + (items at distance d seen so far)`` - the stable,
tie-by-index order of the contract - with no comparison sort. The kernel is compiled by numba:
it needs loops over packed 64-bit words with popcount and per-distance counters that array
libraries cannot express without materialising ``queries x database`` intermediates; numba
gives compiled, multi-threaded loops (queries in parallel) without a C build step at install
time, and is a wheel on every platform torch supports.

GPU: distances by a matrix product of ``{-1,+1}`` codes, a stable sort per query, cumulative
relevant counts; queries in chunks so memory stays bounded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np

from cmhbench.lazy import torch

# numba's OpenMP layer keeps its threads spinning beside torch's own OpenMP pool, which slowed
# the next training steps of a run several-fold (measured); its portable work-queue layer does not.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

SCALE_BITS = 40
SCALE = float(2**SCALE_BITS)


@dataclass(frozen=True)
class RankingSummary:
    """Integer summaries of one retrieval direction (see the module docstring); ``q`` queries."""

    hist_all: np.ndarray  # (q, bits + 1) int64
    hist_rel: np.ndarray  # (q, bits + 1) int64
    ap_fixed: np.ndarray  # (q,) int64, in units of 2^-40
    apk_fixed: np.ndarray  # (q, len(ks)) int64, in units of 2^-40
    rel_at: np.ndarray  # (q, len(ks)) int64
    ks: tuple[int, ...]
    n_database: int


def pack_signs(codes: np.ndarray) -> np.ndarray:
    """``(n, bits)`` values in ``{-1,+1}`` (or 0/1) -> ``(n, ceil(bits/64))`` uint64, bit set for positive."""
    positive = np.ascontiguousarray(np.asarray(codes) > 0)
    n, bits = positive.shape
    words = max(1, -(-bits // 64))
    padded = np.zeros((n, words * 64), dtype=bool)
    padded[:, :bits] = positive
    return np.packbits(padded.reshape(n, words, 64), axis=2, bitorder="little").view(np.uint64).reshape(n, words)


@numba.njit(inline="always", cache=True)
def _popcount64(x):  # pragma: no cover - compiled
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@numba.njit(parallel=True, cache=True)
def _counting_sort_kernel(qcodes, dcodes, qlabels, dlabels, bits, ks, scale):  # pragma: no cover - compiled
    nq, wc = qcodes.shape
    n = dcodes.shape[0]
    wl = qlabels.shape[1]
    nk = ks.shape[0]
    hist_all = np.zeros((nq, bits + 1), np.int64)
    hist_rel = np.zeros((nq, bits + 1), np.int64)
    ap = np.zeros(nq, np.int64)
    apk = np.zeros((nq, nk), np.int64)
    rel_at = np.zeros((nq, nk), np.int64)
    for q in numba.prange(nq):
        dist = np.empty(n, np.uint16)
        rel = np.empty(n, np.uint8)
        h_all = hist_all[q]
        h_rel = hist_rel[q]
        for j in range(n):
            d = 0
            for w in range(wc):
                d += _popcount64(qcodes[q, w] ^ dcodes[j, w])
            r = 0
            for w in range(wl):
                if qlabels[q, w] & dlabels[j, w]:
                    r = 1
            dist[j] = d
            rel[j] = r
            h_all[d] += 1
            h_rel[d] += r
        # next_rank[d] / next_rel[d]: rank and relevant ordinal given to the next item at distance d.
        next_rank = np.empty(bits + 1, np.int64)
        next_rel = np.empty(bits + 1, np.int64)
        seen = 0
        seen_rel = 0
        for d in range(bits + 1):
            next_rank[d] = seen + 1
            next_rel[d] = seen_rel + 1
            seen += h_all[d]
            seen_rel += h_rel[d]
        # Terms and counts by the first cutoff they fall under (bucket b: ks[b-1] < rank <= ks[b]);
        # prefix sums over buckets then give every cutoff at once.
        bucket_term = np.zeros(nk + 1, np.int64)
        bucket_count = np.zeros(nk + 1, np.int64)
        total = 0
        for j in range(n):
            d = dist[j]
            rank = next_rank[d]
            next_rank[d] += 1
            if rel[j]:
                ordinal = next_rel[d]
                next_rel[d] += 1
                term = np.int64(np.floor(ordinal / rank * scale + 0.5))
                total += term
                lo = 0
                hi = nk
                while lo < hi:
                    mid = (lo + hi) // 2
                    if ks[mid] < rank:
                        lo = mid + 1
                    else:
                        hi = mid
                bucket_term[lo] += term
                bucket_count[lo] += 1
        ap[q] = total
        run_term = 0
        run_count = 0
        for i in range(nk):
            run_term += bucket_term[i]
            run_count += bucket_count[i]
            apk[q, i] = run_term
            rel_at[q, i] = run_count
    return hist_all, hist_rel, ap, apk, rel_at


def summarize_cpu(
    query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray, ks: Sequence[int]
) -> RankingSummary:
    """Counting-sort summaries on the CPU (numba, all cores).

    Codes are ``(q, bits)`` / ``(n, bits)`` in ``{-1,+1}``; labels ``(q, c)`` / ``(n, c)`` 0/1.
    """
    bits = int(query_codes.shape[1])
    if bits > 65535:
        raise ValueError("code lengths above 65535 bits are not supported")
    ks_arr = np.asarray(sorted(ks), dtype=np.int64)
    out = _counting_sort_kernel(
        pack_signs(query_codes), pack_signs(db_codes), pack_signs(query_labels), pack_signs(db_labels), bits, ks_arr, SCALE
    )
    return RankingSummary(*out, ks=tuple(int(k) for k in ks_arr), n_database=int(db_codes.shape[0]))


def summarize_torch(
    query_codes: torch.Tensor,
    db_codes: torch.Tensor,
    query_labels: torch.Tensor,
    db_labels: torch.Tensor,
    ks: Sequence[int],
    chunk_size: int,
) -> RankingSummary:
    """The same summaries with torch ops on the tensors' device (the GPU path).

    Per chunk of queries: distances by matrix product, a stable sort, cumulative relevant counts;
    the fixed-point terms are computed exactly as in the CPU kernel.
    """
    dev = query_codes.device
    qc, dc = query_codes.float(), db_codes.float()
    ql, dl = query_labels.float(), db_labels.float()
    bits = qc.shape[1]
    n = dc.shape[0]
    ks_sorted = tuple(sorted(int(k) for k in ks))
    ranks = torch.arange(1, n + 1, device=dev, dtype=torch.float64)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("hist_all", "hist_rel", "ap", "apk", "rel_at")}
    for start in range(0, qc.shape[0], chunk_size):
        dist = ((bits - qc[start : start + chunk_size] @ dc.T) * 0.5).round_().long()
        rel = (ql[start : start + chunk_size] @ dl.T) > 0
        m = dist.shape[0]
        parts["hist_all"].append(torch.zeros(m, bits + 1, dtype=torch.long, device=dev).scatter_add_(1, dist, torch.ones_like(dist)))
        parts["hist_rel"].append(torch.zeros(m, bits + 1, dtype=torch.long, device=dev).scatter_add_(1, dist, rel.long()))
        order = torch.sort(dist, dim=1, stable=True).indices
        del dist
        rel_sorted = rel.gather(1, order)
        del order, rel
        ordinal = torch.cumsum(rel_sorted, 1, dtype=torch.int64)
        terms = torch.floor(ordinal.double() / ranks * SCALE + 0.5).long() * rel_sorted
        parts["ap"].append(terms.sum(1))
        parts["apk"].append(torch.stack([terms[:, : min(k, n)].sum(1) for k in ks_sorted], 1))
        parts["rel_at"].append(torch.stack([ordinal[:, min(k, n) - 1] for k in ks_sorted], 1))
        del terms, ordinal, rel_sorted
    cat = {k: torch.cat(v).cpu().numpy().astype(np.int64) for k, v in parts.items()}
    return RankingSummary(
        hist_all=cat["hist_all"], hist_rel=cat["hist_rel"], ap_fixed=cat["ap"], apk_fixed=cat["apk"],
        rel_at=cat["rel_at"], ks=ks_sorted, n_database=int(n),
    )


def warm_up() -> None:
    """Compile (or load from numba's cache) the CPU kernel, so that timings exclude start-up."""
    codes = np.ones((2, 8), dtype=np.int8)
    summarize_cpu(codes, codes, np.ones((2, 1), np.uint8), np.ones((2, 1), np.uint8), (1,))

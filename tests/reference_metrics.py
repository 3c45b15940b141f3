"""A deliberately naive, per-query float64 reference for the evaluation contract (tests only)."""

from __future__ import annotations

import itertools

import numpy as np


def ranking(query: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Database indices by ascending Hamming distance, ties by index (python's sort is stable)."""
    dist = [int(np.sum(query != row)) for row in database]
    return np.array(sorted(range(len(database)), key=lambda j: dist[j]), dtype=np.int64)


def average_precision(relevant_in_order: list[bool]) -> float:
    """AP over a ranked list of relevance flags; 0 when none is relevant."""
    hits, total = 0, 0.0
    for i, rel in enumerate(relevant_in_order, start=1):
        if rel:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def reference_metrics(qc, dc, ql, dl, topk=(), precision_at=()):
    """map, map@K and p@K, one query at a time in float64."""
    out = {"map": 0.0, **{f"map@{k}": 0.0 for k in topk}, **{f"p@{k}": 0.0 for k in precision_at}}
    for q in range(len(qc)):
        order = ranking(qc[q], dc)
        rel = [bool(np.dot(ql[q].astype(np.int64), dl[j].astype(np.int64)) > 0) for j in order]
        out["map"] += average_precision(rel)
        for k in topk:
            out[f"map@{k}"] += average_precision(rel[:k])
        for k in precision_at:
            kk = min(k, len(rel))
            out[f"p@{k}"] += sum(rel[:kk]) / kk
    return {k: v / len(qc) for k, v in out.items()}


def brute_force_tie_aware_map(qc, dc, ql, dl) -> float:
    """Average of AP over every ordering of equal-distance items, per query (tiny inputs only)."""
    total = 0.0
    for q in range(len(qc)):
        dist = np.array([int(np.sum(qc[q] != row)) for row in dc])
        rel = (ql[q].astype(np.int64) @ dl.T.astype(np.int64)) > 0
        groups = [list(np.flatnonzero(dist == d)) for d in sorted(set(dist.tolist()))]
        aps = []
        for perms in itertools.product(*[itertools.permutations(g) for g in groups]):
            order = [j for group in perms for j in group]
            aps.append(average_precision([bool(rel[j]) for j in order]))
        total += float(np.mean(aps))
    return total / len(qc)


def reference_pr_curve(qc, dc, ql, dl):
    """Mean precision and recall within each Hamming radius 0..bits."""
    bits = qc.shape[1]
    prec = np.zeros(bits + 1)
    rec = np.zeros(bits + 1)
    for q in range(len(qc)):
        dist = np.array([int(np.sum(qc[q] != row)) for row in dc])
        rel = (ql[q].astype(np.int64) @ dl.T.astype(np.int64)) > 0
        for r in range(bits + 1):
            got = dist <= r
            tp = int(np.sum(got & rel))
            prec[r] += tp / got.sum() if got.sum() else 0.0
            rec[r] += tp / rel.sum() if rel.sum() else 0.0
    return prec / len(qc), rec / len(qc)

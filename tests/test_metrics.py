"""The evaluation engine against a naive per-query float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmhbench.evaluation import CodeSet, evaluate_code_set, retrieval_metrics
from cmhbench.evaluation.codes import hamming_distances, sign_codes
from reference_metrics import brute_force_tie_aware_map, reference_metrics, reference_pr_curve


def random_case(seed: int, bits: int, n_q: int = 30, n_db: int = 250, classes: int = 6, density: float = 0.15):
    rng = np.random.default_rng(seed)
    qc = np.where(rng.random((n_q, bits)) < 0.5, -1, 1).astype(np.int8)
    dc = np.where(rng.random((n_db, bits)) < 0.5, -1, 1).astype(np.int8)
    ql = (rng.random((n_q, classes)) < density).astype(np.uint8)
    dl = (rng.random((n_db, classes)) < density).astype(np.uint8)
    ql[:3] = 0  # queries whose labels are empty have no relevant item
    return qc, dc, ql, dl


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_reference_with_ties_and_empty_queries(bits, seed):
    qc, dc, ql, dl = random_case(seed, bits)
    topk, pat = (1, 7, 50, 1000), (5, 100, 1000)
    got = retrieval_metrics(qc, dc, ql, dl, topk=topk, precision_at=pat, chunk_size=7)
    want = reference_metrics(qc, dc, ql, dl, topk=topk, precision_at=pat)
    assert got["queries_without_relevant"] >= 3
    # With 8 or 16 bits and 250 items, ties are everywhere: the tie order matters and is checked here.
    assert len(np.unique(hamming_distances(torch.tensor(qc[:1]), torch.tensor(dc)))) <= bits + 1
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    precision, recall = reference_pr_curve(qc, dc, ql, dl)
    np.testing.assert_allclose(got["pr_curve"]["precision"], precision, atol=1e-12)
    np.testing.assert_allclose(got["pr_curve"]["recall"], recall, atol=1e-12)
    assert got["p@r2"] == pytest.approx(precision[2], abs=1e-12)
    curve = got["pk_curve"]
    assert curve["k"] == [1, 5, 10, 20, 50, 100, 200, 250]
    want_curve = reference_metrics(qc, dc, ql, dl, precision_at=curve["k"])
    assert curve["precision"] == pytest.approx([want_curve[f"p@{k}"] for k in curve["k"]], abs=1e-12)


def test_zero_relevant_queries_count_as_zero():
    qc = np.array([[1, 1], [1, -1]], dtype=np.int8)
    dc = np.array([[1, 1], [-1, -1]], dtype=np.int8)
    ql = np.array([[1, 0], [0, 0]], dtype=np.uint8)  # second query: no label, nothing relevant
    dl = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    got = retrieval_metrics(qc, dc, ql, dl, topk=(1,), precision_at=(1,))
    assert got["map"] == pytest.approx(0.5)  # (1.0 + 0) / 2
    assert got["map@1"] == pytest.approx(0.5)
    assert got["queries_without_relevant"] == 1


def test_ties_are_broken_by_database_index():
    qc = np.array([[1, 1, 1, 1]], dtype=np.int8)
    dc = np.array([[1, 1, 1, -1]] * 4, dtype=np.int8)  # all at distance 1
    ql = np.array([[1]], dtype=np.uint8)
    dl = np.array([[0], [0], [1], [1]], dtype=np.uint8)
    got = retrieval_metrics(qc, dc, ql, dl, topk=(2,), precision_at=(2,))
    assert got["map"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert got["map@2"] == 0.0
    # The expected AP over all 4!/... orders of the tied group differs from the index order.
    assert got["map_tie_aware"] == pytest.approx(brute_force_tie_aware_map(qc, dc, ql, dl), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_tie_aware_map_equals_average_over_all_tie_orders(seed):
    rng = np.random.default_rng(seed)
    bits = int(rng.integers(2, 4))
    qc = np.where(rng.random((4, bits)) < 0.5, -1, 1)
    dc = np.where(rng.random((7, bits)) < 0.5, -1, 1)
    ql = (rng.random((4, 3)) < 0.5).astype(np.uint8)
    dl = (rng.random((7, 3)) < 0.4).astype(np.uint8)
    got = retrieval_metrics(qc, dc, ql, dl)["map_tie_aware"]
    assert got == pytest.approx(brute_force_tie_aware_map(qc, dc, ql, dl), abs=1e-12)


def test_tie_aware_equals_classic_without_ties():
    bits = 12
    db = np.array([[1] * (bits - d) + [-1] * d for d in range(bits + 1)], dtype=np.int8)  # distinct distances
    q = np.ones((1, bits), dtype=np.int8)
    ql = np.array([[1]], dtype=np.uint8)
    dl = (np.arange(bits + 1) % 3 == 0).astype(np.uint8)[:, None]
    got = retrieval_metrics(q, db, ql, dl)
    # map sums fixed-point terms (each rounded to 2^-40, see engine.py); the bound is 2^-41.
    assert got["map_tie_aware"] == pytest.approx(got["map"], abs=2.0**-41)


@pytest.mark.parametrize("bits", [8, 64, 100])
def test_engines_chunking_and_input_types_give_bit_identical_results(bits):
    qc, dc, ql, dl = random_case(3, bits, n_q=50, classes=70)  # 70 classes: two label words
    cpu = retrieval_metrics(qc, dc, ql, dl, engine="cpu")
    t1 = retrieval_metrics(qc, dc, ql, dl, engine="torch", chunk_size=1)
    t2 = retrieval_metrics(torch.tensor(qc).float(), torch.tensor(dc).double(), torch.tensor(ql), torch.tensor(dl), engine="torch", chunk_size=1000)
    assert cpu == t1 == t2
    want = reference_metrics(qc, dc, ql, dl, topk=(50, 500))
    for key, value in want.items():
        assert cpu[key] == pytest.approx(value, abs=1e-12), key


def test_more_than_64_bits_and_k_beyond_database():
    qc, dc, ql, dl = random_case(4, 130, n_q=10, n_db=40)
    got = retrieval_metrics(qc, dc, ql, dl, topk=(1000,), precision_at=(1000,))
    want = reference_metrics(qc, dc, ql, dl, topk=(1000,), precision_at=(1000,))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_sign_codes_maps_zero_to_plus_one():
    out = sign_codes(torch.tensor([[-0.5, 0.0, 2.0]]))
    assert out.dtype == torch.int8
    assert out.tolist() == [[-1, 1, 1]]
    with pytest.raises(ValueError):
        sign_codes(torch.tensor([[float("nan")]]))


def test_code_set_directions_pair_the_right_modalities():
    qc, dc, ql, dl = random_case(5, 16)
    other_q, other_db, _, _ = random_case(6, 16)
    codes = CodeSet(query_image=qc, query_text=other_q, db_image=other_db, db_text=dc, query_labels=ql, db_labels=dl)
    out = evaluate_code_set(codes, directions=("i2t", "t2i"))
    assert out["i2t"]["map"] == pytest.approx(reference_metrics(qc, dc, ql, dl)["map"], abs=1e-12)
    assert out["t2i"]["map"] == pytest.approx(reference_metrics(other_q, other_db, ql, dl)["map"], abs=1e-12)
    assert out["i2t"]["seconds"] >= 0

"""``Supervision`` as an operator: every built-in strategy's blocks against the dense matrix it
handed over before (the reference formulas below are copied from the strategies as they were),
students trained through blocks against the dense path, and the checks a Supervision still makes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import cmhbench.interfaces as interfaces
from cmhbench.errors import PluginError
from cmhbench.evaluation.codes import sign_codes
from cmhbench.interfaces import Modality, PairedFeatures, SimilarityOperator, Supervision
from cmhbench.plugins import get_registry
from cmhbench.runner import RunRequest, Runner
from cmhbench.neighbours import knn_mask, knn_orders, knn_row_bits, knn_union_bits, kth_largest, kth_largest_and_count, pack_bits, symmetrise_bits_, unpack_bits
from cmhbench.training import l2_normalize
from method_helpers import build, paired
from plugins_for_tests import load_tiny

N = 40


class FixedTeacher:
    """A stub teacher whose ``encode`` returns fixed outputs per modality."""

    def __init__(self, image: torch.Tensor, text: torch.Tensor) -> None:
        self.out = {Modality.IMAGE: image, Modality.TEXT: text}

    def encode(self, x, modality):
        return self.out[Modality(modality)]


def tied_outputs(n: int = N, bits: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher outputs full of ties: small integers (many equal distances, zero entries, so sign
    ties too), with duplicated rows."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(-2, 3, (n, bits), generator=g).float()
    text = torch.randint(-1, 2, (n, bits), generator=g).float()
    image[5] = image[4]
    image[6] = image[4]
    text[7] = text[3]
    image[9], text[9] = image[8], text[8]
    text[11] = 0.0  # a zero output row: cosine 0 with everything
    return image, text


def tied_train(n: int = N) -> PairedFeatures:
    return PairedFeatures(torch.zeros(n, 2), torch.zeros(n, 3))


def tied_labels(n: int = N, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, 6, generator=g) < 0.25).float()
    labels[0] = 0.0  # an item without labels: similar to nothing, not even itself (as before)
    return labels


# --- the dense matrices the strategies handed over before (copied from their previous code) ---


def old_labels(labels):
    similarity = (labels @ labels.T > 0).float()
    return similarity, {"similar_fraction": float(similarity.mean())}


def old_codes(b_i, b_t, mode, threshold=0.75):
    def hamming_affinity(codes):
        total = sum(c @ c.T / c.shape[1] for c in codes)
        return ((1.0 + total / len(codes)) / 2.0).clamp(0.0, 1.0)

    a = hamming_affinity([b_i, b_t])
    if mode == "binary":
        s = (a >= threshold).float()
        info = {"mode": "binary", "threshold": threshold, "similar_fraction": float(s.mean())}
    else:
        s = a
        info = {"mode": "graded", "mean_similarity": float(s.mean())}
    s.fill_diagonal_(1.0)
    return s, info


def old_ukd(out_i, out_t, mode, k, metric="euclidean", symmetrize=True):
    if mode == "sim":
        sim = 0.5 * (l2_normalize(out_i) @ l2_normalize(out_i).T + l2_normalize(out_t) @ l2_normalize(out_t).T)
        s = ((sim + 1.0) / 2.0).clamp(0.0, 1.0)
        return s, {"mode": "sim", "mean_similarity": float(s.mean())}
    mask = old_knn_mask(out_i, k, metric) | old_knn_mask(out_t, k, metric)
    if symmetrize:  # the strategy's symmetrize = True; per row (official) otherwise
        mask = mask | mask.T
    mask.fill_diagonal_(True)
    s = mask.float()
    return s, {"mode": "knn", "k": k, "similar_fraction": float(s.mean())}


def old_knn_mask(features, k, metric="euclidean", chunk=4096):
    z = features.double()
    if metric == "cosine":
        z = l2_normalize(z)
    n = z.shape[0]
    sq = (z * z).sum(1)
    mask = torch.zeros(n, n, dtype=torch.bool, device=z.device)
    for start in range(0, n, chunk):
        block = z[start : start + chunk]
        if metric == "cosine":
            key = -(block @ z.T)
        else:
            key = (sq[start : start + chunk, None] - 2.0 * block @ z.T + sq[None, :]).clamp_(min=0.0)
        order = torch.sort(key, dim=1, stable=True).indices[:, :k]
        mask[start : start + chunk].scatter_(1, order, True)
    return mask


def old_sakdh(strategy, out_i, out_t, mode, similar_fraction):
    def reconstructed(out_image, out_text):
        u = torch.cat([l2_normalize(out_image.double()), l2_normalize(out_text.double())], dim=1)
        n = u.shape[0]
        m = strategy.fusion_weights(out_image.shape[1], u.device)
        k = (1.0 - strategy.config.eta) * m + strategy.config.eta * (m @ (u.T @ u) @ m) / n
        uk = (u @ k).float()
        return (uk @ u.float().T).clamp_(-1.0, 1.0)

    s_r = reconstructed(out_i, out_t)
    s_r = 0.5 * (s_r + s_r.T)
    n = s_r.shape[0]
    if mode == "soft":
        s = (s_r + 1.0) / 2.0
        s.fill_diagonal_(1.0)
        return s, {"mode": "soft", "fusion": "outputs", "mean_similarity": float(s.mean())}
    off = n * (n - 1)
    k = min(off, max(1, round(similar_fraction * off)))
    masked = s_r.clone()
    masked.fill_diagonal_(float("-inf"))
    threshold = torch.kthvalue(masked.flatten(), n * n - k + 1).values.item()
    s = (s_r >= threshold).float()
    s.fill_diagonal_(1.0)
    return s, {"mode": "binary", "fusion": "outputs", "threshold": threshold, "similar_fraction": float(s.mean())}


def case(name):
    """``(supervision from the strategy now, (old dense, old info), exact_on_demand)`` for a case name."""
    image, text = tied_outputs()
    teacher, train = FixedTeacher(image, text), tied_train()
    if name == "labels":
        labels = tied_labels()
        sup = build("strategy", "labels").distill(None, PairedFeatures(train.image, train.text, labels))
        return sup, old_labels(labels), True
    if name.startswith("codes"):
        mode = name.split("-")[1]
        sup = build("strategy", "codes", mode=mode).distill(teacher, train)
        return sup, old_codes(sign_codes(image).float(), sign_codes(text).float(), mode), True
    if name.startswith("ukd"):
        mode, k = name.split("-")[1], int(name.split("-")[2]) if name.count("-") >= 2 else 0
        symmetrize = name.endswith("-sym")
        sup = build("strategy", "ukd", mode=mode, k=k, symmetrize=symmetrize).distill(teacher, train)
        return sup, old_ukd(image, text, mode, k, symmetrize=symmetrize), mode == "knn"
    mode = name.split("-")[1]
    strategy = build("strategy", "sakdh", mode=mode, similar_fraction=0.2)
    return strategy.distill(teacher, train), old_sakdh(strategy, image, text, mode, 0.2), False


CASES = ["labels", "codes-graded", "codes-binary", "ukd-knn-1", "ukd-knn-3", "ukd-knn-7", "ukd-knn-3-sym", "ukd-sim",
         "sakdh-binary", "sakdh-soft"]


def index_sets(n: int = N):
    g = torch.Generator().manual_seed(5)
    yield torch.arange(n), None
    yield torch.tensor([3]), None
    yield torch.tensor([4, 5, 6, 4]), torch.tensor([6, 5, 4, 4, 0])  # tied rows, repeats, the diagonal
    for m, c in ((1, 1), (2, 7), (9, 13), (17, N)):
        yield torch.randint(0, n, (m,), generator=g), torch.randint(0, n, (c,), generator=g)


@pytest.mark.parametrize("name", CASES)
def test_kept_dense_path_is_exactly_the_old_matrix(name):
    sup, (want, info), _ = case(name)
    assert sup.kept_dense is not None and sup.n == N
    assert torch.equal(sup.dense(), want) and torch.equal(sup.similarity, want)
    assert sup.info == info
    for rows, cols in index_sets():
        expect = want[rows] if cols is None else want[rows][:, cols]
        assert torch.equal(sup.block(rows, cols), expect)
        assert torch.equal(sup.columns(rows), want.T[rows])
    view = sup.rows()
    assert view.shape == (N, N) and torch.equal(view[torch.tensor([1, 2])], want[[1, 2]])
    assert torch.equal(view.T[torch.tensor([1, 2])], want.T[[1, 2]])


@pytest.mark.parametrize("name", CASES)
def test_every_strategy_bounds_its_dense_cache_by_the_data(name, monkeypatch):
    # the 40 x 40 float32 S (6,400 bytes) is under the 256 MiB floor; with no floor it takes more than
    # the 40 x 5 float32 features (800 bytes) and no strategy keeps it: a student beside S held whole
    # went over 2x the features at NUS-WIDE size (15,000 pairs, 860 MiB each)
    monkeypatch.setattr(interfaces, "DENSE_FLOOR_BYTES", 0)
    sup, (want, _), exact = case(name)
    assert sup.kept_dense is None
    got = sup.block(torch.arange(N))
    if exact:
        assert torch.equal(got, want)


@pytest.mark.parametrize("name", CASES)
def test_blocks_computed_on_demand_match_the_old_matrix(name, monkeypatch):
    monkeypatch.setattr(interfaces, "DENSE_CACHE_BYTES", 0)  # nothing kept dense: every block on demand
    sup, (want, info), exact = case(name)
    assert sup.kept_dense is None and sup.n == N
    for rows, cols in index_sets():
        got = sup.block(rows, cols)
        expect = want[rows] if cols is None else want[rows][:, cols]
        assert got.dtype == torch.float32 and got.shape == expect.shape
        if exact:
            assert torch.equal(got, expect), (rows, cols)
        elif name != "sakdh-binary":  # float products: the same to rounding (their rounding depends on shape)
            torch.testing.assert_close(got, expect, rtol=0, atol=1e-6)
    whole = sup.block(torch.arange(N))
    assert torch.equal(sup.dense(), whole)
    if exact or name.startswith("sakdh"):
        # sakdh's one-chunk pass and whole-matrix block are the old matrix's products, same shapes
        assert torch.equal(whole, want)
    assert sup.info.keys() == info.keys()
    for key, value in info.items():  # means in float64 instead of float32
        assert sup.info[key] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-6, abs=1e-7))


def test_sakdh_binary_threshold_over_many_chunks_is_exact_for_the_values_it_saw(monkeypatch):
    image, text = tied_outputs()
    strategy = build("strategy", "sakdh", similar_fraction=0.2)
    want, info = old_sakdh(strategy, image, text, "binary", 0.2)
    monkeypatch.setattr(interfaces, "DENSE_CACHE_BYTES", 0)
    monkeypatch.setattr(interfaces, "CHUNK_ENTRIES", 3 * N)  # 3 rows per chunk: many passes of small blocks
    sup = strategy.distill(FixedTeacher(image, text), tied_train())
    op = sup.operator
    values = torch.cat([op.reconstructed_block(torch.arange(s, min(N, s + 3))) for s in range(0, N, 3)])
    values.fill_diagonal_(float("-inf"))
    k = round(0.2 * N * (N - 1))
    assert sup.info["threshold"] == torch.sort(values.flatten(), descending=True).values[k - 1].item()
    assert sup.info["threshold"] == pytest.approx(info["threshold"], abs=1e-6)
    agree = sup.block(torch.arange(N)) == want
    s_r = op.reconstructed_dense()
    assert torch.all(agree | ((s_r - info["threshold"]).abs() < 1e-6))  # differ only within rounding of t
    # the fraction comes from the selection's count, no third pass, and is the block sum bit for bit
    assert op.off_diagonal_at_least is not None
    assert sup.info["similar_fraction"] == SimilarityOperator.mean(op)


def test_knn_helpers_reproduce_knn_mask_with_ties():
    image, text = tied_outputs()
    for metric in ("euclidean", "cosine"):
        for k in (1, 2, 5, N):
            assert torch.equal(knn_mask(image, k, metric), old_knn_mask(image, k, metric))
            assert torch.equal(knn_mask(image, k, metric, chunk=7), old_knn_mask(image, k, metric, chunk=7))
            union = old_knn_mask(image, k, metric) | old_knn_mask(text, k, metric)
            union = union | union.T
            union.fill_diagonal_(True)
            bits = knn_union_bits([image, text], k, metric, chunk=8)
            assert torch.equal(bits.dense(), union.float()) and bits.count() == int(union.sum())
    starts = [start for start, order in knn_orders(image, 3, chunk=16)]
    assert starts == [0, 16, 32]


@pytest.mark.parametrize("n", [1, 7, 8, 9, 30])
def test_bit_packing_and_symmetrisation(n):
    g = torch.Generator().manual_seed(n)
    mask = torch.rand(n, n, generator=g) < 0.3
    packed = pack_bits(mask)
    assert packed.shape == (n, (n + 7) // 8) and torch.equal(unpack_bits(packed, n), mask)
    assert torch.equal(unpack_bits(symmetrise_bits_(packed.clone(), n, tile=8), n), mask | mask.T)


def test_kth_largest_is_exact_with_ties_signed_zeros_and_infinities():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g).round(decimals=1)
    x[:5], x[5:10], x[10], x[11] = -0.0, 0.0, float("-inf"), 3e38
    ordered = torch.sort(x, descending=True).values
    for k in (1, 2, 3, 10, 500, 990, 999, 1000):
        got = kth_largest(lambda: iter([x[:300], x[300:].reshape(35, 20)]), k)
        assert got == ordered[k - 1].item(), k
    with pytest.raises(ValueError, match="outside"):
        kth_largest(lambda: iter([x]), 1001)
    wide = torch.randn(5000, generator=g) * 10.0 ** torch.randint(-30, 30, (5000,), generator=g).float()
    ordered = torch.sort(wide, descending=True).values
    for k in (1, 7, 2500, 4999, 5000):
        assert kth_largest(lambda: iter(wide.split(1000)), k) == ordered[k - 1].item(), k


def test_kth_largest_counts_the_values_at_or_above_it_in_the_same_passes():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2000, generator=g).round(decimals=1)  # many ties
    x[:5], x[5:9], x[9], x[10] = -0.0, 0.0, float("-inf"), -3e38
    passes = []

    def chunks():
        passes.append(1)
        return iter([x[:700], x[700:].reshape(65, 20)])

    for k in (1, 2, 30, 999, 1000, 1500, 1990, 1999, 2000):
        passes.clear()
        value, at_least = kth_largest_and_count(chunks, k)
        assert len(passes) == 2 and value == kth_largest(chunks, k)
        if value == 0.0 and math.copysign(1.0, value) > 0:  # +0.0: -0.0 compares equal but keys below it
            assert at_least is None
        else:
            assert at_least == int((x >= value).sum()) >= k, k
    value, at_least = kth_largest_and_count(lambda: iter([torch.tensor([1.0, 0.0, -0.0, -1.0])]), 2)
    assert (value, at_least) == (0.0, None)
    value, at_least = kth_largest_and_count(lambda: iter([torch.tensor([1.0, 0.0, -0.0, -1.0])]), 3)
    assert math.copysign(1.0, value) < 0 and at_least == 3


# --- students: through blocks computed on demand == through the dense matrix ---


def _student_codes(name, train, supervision, fit=None, **overrides):
    torch.manual_seed(0)
    student = build("student", name, **overrides)
    (fit or type(student).fit)(student, train, supervision, 8)
    with torch.no_grad():
        return [student.encode(train.get(m), m) for m in Modality]


STUDENTS = [
    ("ssah", "labels", dict(epochs=1, label_passes=2, hash_passes=1, label_hidden=16, image_hidden=16,
                             text_hidden=16, semantic_dim=16, batch_size=32)),
    ("ssah", "ukd", dict(paired_epochs=1, paired_rounds=2, paired_text_hidden=16, paired_batch=32)),
    ("ssah", "ukd-rows", dict(without_labels="rows", epochs=1, label_passes=2, hash_passes=1, label_hidden=16,
                               image_hidden=16, text_hidden=16, semantic_dim=16, batch_size=32)),
    ("linear", "labels", dict(epochs=3, batch_size=32)),
    ("linear", "codes", dict(epochs=3, batch_size=32)),
]


@pytest.mark.parametrize("student,strategy,overrides", STUDENTS, ids=[f"{s}-{t}" for s, t, _ in STUDENTS])
def test_students_trained_through_the_operator_give_the_dense_paths_codes(student, strategy, overrides):
    data = load_tiny()
    train = paired(data, "train", labels=True)
    if strategy == "labels":
        sup = build("strategy", "labels").distill(None, train)
    else:
        teacher = FixedTeacher(*tied_outputs(len(train), bits=8))
        sup = build("strategy", strategy.split("-")[0], k=5).distill(teacher, train.without_labels()) \
            if strategy.startswith("ukd") else build("strategy", strategy).distill(teacher, train.without_labels())
    on_demand = Supervision(sup.operator, sup.soft_labels, cache_bytes=0)
    assert on_demand.kept_dense is None
    dense = Supervision(sup.dense().clone(), sup.soft_labels)
    unlabelled = train.without_labels()
    want = _student_codes(student, unlabelled, dense, **overrides)
    got = _student_codes(student, unlabelled, on_demand, **overrides)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    if student == "linear":  # DCMH's own fit on the dense tensor (how linear read S before): the same codes
        from cmhbench_plugins.students.dcmh import DCMH

        for a, b in zip(_student_codes(student, unlabelled, dense, fit=DCMH.fit, **overrides), want):
            assert torch.equal(a, b)


def test_students_never_materialise_the_matrix(monkeypatch):
    data = load_tiny()
    train = paired(data, "train", labels=True)
    sup = build("strategy", "labels").distill(None, train)
    on_demand = Supervision(sup.operator, None, cache_bytes=0)

    def refuse(self):
        raise AssertionError("dense() called")

    monkeypatch.setattr(type(sup.operator), "dense", refuse)
    _student_codes("ssah", train.without_labels(), on_demand, paired_epochs=1, paired_rounds=1, paired_text_hidden=8,
                   paired_batch=64)
    _student_codes("linear", train.without_labels(), on_demand, epochs=1, batch_size=64)


# --- what a Supervision still checks ---


class Zeros(SimilarityOperator):
    """A toy operator of any size: S = 0 off the diagonal."""

    symmetric = True

    def __init__(self, n, fill=0.0):
        self.n, self.fill = n, fill

    def block(self, rows, cols=None):
        cols = torch.arange(self.n) if cols is None else cols
        out = torch.full((len(rows), len(cols)), self.fill)
        out[rows[:, None] == cols[None, :]] = 1.0
        return out


def test_dense_of_an_over_large_similarity_fails_naming_its_size():
    sup = Supervision(Zeros(2_000_000))  # 16 TB dense: kept as an operator
    assert sup.kept_dense is None and sup.n == 2_000_000
    assert torch.equal(sup.block(torch.tensor([0, 5]), torch.tensor([5, 1])), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    with pytest.raises(MemoryError, match=r"n = 2,000,000 training pairs is an \(n, n\) float32 matrix of 16,000\.0 GB"):
        sup.dense()
    with pytest.raises(MemoryError, match="supervision.block"):
        sup.similarity


def test_invalid_similarities_are_still_rejected():
    with pytest.raises(ValueError, match="square"):
        Supervision(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        Supervision(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Supervision(torch.tensor([[1.0, 1.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Supervision(Zeros(5, fill=-0.5))  # kept dense: checked whole
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Supervision(Zeros(5, fill=2.0), cache_bytes=0)  # on demand: a probe block is checked
    with pytest.raises(ValueError, match="soft_labels"):
        Supervision(torch.eye(3), torch.zeros(4, 2))
    sup = Supervision(torch.eye(3, dtype=torch.float64))  # any dtype, as before; blocks are float32
    assert sup.block(torch.tensor([1])).dtype == torch.float32 and sup.similarity.dtype == torch.float64


class WrongSize:
    def __init__(self, config, ctx):
        pass

    def distill(self, teacher, train):
        return Supervision(Zeros(len(train) + 1))


def test_runner_checks_the_operators_size_without_materialising(tmp_path, test_plugins, monkeypatch):
    registry = get_registry()
    spec = replace(registry.method("strategy", "labels"), build=WrongSize)
    monkeypatch.setitem(registry.strategies.items, "labels", spec)
    req = RunRequest(teacher="none", strategy="labels", student="linear", dataset="tiny", bits=(8,),
                     results_dir=tmp_path, overrides=(("student.epochs", "1"),), device="cpu")
    with pytest.raises(PluginError, match=r"\(160, 160\) similarity"):
        Runner(registry).run(req)


def test_row_view_moves_and_transposes():
    s = torch.rand(6, 6)
    for sup in (Supervision(s), Supervision(DenseOnly(s), cache_bytes=0)):
        view = sup.rows().to("cpu", torch.float32)
        idx = torch.tensor([4, 1])
        assert len(view) == 6 and view.dtype == torch.float32
        assert torch.equal(view[idx], s[idx]) and torch.equal(view.T[idx], s.T[idx])
        assert torch.equal(view.T.T[idx], s[idx]) and torch.equal(view.T.contiguous()[idx], s.T[idx])
        if sup.kept_dense is not None:  # as a tensor: S^T copied once into row-major order for fast rows
            assert view.T.contiguous().matrix.is_contiguous() and not view.T.matrix.is_contiguous()
        with pytest.raises(TypeError):
            view.to("cpu", torch.float64)


class DenseOnly(SimilarityOperator):
    """An asymmetric operator computed from a matrix (exercises the column reads of a non-symmetric S)."""

    def __init__(self, s):
        self.s, self.n = s, s.shape[0]

    def block(self, rows, cols=None):
        return self.s[rows] if cols is None else self.s[rows][:, cols]


def test_labels_without_any_label_keeps_the_old_zero_row():
    # labels row 0 is empty: old and new agree that it is similar to nothing, not even itself
    sup, (want, _), _ = case("labels")
    assert want[0].sum() == 0 and torch.equal(sup.block(torch.tensor([0])), want[:1])


def test_example_plugin_strategy_hands_over_an_operator_or_the_same_dense_matrix(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "examples" / "cmhbench-plugin-example"))
    example = pytest.importorskip("cmhbench_plugin_example")
    image, text = tied_outputs()
    teacher, train = FixedTeacher(image, text), tied_train()
    as_operator = example.ExampleStrategy(example.ExampleStrategyConfig(), None).distill(teacher, train)
    as_dense = example.ExampleStrategy(example.ExampleStrategyConfig(dense=True), None).distill(teacher, train)
    assert isinstance(as_operator.operator, example.CosineSimilarity)
    assert torch.equal(as_operator.dense(), as_dense.dense())
    on_demand = Supervision(as_operator.operator, cache_bytes=0)
    rows, cols = torch.tensor([4, 5, 11]), torch.tensor([6, 11])
    torch.testing.assert_close(on_demand.block(rows, cols), as_dense.block(rows, cols), rtol=0, atol=1e-6)
    assert as_operator.info["mean_similarity"] == as_dense.info["mean_similarity"]


@pytest.mark.parametrize("rows_per_block, columns", [(None, None), (7, 5), (64, 13)])
def test_knn_union_lists_are_the_rows_of_the_union_mask_with_ties(monkeypatch, rows_per_block, columns):
    import cmhbench.neighbours as neighbours

    if columns:
        monkeypatch.setattr(neighbours, "KNN_LIST_COLUMNS", columns)  # float64 copies of a few columns at a time
    g = torch.Generator().manual_seed(5)
    image = torch.randint(0, 4, (90, 3), generator=g).float()  # integer outputs: exact ties
    text = torch.randn(90, 6, generator=g)
    for k in (1, 2, 9, 40):
        lists = neighbours.knn_union_lists([image, text], k, rows_per_block)
        want = knn_mask(image, k) | knn_mask(text, k) | torch.eye(90, dtype=torch.bool)
        got = torch.zeros(90, 91, dtype=torch.bool).scatter_(1, lists % 91, True)[:, :90]
        assert torch.equal(got, want), k
        assert lists.shape[1] == int(want.sum(1).max())
        valid = lists >= 0
        assert torch.equal(valid, torch.arange(lists.shape[1])[None, :] < want.sum(1, keepdim=True))  # packed left
        assert bool((lists[:, 1:] > lists[:, :-1])[valid[:, 1:]].all())  # increasing


def test_select_kth_is_kthvalue_whatever_the_bracket(monkeypatch):
    import cmhbench.neighbours as neighbours

    g = torch.Generator().manual_seed(2)
    rows = {
        "uniform": torch.rand(9, 20000, generator=g, dtype=torch.float64),
        "ties": torch.randint(0, 5, (9, 20000), generator=g).double(),
        "ascending": torch.arange(20000, dtype=torch.float64).repeat(3, 1),  # the strided sample is no sample
        "descending": torch.arange(20000, 0, -1, dtype=torch.float64).repeat(3, 1),
    }
    for keys in rows.values():
        for k in (1, 2, 777, 10000, 11100, 19999, 20000):
            values, indices = neighbours.select_kth(keys, k)
            assert torch.equal(values, keys.kthvalue(k, dim=1).values)
            assert torch.equal(keys.gather(1, indices[:, None])[:, 0], values)
    monkeypatch.setattr(neighbours, "SELECT_SAMPLE", 4)  # brackets from 4 keys: most miss, some hit
    keys = torch.randn(40, 300, generator=g, dtype=torch.float64)
    for k in range(1, 301, 13):
        assert torch.equal(neighbours.select_kth(keys, k)[0], keys.kthvalue(k, dim=1).values)
    assert torch.equal(neighbours.select_kth(keys[:0], 3)[0], keys[:0, 0])


def test_knn_bits_and_radii_with_bracketed_selection_reproduce_knn_mask(monkeypatch):
    import cmhbench.neighbours as neighbours

    monkeypatch.setattr(neighbours, "SELECT_SAMPLE", 2)  # n = 40 > 8 x 2: every selection takes the bracket path
    image, text = tied_outputs()
    for metric in ("euclidean", "cosine"):
        for k in (1, 2, 5, 17, N):
            union = old_knn_mask(image, k, metric) | old_knn_mask(text, k, metric)
            union.fill_diagonal_(True)
            rows = knn_row_bits([image, text], k, metric, chunk=8)
            assert torch.equal(rows.dense(), union.float())
    radii = neighbours.KnnRadiusSimilarity([image, text], 5)
    union = old_knn_mask(image, 5) | old_knn_mask(text, 5)
    union.fill_diagonal_(True)
    assert torch.equal(radii.block(torch.arange(N)), union.float())


def test_count_true_counts_rows():
    from cmhbench.neighbours import count_true

    mask = torch.rand(5, 1000) < 0.4
    assert torch.equal(count_true(mask), mask.sum(1)) and count_true(mask).dtype == torch.int64
    assert torch.equal(count_true(mask[:, ::3]), mask[:, ::3].sum(1))  # strided views too


def test_count_true_on_long_rows_counts_by_words():
    from cmhbench.neighbours import LANE_GROUP, count_true

    g = torch.Generator().manual_seed(3)
    n = 4 * LANE_GROUP + 5  # past the byte path, not a multiple of the word groups
    mask = torch.rand(6, n, generator=g) < torch.tensor([0.0, 0.01, 0.5, 0.99, 1.0, 0.3])[:, None]
    mask[4] = True  # every byte lane of every word at its limit of 255 per group
    assert torch.equal(count_true(mask), mask.sum(1)) and count_true(mask).dtype == torch.int64
    assert torch.equal(count_true(mask[:, 1::2]), mask[:, 1::2].sum(1))
    assert torch.equal(count_true(mask.T.contiguous().T), mask.sum(1))  # column-major rows


@pytest.mark.parametrize("lane_group", [8, 16, 2040])
def test_kth_smallest_on_long_rows_is_the_stable_sort(monkeypatch, lane_group):
    import cmhbench.neighbours as neighbours

    monkeypatch.setattr(neighbours, "LANE_GROUP", lane_group)  # small groups: many words per row
    g = torch.Generator().manual_seed(4)
    n = 9000  # > 8 SELECT_SAMPLE: the bracketed selection
    rows = {
        "uniform": torch.rand(7, n, generator=g, dtype=torch.float64),
        "ties": torch.randint(0, 6, (7, n), generator=g).double(),
        "zeros": torch.randint(0, 2, (7, n), generator=g).double() * torch.rand(7, 1, generator=g, dtype=torch.float64),
        "ascending": torch.arange(n, dtype=torch.float64).repeat(2, 1),  # the bracket misses: kthvalue
    }
    for name, keys in rows.items():
        order = torch.sort(keys, dim=1, stable=True)
        for k in (1, 2, 1500, 4500, n - 1, n):
            radius, last, tied = neighbours.kth_smallest(keys, k)
            assert torch.equal(radius, order.values[:, k - 1]), (name, k)
            assert torch.equal(last, order.indices[:, k - 1]), (name, k)
            assert torch.equal(tied, (keys == radius[:, None]).sum(1) > 1), (name, k)
            member = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, order.indices[:, :k], True)
            assert torch.equal(neighbours.among_k_smallest(keys, radius, last, tied), member), (name, k)
            cols = torch.randperm(n, generator=g)[:300]
            got = neighbours.among_k_smallest(keys[:, cols], radius, last, tied, cols)
            assert torch.equal(got, member[:, cols]), (name, k)


@pytest.mark.parametrize("panel", [2048, 9])  # keys from one panel of all columns, or from 5 of 9 (the last 4)
@pytest.mark.parametrize("lane_group", [8, 2040])
def test_knn_radii_reads_with_unclamped_keys_match_the_bits(monkeypatch, lane_group, panel):
    import cmhbench.neighbours as neighbours

    monkeypatch.setattr(neighbours, "LANE_GROUP", lane_group)
    monkeypatch.setattr(neighbours, "KEY_PANEL", panel)
    monkeypatch.setattr(neighbours, "SELECT_SAMPLE", 2)  # the bracketed selection at small n
    _, text = tied_outputs()
    image = torch.randn(N, 64, generator=torch.Generator().manual_seed(8))
    image[21] = image[20]  # float64 keys of equal 64-d float32 rows round to -4e-15 here: unclamped
    image[31] = image[30]  # keys below a radius of 0 (k = 1), where only the lower index is a neighbour
    for k in (1, 2, 3, 5, 17, N):
        union = old_knn_mask(image, k) | old_knn_mask(text, k)
        union.fill_diagonal_(True)
        radii = neighbours.KnnRadiusSimilarity([image, text], k, chunk=8)
        assert torch.equal(radii.block(torch.arange(N)), union.float()), k
        cols = torch.tensor([0, 12, 13, 5, 39])
        assert torch.equal(radii.columns(cols), union.float().T[cols]), k
        assert radii.count() == int(union.sum()), k


@pytest.mark.parametrize("panel", [2048, 16])
def test_knn_radii_reads_of_changing_sizes_through_reused_arrays_stay_exact(panel, monkeypatch):
    """Reads of 16, then 40, then 8 rows (and columns) write their keys and masks into the same
    arrays (:class:`Buffers`); each read still equals the bits, and a block handed out earlier is its
    own array, unchanged by the reads after it."""
    import cmhbench.neighbours as neighbours

    monkeypatch.setattr(neighbours, "KEY_PANEL", panel)

    image, text = tied_outputs()
    k = 5
    union = old_knn_mask(image, k) | old_knn_mask(text, k)
    union.fill_diagonal_(True)
    radii = neighbours.KnnRadiusSimilarity([image, text], k, chunk=8)
    g = torch.Generator().manual_seed(9)
    first = radii.block(torch.arange(16))
    kept = first.clone()
    for size in (40, 8, 3, 40, 17):
        rows = torch.randperm(N, generator=g)[:size]
        assert torch.equal(radii.block(rows), union.float()[rows]), size
        assert torch.equal(radii.columns(rows), union.float().T[rows]), size
        cols = torch.randperm(N, generator=g)[:7]
        assert torch.equal(radii.block(rows, cols), union.float()[rows][:, cols]), size
    assert torch.equal(first, kept)
    held = radii._buffers.nbytes()
    assert held == 2 * 40 * N + 40 * min(N, panel) * 8  # two bool masks and one panel of float64 keys, at the most rows read


def test_buffers_grow_to_the_most_rows_and_hand_out_views():
    from cmhbench.neighbours import Buffers

    buffers = Buffers()
    a = buffers.get("keys", 4, 10, torch.float64, torch.device("cpu"))
    assert a.shape == (4, 10) and a.is_contiguous()
    b = buffers.get("keys", 2, 10, torch.float64, torch.device("cpu"))
    assert b.data_ptr() == a.data_ptr() and b.shape == (2, 10)  # a view of the same array
    c = buffers.get("keys", 6, 10, torch.float64, torch.device("cpu"))
    assert c.shape == (6, 10) and buffers.nbytes() == 6 * 10 * 8  # grown, the old array dropped
    d = buffers.get("keys", 3, 10, torch.bool, torch.device("cpu"))
    assert d.dtype == torch.bool and buffers.nbytes() == 3 * 10  # another dtype: a new array


def no_blocks(*args, **kwargs):
    raise AssertionError("the mean read a block of S")


def block_sum_mean(op: SimilarityOperator) -> float:
    """The base class's mean: a float64 sum of every row block's float32 entries over ``n^2``."""
    return SimilarityOperator.mean(op)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_mean_over_distinct_rows_is_the_block_sum(seed, monkeypatch):
    labels = tied_labels(seed=seed)
    labels[20:30] = labels[3]  # many items sharing one label row
    from cmhbench_plugins.strategies.labels import LabelOverlap
    op = LabelOverlap(labels)
    want = block_sum_mean(op)
    monkeypatch.setattr(op, "block", no_blocks)  # no pass over the n x n entries
    assert op.mean() == want
    monkeypatch.setattr(interfaces, "CHUNK_ENTRIES", 7)  # the distinct rows in several chunks
    assert op.mean() == want
    assert LabelOverlap(torch.zeros(0, 6)).mean() == 0.0


@pytest.mark.parametrize("bits", [8, 16, 32, 128])
def test_graded_codes_mean_in_closed_form_is_the_block_sum_bit_for_bit(bits, monkeypatch):
    from cmhbench_plugins.strategies.codes import CodeAffinity
    g = torch.Generator().manual_seed(bits)
    codes = [sign_codes(torch.randn(300, bits, generator=g)).float() for _ in range(2)]
    codes[0][:40] = codes[0][0]  # duplicated codes: many affinities of exactly 1
    op = CodeAffinity(codes)
    want = block_sum_mean(op)
    op.block = no_blocks  # no pass over the n x n entries
    assert op.mean() == want
    assert 0.5 < want < 1.0  # the duplicates pull it above the 0.5 of independent codes


def test_graded_codes_mean_of_other_lengths_is_the_exact_mean():
    from cmhbench_plugins.strategies.codes import CodeAffinity, hamming_affinity
    g = torch.Generator().manual_seed(3)
    codes = [sign_codes(torch.randn(200, 24, generator=g)).double() for _ in range(2)]
    exact = float(hamming_affinity(codes).mean())  # float64 entries
    op = CodeAffinity([c.float() for c in codes])
    assert op.mean() == pytest.approx(exact, rel=1e-15)
    assert op.mean() == pytest.approx(block_sum_mean(op), rel=1e-7)


def test_binary_codes_mean_is_still_the_block_sum():
    from cmhbench_plugins.strategies.codes import CodeAffinity
    g = torch.Generator().manual_seed(4)
    codes = [sign_codes(torch.randn(100, 16, generator=g)).float() for _ in range(2)]
    op = CodeAffinity(codes, threshold=0.75)
    assert op.mean() == block_sum_mean(op)


@pytest.mark.parametrize("bits", [1, 8, 16, 32, 64, 128, 24])
def test_fused_hamming_affinity_is_the_old_expression(bits):
    from cmhbench_plugins.strategies.codes import hamming_affinity
    g = torch.Generator().manual_seed(bits)
    codes = [sign_codes(torch.randn(50, bits, generator=g)).float() for _ in range(2)]
    codes[1][3] = codes[1][2]
    cols = [c[torch.tensor([7, 3, 3, 0])] for c in codes]
    for others in (None, cols):
        ref = others if others is not None else codes
        old = ((1.0 + sum(c @ o.T / bits for c, o in zip(codes, ref)) / 2) / 2.0).clamp(0.0, 1.0)
        new = hamming_affinity(codes, others)
        assert new.min() >= 0.0 and new.max() <= 1.0
        if bits & (bits - 1) == 0:  # 2^k bits: every step exact, bit for bit
            assert torch.equal(new, old)
        else:
            torch.testing.assert_close(new, old, rtol=0, atol=2e-7)
    one = [torch.ones(2, bits), -torch.ones(2, bits)]
    assert torch.equal(hamming_affinity(one, [-one[0], -one[1]]), torch.zeros(2, 2))  # the extremes exactly
    assert torch.equal(hamming_affinity(one), torch.ones(2, 2))


def test_label_blocks_compared_in_place_are_the_old_float_mask():
    from cmhbench_plugins.strategies.labels import LabelOverlap
    labels = tied_labels()
    labels[4] = torch.tensor([0.5, 0.0, 2.0, 0.0, 0.0, 0.0])  # not only 0/1: still 1[overlap > 0]
    op = LabelOverlap(labels)
    for rows, cols in index_sets():
        other = labels if cols is None else labels[cols]
        got = op.block(rows, cols)
        assert got.dtype == torch.float32
        assert torch.equal(got.view(torch.int32), (labels[rows] @ other.T > 0).float().view(torch.int32))  # bit patterns

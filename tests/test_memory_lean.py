"""Issue 12, memory: loads without whole-matrix copies, split tensors shared or viewed, ``load_s``,
and the memory-lean ``features`` teacher, kNN chunks and ``labels`` and ``ukd`` caches, all with the old values."""

from __future__ import annotations

import importlib

import h5py
import numpy as np
import pytest
import torch

from cmh_files import write_mat
from cmhbench import interfaces
from cmhbench.data import matfile
from cmhbench.data.assemble import kept_rows
from cmhbench.data.dataset import CrossModalData, Splits
from cmhbench.data.matfile import as_features, read_features, read_mat, to_rows
from cmhbench.errors import DataError
from cmhbench.interfaces import Modality, PairedFeatures, Supervision, data_relative_cache_bytes
from cmhbench.plugins import get_registry
from cmhbench import runner as runner_mod
from cmhbench.runner import GatheredRows, RunRequest, Runner, _to_device
from cmhbench.neighbours import knn_chunk_rows, knn_orders, knn_row_bits, KnnRadiusSimilarity, unpack_bits
from cmhbench.training import NormalizedRows, blockwise_products, l2_normalize, seed_everything, times_transposed
from method_helpers import build

features_plugin = importlib.import_module("cmhbench_plugins.teachers.features")


def old_features(name, arr, n):
    """What ``as_features`` returned before: one contiguous float32 copy, checked whole."""
    out = np.ascontiguousarray(to_rows(name, arr, n), dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{name}: {int(bad.sum())} NaN or infinite value(s), first at item {r}, dimension {c}")
    return out


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


# --- reading ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("columns", [False, True])
@pytest.mark.parametrize("version", ["v73", "v5"])
def test_read_features_is_bit_identical_to_the_old_read(tmp_path, monkeypatch, dtype, columns, version):
    monkeypatch.setattr(matfile, "READ_BLOCK_BYTES", 200)  # v7.3: many blocks
    monkeypatch.setattr(matfile, "CHECK_BLOCK_ENTRIES", 50)  # as_features: many row blocks
    rng = np.random.default_rng(0)
    n, d = 103, 9
    x = rng.standard_normal((n, d)) * 1e3 if dtype is not np.uint8 else rng.integers(0, 3, (n, d))
    x = x.astype(dtype)
    path = tmp_path / "x.mat"
    write_mat(path, {"XAll": x, "other": np.ones((3, 3))}, version=version, columns=columns)
    got = read_features(path, "XAll", n)
    want = old_features("XAll", np.asarray(read_mat(path, ["XAll"])["XAll"]), n)
    assert same_bits(got, want) and got.flags.c_contiguous


def test_v73_read_is_block_by_block_along_whole_hdf5_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(matfile, "READ_BLOCK_BYTES", 3 * 8 * 4)  # 3 items of 8 float32 -> one chunk of 2
    x = np.random.default_rng(1).random((11, 8)).astype(np.float32)
    path = tmp_path / "x.mat"
    with h5py.File(path, "w") as f:
        f.create_dataset("XAll", data=x.T, chunks=(8, 2))  # MATLAB's 11 x 8, chunked by 2 items
    reads = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    got = read_features(path, "XAll", 11)
    assert np.array_equal(got, x)
    assert [k[1] for k in reads] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8), slice(8, 10), slice(10, 11)]


@pytest.mark.parametrize("version", ["v73", "v5"])
def test_read_features_keeps_the_old_errors(tmp_path, monkeypatch, version):
    monkeypatch.setattr(matfile, "READ_BLOCK_BYTES", 40)
    monkeypatch.setattr(matfile, "CHECK_BLOCK_ENTRIES", 10)
    x = np.zeros((30, 5))
    x[17, 3], x[4, 1], x[29, 0] = np.nan, np.inf, -np.inf  # first in row order: item 4, dimension 1
    path = tmp_path / "x.mat"
    write_mat(path, {"XAll": x}, version=version)
    with pytest.raises(DataError) as new:
        read_features(path, "XAll", 30)
    with pytest.raises(DataError) as old:
        old_features("XAll", read_mat(path, ["XAll"])["XAll"], 30)
    assert str(new.value) == str(old.value) == "XAll: 3 NaN or infinite value(s), first at item 4, dimension 1"
    with pytest.raises(DataError, match=r"XAll: shape \(30, 5\) has no axis of 31 items"):
        read_features(path, "XAll", 31)
    with pytest.raises(DataError, match="variable\\(s\\) YAll not found"):
        read_features(path, "YAll", 30)


def test_as_features_copies_nothing_already_float32_c_ordered(monkeypatch):
    monkeypatch.setattr(matfile, "CHECK_BLOCK_ENTRIES", 7)
    x = np.random.default_rng(2).random((20, 4)).astype(np.float32)
    assert as_features("x", x, 20) is x
    f_order = np.asfortranarray(x.astype(np.float64))
    assert same_bits(as_features("x", f_order, 20), old_features("x", f_order, 20))


def test_kept_rows_copies_only_a_strict_subset():
    x = np.arange(12.0).reshape(6, 2)
    assert kept_rows(x, np.arange(6)) is x
    assert np.array_equal(kept_rows(x, np.array([0, 2, 5])), x[[0, 2, 5]])
    assert np.array_equal(kept_rows(x, np.array([5, 4, 3, 2, 1, 0])), x[::-1])  # every row, another order


# --- the runner's split tensors ------------------------------------------------------------------------


def _data(query, database, train, n=40):
    rng = np.random.default_rng(3)
    image, text = rng.random((n, 6)).astype(np.float32), rng.random((n, 4)).astype(np.float32)
    labels = (rng.random((n, 3)) < 0.5).astype(np.uint8)
    splits = Splits(query=np.asarray(query), database=np.asarray(database), train=np.asarray(train), protocol="t", seed=0)
    return CrossModalData("t", image, text, labels, splits, synthetic=True)


def _whole(rows):
    """A split's features as one tensor (a :class:`GatheredRows` gathered whole)."""
    return rows[:] if isinstance(rows, GatheredRows) else rows


def _check_values(data, tensors):
    for name in ("train", "query", "database"):
        idx = getattr(data.splits, name)
        image, text = _whole(tensors[name].image), _whole(tensors[name].text)
        assert torch.equal(image, torch.from_numpy(data.image[idx])) and torch.equal(text, torch.from_numpy(data.text[idx]))
        assert image.is_contiguous() and text.is_contiguous()
        for start in range(0, len(idx), 7):  # what encoding reads: slices of rows
            assert torch.equal(tensors[name].image[start : start + 7], torch.from_numpy(data.image[idx[start : start + 7]]))
    assert torch.equal(tensors["train"].labels, torch.from_numpy(data.labels[data.splits.train].astype(np.float32)))


def _inside(t, arr):
    start = arr.__array_interface__["data"][0]
    return start <= t.data_ptr() < start + arr.nbytes


def test_identical_splits_share_one_tensor_and_ranges_are_views_of_the_data():
    n = 40
    data = _data(np.arange(34, n), np.arange(34), np.arange(34))  # ucch: train = database, queries last
    t = _to_device(data, torch.device("cpu"))
    _check_values(data, t)
    assert t["train"].image is t["database"].image and t["train"].text is t["database"].text
    for name in ("query", "database"):
        assert _inside(t[name].image, data.image) and _inside(t[name].text, data.text)  # no copy on the CPU


def test_scattered_evaluation_splits_are_gathered_by_blocks_and_training_is_copied_on_its_own():
    perm = np.random.default_rng(4).permutation(40)
    data = _data(perm[:8], perm[8:], perm[8:20])  # dcmh / ukd: training = first items of the database
    t = _to_device(data, torch.device("cpu"))
    _check_values(data, t)
    for name in ("query", "database"):  # nothing gathered until encoded
        assert isinstance(t[name].image, GatheredRows) and t[name].image.arr is data.image and t[name].text.arr is data.text
    assert t["train"].image.shape == (12, 6) and not _inside(t["train"].image, data.image)
    djsrh = _data(perm[:8], np.sort(perm[8:]), perm[20:32])  # training scattered in the database
    t = _to_device(djsrh, torch.device("cpu"))
    _check_values(djsrh, t)
    assert isinstance(t["database"].image, GatheredRows) and isinstance(t["train"].image, torch.Tensor)


def test_on_another_device_a_prefix_of_a_scattered_split_is_a_view_of_it(monkeypatch):
    perm = np.random.default_rng(4).permutation(40)
    data = _data(perm[:8], perm[8:], perm[8:20])
    made = runner_mod._split_tensors(data.image, {"train": perm[8:20], "query": perm[:8], "database": perm[8:]},
                                     torch.device("meta"))  # any device but the CPU: splits resident there
    assert made["train"].shape == (12, 6) and made["database"].shape == (32, 6) and made["query"].shape == (8, 6)
    assert all(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in made.values())
    assert made["train"]._base is made["database"]  # a view of the gathered database


def test_results_record_the_load_time(tmp_path, test_plugins):
    req = RunRequest(teacher="features", student="none", dataset="tiny", bits=(8, 16), results_dir=tmp_path, device="cpu")
    runner = Runner(get_registry())
    outcomes = runner.run(req)
    loads = [o.result["timings"]["load_s"] for o in outcomes]
    assert loads[0] > 0 and loads[0] == loads[1]  # loaded once per runner, recorded in each result


# --- features teacher ------------------------------------------------------------------------------


def old_principal_directions(x, k):
    cov = (x.double().T @ x.double()) / max(x.shape[0], 1)
    _, vecs = torch.linalg.eigh(cov)
    vecs = vecs.flip(1)[:, : min(k, x.shape[1])]
    pivot = vecs.abs().argmax(0)
    signs = torch.sign(vecs[pivot, torch.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    return (vecs * signs).to(x.dtype)


def test_features_teacher_blockwise_fit_matches_the_whole_matrix_fit(monkeypatch):
    monkeypatch.setattr(interfaces, "CHUNK_ENTRIES", 8 * 7 * 30)  # 7 rows a block of 30-d image features
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(150, 6, generator=g)
    train = PairedFeatures(latent @ torch.randn(6, 30, generator=g) + 0.1 * torch.randn(150, 30, generator=g) + 1.0,
                           latent @ torch.randn(6, 5, generator=g) + 2.0)
    model = build("teacher", "features")
    model.fit(train, 8)
    for modality in Modality:
        x = train.get(modality)
        z = l2_normalize(x - x.mean(0, keepdim=True))
        want = old_principal_directions(z, 8)
        got = model.projection[modality][:, : want.shape[1]]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert torch.equal(model.preprocess(x, modality), l2_normalize(x - model.mean[modality]))  # in place: same values
        whole = model.encode(x, modality)
        monkeypatch.setattr(features_plugin, "ENCODE_ROWS", 7)  # by blocks of 7 rows: the same outputs
        assert torch.equal(model.encode(x, modality), whole)
        monkeypatch.setattr(features_plugin, "ENCODE_ROWS", 8192)
        codes = torch.sign(whole)
        assert torch.equal(codes[:, : want.shape[1]], torch.sign(z @ want))


# --- kNN chunks ----------------------------------------------------------------------------------


def test_knn_chunks_are_sized_by_bytes_and_give_the_old_bits(monkeypatch):
    assert knn_chunk_rows(17_900) * 17_900 * 8 <= 32 * 2**20 and knn_chunk_rows(10**9) == 1
    g = torch.Generator().manual_seed(1)
    # euclidean on float32 outputs (ukd's default): float64 products of float32 values are exact, ties included
    tied = [torch.randint(-2, 3, (50, 4), generator=g).float(), torch.randn(50, 3, generator=g)]
    generic = [torch.randn(50, 4, generator=g), torch.randn(50, 3, generator=g)]
    for metric, spaces in (("euclidean", tied), ("euclidean", generic), ("cosine", generic)):
        old = knn_row_bits(spaces, 9, metric, chunk=4096)
        monkeypatch.setattr(interfaces, "CHUNK_ENTRIES", 4 * 3 * 50)  # 3 rows a block
        assert [s for s, _ in knn_orders(spaces[0], 9, metric)][:3] == [0, 3, 6]
        assert torch.equal(knn_row_bits(spaces, 9, metric).packed, old.packed), metric
        monkeypatch.undo()


# --- labels strategy -----------------------------------------------------------------------------


def _labelled_train(n=60, seed=2):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, 5, generator=g) < 0.3).float()
    return PairedFeatures(torch.randn(n, 7, generator=g), torch.randn(n, 3, generator=g), labels)


def test_labels_cache_is_bounded_by_the_data_and_students_get_the_same_results(monkeypatch):
    train = _labelled_train()
    kept = build("strategy", "labels").distill(None, train)
    assert kept.kept_dense is not None  # 60 x 60 float32 is under the 256 MiB floor
    want = (train.labels @ train.labels.T > 0).float()
    assert torch.equal(kept.dense(), want)
    # the rule: the floor, or the features (60 x (7 + 3) float32 = 2400 bytes < 60^2 x 4)
    monkeypatch.setattr(interfaces, "DENSE_FLOOR_BYTES", 0)
    assert data_relative_cache_bytes(train) == 60 * 10 * 4
    on_demand = build("strategy", "labels").distill(None, train)
    assert on_demand.kept_dense is None and torch.equal(on_demand.block(torch.arange(60)), want)
    assert on_demand.info["similar_fraction"] == pytest.approx(kept.info["similar_fraction"], rel=1e-6)
    wide = PairedFeatures(torch.zeros(60, 50), torch.zeros(60, 10), train.labels)  # 60 <= 50 + 10: kept
    assert build("strategy", "labels").distill(None, wide).kept_dense is not None
    codes = []
    for sup in (kept, on_demand):
        seed_everything(5)  # as the runner does before it builds a method
        student = build("student", "linear", epochs=2)
        student.fit(train.without_labels(), sup, 8)
        codes.append(torch.cat([student.encode(train.get(m), m) for m in Modality], 1))
    assert torch.equal(codes[0], codes[1])  # bit-identical student results


class _FixedOutputs:
    """A teacher whose continuous outputs are fixed ``(n, 6)`` matrices (all ``ukd`` reads)."""

    def __init__(self, n, seed=4):
        g = torch.Generator().manual_seed(seed)
        self.out = {m: torch.randn(n, 6, generator=g) for m in Modality}

    def encode(self, x, modality):
        return self.out[Modality(modality)]


@pytest.mark.parametrize("student, overrides", [("linear", {"epochs": 2}), ("dcmh", {"epochs": 2}),
                                                ("dadh", {"epochs": 2, "hidden": 64, "batch_size": 16})])
def test_ukd_cache_is_bounded_by_the_data_and_students_get_the_same_results(monkeypatch, student, overrides):
    train = _labelled_train().without_labels()
    teacher = _FixedOutputs(60)
    kept = build("strategy", "ukd", k=9).distill(teacher, train)
    assert kept.kept_dense is not None  # 60 x 60 float32 is under the 256 MiB floor
    monkeypatch.setattr(interfaces, "DENSE_FLOOR_BYTES", 0)  # now 60^2 x 4 > the 60 x 10 float32 features
    # a rank-2 projection would differ from L = S: dadh must still build the dense L while it fits
    monkeypatch.setattr(importlib.import_module("cmhbench_plugins.students.dadh"), "PROJECTION_RANK", 2)
    on_demand = build("strategy", "ukd", k=9).distill(teacher, train)
    assert on_demand.kept_dense is None
    assert torch.equal(on_demand.block(torch.arange(60)), kept.kept_dense)
    assert on_demand.info["similar_fraction"] == pytest.approx(kept.info["similar_fraction"], rel=1e-6)
    codes = []
    for sup in (kept, on_demand):
        seed_everything(5)  # as the runner does before it builds a method
        model = build("student", student, **overrides)
        model.fit(train, sup, 8)
        codes.append(torch.cat([model.encode(train.get(m), m) for m in Modality], 1))
    assert torch.equal(codes[0], codes[1])  # bit-identical student results (dadh: the same dense L = S)


def _outputs(kind, n=70, seed=6):
    g = torch.Generator().manual_seed(seed)
    if kind == "tied":  # integer outputs: many keys tie to the last bit
        return [torch.randint(-2, 3, (n, 4), generator=g).float(), torch.randint(-1, 2, (n, 3), generator=g).float()]
    return [torch.randn(n, 128, generator=g), 3 * torch.randn(n, 64, generator=g)]


@pytest.mark.parametrize("panel", [2048, 16, 7])  # one panel of all 70 columns; 5 panels; 10 (the last shorter)
@pytest.mark.parametrize("kind", ["tied", "generic"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_radii_give_the_entries_of_the_bits_for_any_block(kind, metric, panel, monkeypatch):
    import cmhbench.neighbours as neighbours

    monkeypatch.setattr(neighbours, "KEY_PANEL", panel)
    spaces = _outputs(kind)
    g = torch.Generator().manual_seed(1)
    for k in (1, 2, 23, 70):
        bits = knn_row_bits(spaces, k, metric, chunk=16)  # keys from the same whole 8-row tiles
        radii = KnnRadiusSimilarity(spaces, k, metric, chunk=21)  # 16-row tiles, the last one padded
        assert radii.chunk == 16 and radii.count() == bits.count() and radii.mean() == bits.mean()
        assert torch.equal(radii.block(torch.arange(70)), bits.block(torch.arange(70)))
        for m in (1, 3, 8, 13):  # a key's rounding depends on its product's shape: not here
            rows = torch.randperm(70, generator=g)[:m]
            cols = torch.randperm(70, generator=g)[:11]
            assert torch.equal(radii.block(rows), bits.block(rows)), (k, m)
            assert torch.equal(radii.block(rows, cols), bits.block(rows, cols)), (k, m)
        if metric == "euclidean":  # rows of M^T from the columns' own products (cosine keeps bits in ukd)
            for cols in (torch.tensor([0]), torch.tensor([3, 5, 9, 3]), torch.arange(70), torch.tensor([69, 1])):
                assert torch.equal(radii.columns(cols), bits.block(torch.arange(70), cols).T), (k, cols)
        masks = [old_knn_mask(z, k, metric) for z in spaces]  # the sort-based ranking, ties to the lower index
        assert torch.equal(bits.block(torch.arange(70)).bool(), (masks[0] | masks[1]) | torch.eye(70, dtype=torch.bool))


def old_knn_mask(z, k, metric):
    """Row i marks i's k nearest rows: a stable sort of the float64 keys (those of whole 8-row
    tiles: exactly tied cosine keys of integer outputs round differently in a 70-row product)."""
    z = z.double()
    if metric == "cosine":
        z = l2_normalize(z)
    sq = (z * z).sum(1)
    key = torch.cat([(z[t : t + 8] @ z.T) for t in range(0, 64, 8)] + [(z[[*range(64, 70), 64, 64]] @ z.T)[:6]])
    key = key.neg_() if metric == "cosine" else key.mul_(-2.0).add_(sq[:, None]).add_(sq[None, :]).clamp_(min=0.0)
    order = torch.sort(key, dim=1, stable=True).indices[:, :k]
    return torch.zeros_like(key, dtype=torch.bool).scatter_(1, order, True)


def test_ukd_keeps_radii_where_bits_would_outgrow_the_features_and_students_get_the_same_results(monkeypatch):
    ukd = importlib.import_module("cmhbench_plugins.strategies.ukd")
    def nus(n):  # NUS-WIDE-sized float32 features, not allocated
        return PairedFeatures(torch.empty(n, 4096, device="meta"), torch.empty(n, 1000, device="meta"))

    thin = PairedFeatures(torch.zeros(46_341, 1), torch.zeros(46_341, 1))
    assert ukd.keeps_bits(46_340, thin) and not ukd.keeps_bits(46_341, thin)  # the 256 MiB floor
    assert ukd.keeps_bits(15_000, nus(15_000))  # ukd protocol: 28 MB of bits
    assert not ukd.keeps_bits(184_477, nus(184_477))  # ucch protocol: 4.25 GB of bits > 3.76 GB / 4
    train = _labelled_train(n=100).without_labels()
    teacher = _FixedOutputs(100)
    as_bits = build("strategy", "ukd", k=33).distill(teacher, train)
    monkeypatch.setattr(interfaces, "DENSE_FLOOR_BYTES", 0)  # 100^2 / 8 bytes > a quarter of 100 x 10 float32
    as_radii = build("strategy", "ukd", k=33).distill(teacher, train)
    assert type(as_bits.operator).__name__ == "BitSimilarity" and isinstance(as_radii.operator, KnnRadiusSimilarity)
    assert as_radii.kept_dense is None and torch.equal(as_radii.block(torch.arange(100)), as_bits.block(torch.arange(100)))
    assert as_radii.info["similar_fraction"] == pytest.approx(as_bits.info["similar_fraction"], rel=1e-6)
    codes = []
    for sup in (as_bits, as_radii):
        seed_everything(5)
        model = build("student", "dcmh", epochs=2)
        model.fit(train, sup, 8)
        codes.append(torch.cat([model.encode(train.get(m), m) for m in Modality], 1))
    assert torch.equal(codes[0], codes[1])


def test_large_similarity_values_are_checked_by_row_blocks(monkeypatch):
    monkeypatch.setattr(interfaces, "CHUNK_ENTRIES", 16)
    s = torch.zeros(10, 10)
    Supervision(s.clone())
    s[7, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        Supervision(s)


def test_the_transposed_view_of_an_exactly_symmetric_kept_matrix_is_the_matrix_itself(monkeypatch):
    monkeypatch.setattr(interfaces, "CHUNK_ENTRIES", 24)  # compared by tiles of 2 rows
    train = _labelled_train(12)
    sup = build("strategy", "labels").distill(None, train)
    view = sup.rows().T.contiguous()
    assert sup.kept_symmetric and view.matrix.data_ptr() == sup.kept_dense.data_ptr()  # no copy of S^T
    idx = torch.tensor([3, 0, 7])
    assert torch.equal(view[idx], sup.kept_dense.T[idx]) and torch.equal(sup.rows().T[idx], sup.kept_dense[idx])
    s = torch.rand(12, 12)
    s = (s + s.T) / 2
    s[2, 9], s[9, 2] = 0.0, -0.0  # equal as numbers, not as bits: kept as a transposed copy
    asym = Supervision(s)
    assert not asym.kept_symmetric
    t = asym.rows().T.contiguous()
    assert t.matrix.data_ptr() != s.data_ptr() and torch.equal(t[torch.arange(12)], s.T)
    assert not Supervision(torch.triu(torch.ones(5, 5))).kept_symmetric


def test_bit_similarity_count_by_small_chunks_is_exact(monkeypatch):
    g = torch.Generator().manual_seed(3)
    bits = knn_row_bits([torch.randn(37, 3, generator=g)], 6)
    want = int(unpack_bits(bits.packed, 37).sum())
    monkeypatch.setattr(interfaces, "CHUNK_ENTRIES", 8 * 5 * 5)  # 5 rows of 5 bytes a chunk
    assert bits.count() == want and bits.mean() == want / 37**2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_normalized_rows_are_l2_normalize_without_a_copy(dtype):
    """NormalizedRows keeps the matrix and its row norms; its rows and its product with a left factor are
    l2_normalize's (zero rows stay zero), for any block size."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(23, 7, generator=gen).to(dtype)
    x[5] = 0
    want = l2_normalize(x.float())
    left = torch.randn(4, 7, generator=gen)
    for block_entries in (1, 7 * 5, 1 << 24):
        view = NormalizedRows(x, block_entries=block_entries)
        assert view.x is x and view.norms.shape == (23,) and view.shape == x.shape and len(view) == 23
        rows = torch.tensor([5, 0, 22, 0])
        torch.testing.assert_close(view[rows], want[rows], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(view[3:9], want[3:9], rtol=1e-6, atol=1e-7)
        assert torch.all(view[rows][0] == 0)
        torch.testing.assert_close(times_transposed(left, view), left @ want.T, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(times_transposed(left, want), left @ want.T, rtol=0, atol=0)


def test_blockwise_products_sum_every_pair_over_row_blocks():
    """Each requested Z_a^T Z_b over row blocks equals the whole product (exactly for one block, to float64
    rounding for many); the transform sees each view's index and rows; no rows give zero matrices."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(37, 5, generator=gen), torch.rand(37, 3, generator=gen)
    shift = (torch.full((5,), 0.25), torch.full((3,), 0.5))
    zx, zy = (x - shift[0]).double(), (y - shift[1]).double()
    want = [zx.T @ zx, zy.T @ zy, zx.T @ zy, zy.T @ zx]
    pairs = [(0, 0), (1, 1), (0, 1), (1, 0)]
    one = blockwise_products([x, y], pairs, lambda v, rows: rows - shift[v])
    assert all(torch.equal(a, b) for a, b in zip(one, want))
    for entries in (1, 5, 11 * 5):
        many = blockwise_products([x, y], pairs, lambda v, rows: rows - shift[v], entries=entries)
        for a, b in zip(many, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    empty = blockwise_products([x[:0], y[:0]], [(0, 1)])
    assert empty[0].shape == (5, 3) and empty[0].dtype == torch.float64 and not empty[0].any()

"""Strategy ``sakdh``: its fused, reconstructed similarity on hand-made outputs, and that it carries
label information on structured data well enough for a DCMH student to learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cmhbench.interfaces as interfaces

from cmhbench.interfaces import Modality, PairedFeatures, Supervision
from method_helpers import build, cross_modal_map, paired
from plugins_for_tests import load_tiny
from cmhbench_plugins.teachers.dsah import FusionSimilarity
from cmhbench_plugins.strategies.sakdh import gram as sakdh_gram
from cmhbench.training import NormalizedRows


class FixedTeacher:
    """A stub teacher whose ``encode`` returns fixed outputs per modality."""

    def __init__(self, image: np.ndarray, text: np.ndarray) -> None:
        self.out = {Modality.IMAGE: torch.tensor(image, dtype=torch.float32),
                    Modality.TEXT: torch.tensor(text, dtype=torch.float32)}

    def encode(self, x, modality):
        return self.out[Modality(modality)]


def _reference(image, text, beta, alignment, eta):
    """Direct O(n^3) computation of S_R in float64."""
    zi = image / np.linalg.norm(image, axis=1, keepdims=True)
    zt = text / np.linalg.norm(text, axis=1, keepdims=True)
    s_i, s_t, s_it = zi @ zi.T, zt @ zt.T, zi @ zt.T
    s_f = (1 - alignment) * (beta * s_i + (1 - beta) * s_t) + alignment * (s_it + s_it.T) / 2
    return (1 - eta) * s_f + eta * s_f @ s_f.T / len(image)


def test_sakdh_fused_reconstruction_matches_direct_computation():
    rng = np.random.default_rng(3)
    n = 9
    image, text = rng.standard_normal((n, 6)), rng.standard_normal((n, 6))
    teacher = FixedTeacher(image, text)
    train = PairedFeatures(torch.zeros(n, 2), torch.zeros(n, 3))
    want = _reference(image, text, beta=0.7, alignment=0.3, eta=0.4)

    soft = build("strategy", "sakdh", beta=0.7, alignment=0.3, eta=0.4, mode="soft").distill(teacher, train).similarity
    want_soft = (want + 1) / 2
    np.fill_diagonal(want_soft, 1.0)
    np.testing.assert_allclose(soft.numpy(), want_soft, atol=1e-5)

    sup = build("strategy", "sakdh", beta=0.7, alignment=0.3, eta=0.4, similar_fraction=0.25).distill(teacher, train)
    off = want[~np.eye(n, dtype=bool)]
    k = round(0.25 * n * (n - 1))
    threshold = np.sort(off)[::-1][k - 1]
    want_bin = (want >= threshold).astype(np.float32)
    np.fill_diagonal(want_bin, 1.0)
    np.testing.assert_array_equal(sup.similarity.numpy(), want_bin)
    s = sup.similarity
    assert torch.equal(s, s.T) and torch.all(torch.diagonal(s) == 1)
    assert abs(float((s.sum() - n) / (n * (n - 1))) - 0.25) < 0.05


def test_sakdh_equal_weights_without_reconstruction_is_the_fused_code_similarity():
    # beta = alignment = 0.5, eta = 0: S_F = Z_F Z_F^T with Z_F = (Z_I + Z_T) / 2.
    image = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    text = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, -1.0]])
    zi = image / np.linalg.norm(image, axis=1, keepdims=True)
    zt = text / np.linalg.norm(text, axis=1, keepdims=True)
    z = (zi + zt) / 2
    want = (z @ z.T + 1) / 2
    np.fill_diagonal(want, 1.0)
    got = build("strategy", "sakdh", eta=0.0, mode="soft").distill(
        FixedTeacher(image, text), PairedFeatures(torch.zeros(3, 1), torch.zeros(3, 1))
    ).similarity
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_sakdh_similarity_agrees_with_labels_and_teaches_dcmh():
    data = load_tiny()
    train = paired(data, "train", labels=True)
    torch.manual_seed(0)
    teacher = build("teacher", "djsrh", epochs=30, hidden=64)
    teacher.fit(train.without_labels(), 16)
    sup = build("strategy", "sakdh", similar_fraction=0.2).distill(teacher, train.without_labels())
    s = sup.similarity
    assert torch.equal(s, s.T) and torch.all(torch.diagonal(s) == 1)
    assert set(torch.unique(s).tolist()) <= {0.0, 1.0}
    n = s.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    truth = (train.labels @ train.labels.T > 0)[off]
    similar = s.bool()[off]
    base_rate = float(truth.float().mean())  # about 0.25 on 4 balanced classes
    precision = float(truth[similar].float().mean())
    assert base_rate < 0.35 and precision > 0.8, (base_rate, precision)

    torch.manual_seed(0)
    student = build("student", "dcmh", text_hidden=256)  # official schedule and image hash layer; a narrower text net
    student.fit(train.without_labels(), Supervision(s), 16)
    i2t, t2i = cross_modal_map(student, data)
    # Chance level on this 4-class data is about 0.25.
    assert i2t > 0.6 and t2i > 0.6, (i2t, t2i)


class FusionTeacher(FixedTeacher):
    """A stub teacher that builds its own modal-fusion similarity, as DSAH does (its FusionSimilarity)."""

    def __init__(self, image, text, alpha=0.9, k=1.5):
        super().__init__(image, text)
        self.alpha, self.k = alpha, k

    def fusion_similarity(self, train):
        return FusionSimilarity(train.image, train.text, self.alpha, self.k)


def _fusion_reference(image, text, alpha, k, eta):
    """DSAH's fused S on the features, then S_R = K[(1 - eta) S^ + eta S^ S^^T / n] with S^ = S / K, float64."""
    fi = image / np.linalg.norm(image, axis=1, keepdims=True)
    ft = text / np.linalg.norm(text, axis=1, keepdims=True)
    s_hat = alpha * (2 * fi @ fi.T - 1) + (1 - alpha) * (2 * ft @ ft.T - 1)
    return k * ((1 - eta) * s_hat + eta * s_hat @ s_hat.T / len(image))


def _features(n=12, seed=4):
    rng = np.random.default_rng(seed)
    text = (rng.random((n, 5)) < 0.4) + 0.0
    text[np.arange(n), np.arange(n) % 5] = 1.0  # every item has a tag
    return np.abs(rng.standard_normal((n, 7))), text


def test_dsah_fusion_factors_give_its_blocks():
    image, text = _features()
    fused = FusionSimilarity(torch.tensor(image, dtype=torch.float32), torch.tensor(text, dtype=torch.float32), 0.9, 1.5)
    parts, middle = fused.factors()
    u = torch.cat(parts, dim=1).double()
    assert u.shape == (12, 7 + 5 + 1) and middle.shape == (13, 13)
    torch.testing.assert_close((u @ middle @ u.T).float(), fused.dense(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("alpha,k,eta", [(0.9, 1.5, 0.4), (0.3, 1.0, 0.0), (0.5, 2.0, 1.0)])
def test_sakdh_distils_the_teachers_own_fusion_similarity(alpha, k, eta):
    image, text = _features()
    n = len(image)
    train = PairedFeatures(torch.tensor(image, dtype=torch.float32), torch.tensor(text, dtype=torch.float32))
    teacher = FusionTeacher(np.zeros((n, 4)), np.zeros((n, 4)), alpha, k)  # outputs unused: all zero
    want = _fusion_reference(image, text, alpha, k, eta)

    soft = build("strategy", "sakdh", eta=eta, mode="soft").distill(teacher, train)
    assert soft.info["fusion"] == "teacher"
    want_soft = (np.clip(want, -1, 1) + 1) / 2
    np.fill_diagonal(want_soft, 1.0)
    np.testing.assert_allclose(soft.similarity.numpy(), want_soft, atol=1e-5)

    sup = build("strategy", "sakdh", eta=eta, similar_fraction=0.25).distill(teacher, train)
    assert sup.info["fusion"] == "teacher"
    off = np.clip(want, -1, 1)[~np.eye(n, dtype=bool)]
    m = round(0.25 * n * (n - 1))
    threshold = np.sort(off)[::-1][m - 1]
    assert sup.info["threshold"] == pytest.approx(threshold, abs=1e-5)
    s = sup.similarity
    assert torch.equal(s, s.T) and torch.all(torch.diagonal(s) == 1)
    near = np.abs(np.clip(want, -1, 1) - threshold) < 1e-5
    want_bin = np.clip(want, -1, 1) >= threshold
    np.fill_diagonal(want_bin, True)
    assert np.all((s.numpy() == want_bin) | near)


def test_sakdh_teacher_fusion_blocks_on_demand_match_the_dense_matrix(monkeypatch):
    image, text = _features(n=30, seed=7)
    train = PairedFeatures(torch.tensor(image, dtype=torch.float32), torch.tensor(text, dtype=torch.float32))
    teacher = FusionTeacher(np.zeros((30, 4)), np.zeros((30, 4)))
    for mode in ("soft", "binary"):
        dense = build("strategy", "sakdh", mode=mode, similar_fraction=0.1).distill(teacher, train)
        assert dense.kept_dense is not None
        with monkeypatch.context() as patch:
            patch.setattr(interfaces, "DENSE_CACHE_BYTES", 0)
            patch.setattr(interfaces, "CHUNK_ENTRIES", 4 * 30)  # 4 rows a chunk
            lazy = build("strategy", "sakdh", mode=mode, similar_fraction=0.1).distill(teacher, train)
            assert lazy.kept_dense is None
            rows, cols = torch.tensor([3, 0, 29, 3]), torch.tensor([5, 3, 17])
            got_rows, got_block = lazy.block(rows), lazy.block(rows, cols)
        if mode == "soft":
            torch.testing.assert_close(got_rows, dense.similarity[rows], rtol=0, atol=1e-6)
            torch.testing.assert_close(got_block, dense.similarity[rows][:, cols], rtol=0, atol=1e-6)
        else:
            assert lazy.info["threshold"] == pytest.approx(dense.info["threshold"], abs=1e-6)
            s_r = dense.operator.reconstructed_dense()
            near = (s_r - dense.info["threshold"]).abs() < 1e-5
            assert torch.all((got_rows == dense.similarity[rows]) | near[rows])


def test_sakdh_cache_is_bounded_by_the_data(monkeypatch):
    image, text = _features(n=30, seed=7)  # 30 x 12 float32 features: 1,440 bytes, S: 3,600
    train = PairedFeatures(torch.tensor(image, dtype=torch.float32), torch.tensor(text, dtype=torch.float32))
    teacher = FusionTeacher(np.zeros((30, 4)), np.zeros((30, 4)))
    kept = build("strategy", "sakdh", similar_fraction=0.1).distill(teacher, train)
    assert kept.kept_dense is not None  # under the 256 MiB floor
    monkeypatch.setattr(interfaces, "DENSE_FLOOR_BYTES", 0)  # now S takes more than the features
    monkeypatch.setattr(interfaces, "CHUNK_ENTRIES", 4 * 30)  # the threshold from 4-row chunks on demand
    bounded = build("strategy", "sakdh", similar_fraction=0.1).distill(teacher, train)
    assert bounded.kept_dense is None
    assert bounded.info["threshold"] == pytest.approx(kept.info["threshold"], abs=1e-6)
    on_demand = bounded.block(torch.arange(30))
    near = (kept.operator.reconstructed_dense() - kept.info["threshold"]).abs() < 1e-5
    assert torch.all((on_demand == kept.kept_dense) | near)
    assert bounded.mean() == pytest.approx(kept.mean(), abs=2 / 900)


def test_sakdh_fusion_choice():
    image, text = _features()
    n = len(image)
    train = PairedFeatures(torch.tensor(image, dtype=torch.float32), torch.tensor(text, dtype=torch.float32))
    rng = np.random.default_rng(0)
    outputs = rng.standard_normal((n, 6)), rng.standard_normal((n, 6))
    own, plain = FusionTeacher(*outputs), FixedTeacher(*outputs)
    assert build("strategy", "sakdh").distill(plain, train).info["fusion"] == "outputs"
    from_outputs = build("strategy", "sakdh", fusion="outputs", mode="soft").distill(own, train)
    assert from_outputs.info["fusion"] == "outputs"
    assert torch.equal(from_outputs.similarity, build("strategy", "sakdh", mode="soft").distill(plain, train).similarity)
    assert build("strategy", "sakdh", fusion="teacher").distill(own, train).info["fusion"] == "teacher"
    with pytest.raises(ValueError, match="fusion=teacher needs a teacher"):
        build("strategy", "sakdh", fusion="teacher").distill(plain, train)


def test_sakdh_with_the_dsah_teacher_reads_its_fusion_and_agrees_with_labels():
    data = load_tiny()
    train = paired(data, "train", labels=True)
    teacher = build("teacher", "dsah")  # its fusion similarity reads the features only: no fit needed
    sup = build("strategy", "sakdh", similar_fraction=0.2).distill(teacher, train.without_labels())
    assert sup.info["fusion"] == "teacher"
    s = sup.similarity
    n = s.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    truth = (train.labels @ train.labels.T > 0)[off]
    precision = float(truth[s.bool()[off]].float().mean())
    assert precision > 2 * float(truth.float().mean()), precision


def test_teacher_fusion_above_the_dense_cache_keeps_no_normalised_copy(monkeypatch):
    """Above the dense-cache size DSAH's fusion keeps references to the features and their row norms
    (NormalizedRows), and its blocks, factors and the sakdh hand-over agree with the normalised copies."""
    image, text = _features(n=30, seed=9)
    image_t, text_t = torch.tensor(image, dtype=torch.float32), torch.tensor(text, dtype=torch.float32)
    small = FusionSimilarity(image_t, text_t, 0.9, 1.5)
    assert isinstance(small.f_i, torch.Tensor)
    train = PairedFeatures(image_t, text_t)
    teacher = FusionTeacher(np.zeros((30, 4)), np.zeros((30, 4)))
    dense = build("strategy", "sakdh", mode="soft").distill(teacher, train)
    with monkeypatch.context() as patch:
        patch.setattr(interfaces, "DENSE_CACHE_BYTES", 0)
        big = FusionSimilarity(image_t, text_t, 0.9, 1.5)
        assert isinstance(big.f_i, NormalizedRows) and big.f_i.x is image_t and big.f_t.x is text_t
        rows, cols = torch.tensor([3, 0, 29, 3]), torch.tensor([5, 3, 17])
        for got, want in ((big.block(rows), small.block(rows)), (big.block(rows, cols), small.block(rows, cols)),
                          (big.block(rows, rows), small.block(rows, rows))):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        parts, middle = big.factors()
        torch.testing.assert_close(sakdh_gram(parts), sakdh_gram(small.factors()[0]), rtol=1e-12, atol=1e-9)
        lazy = build("strategy", "sakdh", mode="soft").distill(teacher, train)
        assert isinstance(lazy.operator.parts[0], NormalizedRows)
        torch.testing.assert_close(lazy.block(rows), dense.similarity[rows], rtol=0, atol=1e-6)
        torch.testing.assert_close(lazy.block(rows, cols), dense.similarity[rows][:, cols], rtol=0, atol=1e-6)


@pytest.mark.parametrize("n, seed", [(40, 0), (301, 1), (1200, 2)])
def test_dense_threshold_is_the_kthvalue_of_the_flattened_matrix(n, seed, monkeypatch):
    from cmhbench_plugins.strategies.sakdh import ReconstructedSimilarity

    monkeypatch.setattr(interfaces, "CHUNK_ENTRIES", 7 * n)  # 7 rows per chunk of the selection
    g = torch.Generator().manual_seed(seed)
    u = torch.randint(-2, 3, (n, 6), generator=g).float() / 3  # ties and exact zeros in S_R
    uk = u @ torch.randn(6, 6, generator=g)
    rec = ReconstructedSimilarity(uk, u)
    flat = rec.reconstructed_dense()
    flat.fill_diagonal_(float("-inf"))
    off = n * (n - 1)
    for k in (1, 2, n, off // 3, off // 2, off - 1, off):
        want = torch.kthvalue(flat.flatten(), n * n - k + 1).values.item()  # the expression it replaced
        assert rec.kth_largest_off_diagonal(k) == want, k
    s_r = (uk @ u.T).clamp_(-1.0, 1.0)
    assert torch.equal(rec.reconstructed_dense(), 0.5 * (s_r + s_r.T))


def test_blocks_are_finished_in_place_with_the_out_of_place_values():
    from cmhbench.training import fill_block_diagonal_
    from cmhbench_plugins.strategies.codes import CodeAffinity, hamming_affinity
    from cmhbench_plugins.strategies.sakdh import ReconstructedSimilarity

    g = torch.Generator().manual_seed(8)
    u = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=1)
    rec = ReconstructedSimilarity(u @ (torch.eye(8) + 0.5 * torch.randn(8, 8, generator=g)), u)
    rows, cols = torch.arange(10, 30), torch.arange(5, 45, 3)
    for c in (None, cols):
        s_r = rec.reconstructed_block(rows, c)
        assert torch.equal(rec.block(rows, c), fill_block_diagonal_((s_r + 1.0) / 2.0, rows, c))
        threshold = float(s_r.median())
        assert torch.equal(rec.with_threshold(threshold).block(rows, c),
                           fill_block_diagonal_((s_r >= threshold).float(), rows, c))
    codes = [torch.randn(50, 16, generator=g).sign() for _ in range(2)]
    a = hamming_affinity([x[rows] for x in codes], codes)
    assert torch.equal(CodeAffinity(codes, 0.6).block(rows), fill_block_diagonal_((a >= 0.6).float(), rows))

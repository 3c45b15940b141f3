"""The ``features``, ``cvh`` and ``jdsh`` teachers and the ``codes`` strategy: formulas and learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cmhbench.interfaces import Modality, PairedFeatures
from method_helpers import build, cross_modal_map, paired
from plugins_for_tests import load_tiny


def _random_pairs(n=200, dx=7, dy=5, seed=0):
    """Correlated random views: a shared 3-d latent plus noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g)
    x = z @ torch.randn(3, dx, generator=g) + 0.5 * torch.randn(n, dx, generator=g) + 2.0
    y = z @ torch.randn(3, dy, generator=g) + 0.5 * torch.randn(n, dy, generator=g) - 1.0
    return PairedFeatures(x.float(), y.float())


# --- features -------------------------------------------------------------------------------


def test_features_pca_is_the_principal_subspace_of_normalised_features():
    train = _random_pairs()
    model = build("teacher", "features")
    model.fit(train, 4)
    x = train.image - train.image.mean(0, keepdim=True)
    z = (x / x.norm(dim=1, keepdim=True)).double().numpy()
    _, _, vt = np.linalg.svd(z, full_matrices=False)  # second moment of the normalised rows
    p = model.projection[Modality.IMAGE].double().numpy()
    # Same directions up to sign, largest variance first.
    np.testing.assert_allclose(np.abs(p.T @ vt[:4].T), np.eye(4), atol=1e-5)
    out = model.encode(train.image, Modality.IMAGE)
    var = out.var(0)
    assert out.shape == (200, 4) and torch.all(var[:-1] >= var[1:])


def test_features_pads_with_random_directions_and_random_mode_is_a_rotation():
    train = _random_pairs()
    model = build("teacher", "features")
    model.fit(train, 8)  # text has 5 dims: 5 principal + 3 random directions
    p = model.projection[Modality.TEXT]
    assert p.shape == (5, 8) and torch.allclose(p.norm(dim=0), torch.ones(8), atol=1e-5)
    rand = build("teacher", "features", projection="random")
    rand.fit(train, 4)
    q = rand.projection[Modality.IMAGE]
    torch.testing.assert_close(q.T @ q, torch.eye(4), atol=1e-5, rtol=0)
    again = build("teacher", "features", projection="random")
    again.fit(train, 4)
    assert torch.equal(q, again.projection[Modality.IMAGE])  # seeded


def _features_map(data):
    model = build("teacher", "features")
    model.fit(paired(data, "train"), 16)
    return cross_modal_map(model, data)


def test_features_floor_is_near_chance_cross_modally():
    i2t, t2i = _features_map(load_tiny())
    # Unaligned per-modality projections: chance on this 4-class data is about 0.25.
    assert i2t < 0.4 and t2i < 0.4, (i2t, t2i)


# --- cvh ------------------------------------------------------------------------------------


def test_cvh_solves_the_cca_eigenproblem():
    train = _random_pairs()
    model = build("teacher", "cvh", reg=0.0)
    model.fit(train, 8)  # min(7, 5) = 5 canonical pairs, 3 unused bits
    x = (train.image - train.image.mean(0)).double()
    y = (train.text - train.text.mean(0)).double()
    n = x.shape[0]
    cxx, cyy, cxy = x.T @ x / n, y.T @ y / n, x.T @ y / n
    ax = model.projection[Modality.IMAGE].double()[:, :5]
    ay = model.projection[Modality.TEXT].double()[:, :5]
    eye = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(ax.T @ cxx @ ax, eye, atol=1e-4, rtol=0)
    torch.testing.assert_close(ay.T @ cyy @ ay, eye, atol=1e-4, rtol=0)
    rho = model.correlations.double()
    torch.testing.assert_close(ax.T @ cxy @ ay, torch.diag(rho), atol=1e-4, rtol=0)
    # Canonical correlations = singular values of Qx^T Qy (orthonormal bases of the centred views).
    qx, qy = np.linalg.qr(x.numpy())[0], np.linalg.qr(y.numpy())[0]
    np.testing.assert_allclose(rho.numpy(), np.linalg.svd(qx.T @ qy, compute_uv=False), atol=1e-5)
    assert torch.all(rho[:-1] >= rho[1:])
    # Bits beyond the canonical pairs are exactly zero in both views (constant after sign).
    for m in Modality:
        assert torch.all(model.encode(train.get(m), m)[:, 5:] == 0)


def test_cvh_beats_the_features_floor():
    data = load_tiny()
    model = build("teacher", "cvh")
    model.fit(paired(data, "train"), 16)
    i2t, t2i = cross_modal_map(model, data)
    f_i2t, f_t2i = _features_map(data)
    assert i2t > 0.55 and t2i > 0.55, (i2t, t2i)
    assert i2t > f_i2t + 0.25 and t2i > f_t2i + 0.25, (i2t, t2i, f_i2t, f_t2i)


# --- jdsh -----------------------------------------------------------------------------------


def _cos(x):
    x = x / x.norm(dim=1, keepdim=True)
    return x @ x.T


def test_jdsh_joint_similarity_and_dsdw_formulas():
    model = build("teacher", "jdsh", alpha=0.5, beta=0.1, lamb=0.4, mu=1.5)
    image = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    text = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    s_i, s_t = 2 * _cos(image) - 1, 2 * _cos(text) - 1
    rows = lambda a: a / a.norm(dim=1, keepdim=True)  # noqa: E731
    high = rows(s_i) @ rows(s_t).T
    want = 0.5 * s_i + 0.1 * s_t + 0.4 * (high + high.T) / 2
    torch.testing.assert_close(model.joint_similarity(image, text), want)
    # DSDW with the MIRFlickr thresholds: left = -0.49 - 2 * 0.019 = -0.528, right = -0.49 + 4 * 0.088 = -0.138.
    s = torch.tensor([[-0.9, -0.3], [0.5, 1.0]])
    expect = torch.tensor([
        [(1 + 0.1 * math.exp(-(-0.9 + 0.52))) * -0.9, -0.3],
        [(1 + 0.2 * math.exp(0.5 - 0.68)) * 0.5, (1 + 0.2 * math.exp(1.0 - 0.68)) * 1.0],
    ])
    torch.testing.assert_close(model.dsdw(s), 1.5 * expect)


def test_jdsh_loss_formula():
    model = build("teacher", "jdsh", intra=0.3)
    b_i = torch.tensor([[1.0, -1.0], [0.5, 0.5], [-1.0, 0.2]])
    b_t = torch.tensor([[1.0, 1.0], [0.3, -0.5], [-1.0, -0.2]])
    s = torch.tensor([[1.0, 0.2, -0.5], [0.2, 1.0, 0.1], [-0.5, 0.1, 1.0]])
    ni = b_i / b_i.norm(dim=1, keepdim=True)
    nt = b_t / b_t.norm(dim=1, keepdim=True)
    mse = lambda a: ((a - s) ** 2).mean()  # noqa: E731
    want = 0.3 * mse(ni @ ni.T) + mse(ni @ nt.T) + mse(nt @ ni.T) - (ni * nt).sum(1).mean() + 0.3 * mse(nt @ nt.T)
    torch.testing.assert_close(model.loss(b_i, b_t, s), want)


def test_jdsh_teacher_learns_and_beats_the_features_floor():
    data = load_tiny()
    torch.manual_seed(0)
    model = build("teacher", "jdsh", epochs=20, hidden=64)
    model.fit(paired(data, "train"), 16)
    i2t, t2i = cross_modal_map(model, data)
    f_i2t, f_t2i = _features_map(data)
    assert i2t > 0.8 and t2i > 0.8, (i2t, t2i)
    assert i2t > f_i2t + 0.4 and t2i > f_t2i + 0.4, (i2t, t2i, f_i2t, f_t2i)


# --- codes ----------------------------------------------------------------------------------


class _FixedTeacher:
    """Encodes row i of the training data as a fixed output row (for hand-made codes)."""

    def __init__(self, image_out, text_out):
        self.out = {Modality.IMAGE: image_out, Modality.TEXT: text_out}

    def encode(self, x, modality):
        return self.out[Modality(modality)][: x.shape[0]]


def test_codes_strategy_is_the_mean_hamming_affinity():
    image_out = torch.tensor([[0.3, -2.0, 0.0, 1.0], [0.1, -0.1, -0.5, 2.0], [-1.0, 1.0, 1.0, -1.0]])
    text_out = torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    train = PairedFeatures(torch.zeros(3, 2), torch.zeros(3, 2))
    teacher = _FixedTeacher(image_out, text_out)
    # Image codes (sign(0) = +1): [+ - + +], [+ - - +], [- + + -]; text: [+ + + +], [- + + +], [+ + + +].
    agree_i = torch.tensor([[4, 3, 1], [3, 4, 0], [1, 0, 4]]) / 4
    agree_t = torch.tensor([[4, 3, 4], [3, 4, 3], [4, 3, 4]]) / 4
    want = (agree_i + agree_t) / 2
    s = build("strategy", "codes").distill(teacher, train).similarity
    torch.testing.assert_close(s, want.float())
    b = build("strategy", "codes", mode="binary", threshold=0.75).distill(teacher, train).similarity
    assert torch.equal(b, (want >= 0.75).float())
    with pytest.raises(ValueError):
        build("strategy", "codes").distill(None, train)


@pytest.mark.parametrize("mode", ["graded", "binary"])
def test_codes_strategy_on_a_teacher_is_a_valid_similarity(mode):
    data = load_tiny()
    train = paired(data, "train")
    teacher = build("teacher", "cvh")
    teacher.fit(train, 16)
    sup = build("strategy", "codes", mode=mode).distill(teacher, train)
    s = sup.similarity
    n = len(train)
    assert s.shape == (n, n) and torch.equal(s, s.T) and torch.all(torch.diagonal(s) == 1)
    assert s.min() >= 0 and s.max() <= 1
    with torch.no_grad():
        codes = [torch.where(teacher.encode(train.get(m), m) >= 0, 1.0, -1.0) for m in Modality]
    graded = sum((1 + c @ c.T / 16) / 2 for c in codes) / 2
    want = graded if mode == "graded" else (graded >= 0.75).float()
    torch.testing.assert_close(s, want.float())
    # Same-class pairs (the teacher's codes carry class information) are more similar on average.
    labels = torch.from_numpy(data.labels[data.splits.train].astype(np.float32))
    same = (labels @ labels.T) > 0
    assert s[same].mean() > s[~same].mean() + 0.05


def test_cvh_toolbox_solver_solves_the_toolbox_eigenproblem():
    """``solver=toolbox``: Cxy Cyy Cxy^T a = lam Cxx a on uncentred scatter matrices, text side derived."""
    train = _random_pairs()
    model = build("teacher", "cvh", solver="toolbox", toolbox_lambda=1e-4)
    model.fit(train, 4)
    x, y = train.image.double(), train.text.double()
    cxx = x.T @ x + 1e-4 * torch.eye(x.shape[1], dtype=torch.float64)
    cyy = y.T @ y + 1e-4 * torch.eye(y.shape[1], dtype=torch.float64)
    cxy = x.T @ y
    ax = model.projection[Modality.IMAGE].double()
    lam = model.correlations.double()
    lhs = cxy @ cyy @ cxy.T @ ax
    torch.testing.assert_close(lhs, cxx @ ax * lam, atol=1e-3 * float(lhs.abs().max()), rtol=0)
    assert torch.all(lam[:-1] >= lam[1:]) and torch.all(lam > 0)
    ay = model.projection[Modality.TEXT].double()
    torch.testing.assert_close(ay, torch.linalg.solve(cyy, cxy.T @ ax) / lam.sqrt(), atol=1e-4, rtol=1e-3)
    # no centring: encode is the plain projection
    torch.testing.assert_close(model.encode(train.image, Modality.IMAGE).double(), x @ ax, atol=1e-3, rtol=1e-4)


def test_cvh_moments_are_summed_by_row_blocks(monkeypatch):
    """The centred second moments CVH solves with come from row blocks (no centred or float64 copy of a
    view): one block gives the whole-matrix products exactly, many blocks the same to float64 rounding."""
    from cmhbench import interfaces
    from cmhbench_plugins.teachers.cvh import centred_moments

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(500, 12, generator=g), torch.rand(500, 5, generator=g)
    mx, my = x.mean(0, keepdim=True), y.mean(0, keepdim=True)
    zx, zy = (x - mx).double(), (y - my).double()
    want = (zx.T @ zx, zy.T @ zy, zx.T @ zy)
    assert all(torch.equal(a, b) for a, b in zip(centred_moments(x, y, mx, my), want))
    monkeypatch.setattr(interfaces, "CHUNK_ENTRIES", 8 * 12 * 7)  # 7-row blocks
    for a, b in zip(centred_moments(x, y, mx, my), want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

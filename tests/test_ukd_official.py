"""The ``ukd`` strategy and the ``ssah`` student's UKD mode against UKD's official code.

huhengtong/UKD_CVPR2020 at HEAD a96a9f7: ``teacher_model/calcu_sim.py``, ``teacher_model/teacher_train.py``,
``student_model/{setting,student_train,ops,tnet,vgg19}.py``. The TensorFlow 1 code cannot run here; the
official lines are written out below in numpy/torch and the plugins are checked against them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from cmhbench.config import default_config
from cmhbench.interfaces import Modality, PairedFeatures, Supervision
from cmhbench.plugins import get_registry
from cmhbench.neighbours import knn_mask
from method_helpers import build, paired
from plugins_for_tests import load_tiny

UKD_DEFAULTS = {
    "mode": "knn",                   # calcu_sim.py:63-89, setting.py:70-72 (0/1 neighbour lists)
    "k": 0,                          # K as a share (k_fraction), see below
    "k_fraction": 10000 / 18015,     # calcu_sim.py:64-65 (train_size = 18015, K = 10000)
    "metric": "euclidean",           # calcu_sim.py:71-72 (pdist 'euclidean')
    "symmetrize": False,             # setting.py:70-72 (row i = i's lists), student_train.py:195,234 (Sim[ind].T)
    "teacher_bits": 128,             # teacher_train.py:14, calcu_sim.py:17 (OUTPUT_DIM = 128)
}

SSAH_UKD_DEFAULTS = {
    "gamma": 1.0,                    # setting.py:81, student_train.py:89,99
    "beta": 1.0,                     # setting.py:82, student_train.py:89,99
    "paired_lr": 1e-4,               # student_train.py:128-129
    "paired_epochs": 30,             # setting.py:75
    "paired_rounds": 2,              # student_train.py:131-133
    "paired_batch": 256,             # setting.py:25
    "paired_pairwise": "squared",    # student_train.py:85,95; ops.py:55-56
    "paired_dropout": 0.5,           # student_train.py:196,216 (keep_prob 0.5); vgg19.py:84-85
    "paired_text_hidden": 4096,      # tnet.py:9-10,20
    "paired_standardize": False,     # student_train.py:190,230 (pixels / tag vectors as read)
    "balance": 0.0,                  # student_train.py:89,99 (no balance term)
    "without_labels": "ukd",
}


def test_ukd_defaults_are_the_official_values():
    spec = get_registry().method("strategy", "ukd")
    got = {f.name: f.default for f in dataclasses.fields(spec.config)}
    assert got == UKD_DEFAULTS
    field = {f.name: f for f in dataclasses.fields(spec.config)}["teacher_bits"]
    assert field.metadata["help"] == "code length the teacher is trained at (0: the student's)"


def test_ssah_ukd_mode_defaults_are_the_official_values():
    spec = get_registry().method("student", "ssah")
    got = {f.name: f.default for f in dataclasses.fields(spec.config)}
    assert {k: got[k] for k in SSAH_UKD_DEFAULTS} == SSAH_UKD_DEFAULTS


@pytest.mark.parametrize("dataset, n, k", [
    ("mirflickr25k", 18015, 10000),  # calcu_sim.py:64-65 (--protocol ukd:train=18015)
    ("mirflickr25k", 15000, 8326),   # the ukd protocol's students: setting.py:45 (expected size of the restricted lists)
    ("nus-wide-tc10", 15000, 8326),  # no official K: the same share
    ("wiki", 2173, 1206),            # not in the paper: the same label-free share
    ("synthetic", 1000, 555),
])
def test_k_per_dataset(dataset, n, k):
    from cmhbench_plugins.strategies.ukd import UKDConfig, neighbour_count

    spec = get_registry().method("strategy", "ukd")
    values = default_config(spec, dataset)
    assert values["k_fraction"] == pytest.approx(10000 / 18015) and values["k"] == 0
    assert neighbour_count(UKDConfig(**values), n) == k
    assert set(spec.dataset_defaults) == {"mirflickr25k", "nus-wide-tc10"}  # the paper's datasets
    assert neighbour_count(UKDConfig(k=10000), 15000) == 10000  # an absolute count when asked


def test_teacher_bits_field_sets_the_teachers_length():
    from cmhbench.runner import Pipeline, RunRequest, teacher_code_length

    registry = get_registry()
    teacher, strategy, student = (registry.method(r, n) for r, n in (("teacher", "ugach"), ("strategy", "ukd"), ("student", "ssah")))
    config = strategy.config()
    pipeline = Pipeline(teacher, strategy, student, {"teacher": None, "strategy": config, "student": None})
    request = RunRequest(teacher="ugach", strategy="ukd", student="ssah")
    assert teacher_code_length(request, pipeline, 32) == 128
    zero = Pipeline(teacher, strategy, student, {"teacher": None, "strategy": strategy.config(teacher_bits=0), "student": None})
    assert teacher_code_length(request, zero, 32) == 32


# --- the similarity: per row, union of the two spaces (setting.py:70-72) ---


def official_sim(img_out: np.ndarray, txt_out: np.ndarray, k: int) -> np.ndarray:
    """calcu_sim.py:71-85 then setting.py:64-72 (0.999 -> 1)."""
    n = img_out.shape[0]
    d_img = ((img_out[:, None] - img_out[None]) ** 2).sum(-1)
    d_txt = ((txt_out[:, None] - txt_out[None]) ** 2).sum(-1)
    sim = np.zeros((n, n))
    for i in range(n):
        ind = np.concatenate((np.argsort(d_img[i], kind="stable")[:k], np.argsort(d_txt[i], kind="stable")[:k]))
        sim[i][ind] = 1.0
    return sim


class _Teacher:
    def __init__(self, image, text):
        self.out = {Modality.IMAGE: image, Modality.TEXT: text}

    def encode(self, x, modality):
        return self.out[Modality(modality)]


def test_similarity_is_the_official_per_row_union():
    g = torch.Generator().manual_seed(0)
    image, text = torch.rand(30, 8, generator=g), torch.rand(30, 8, generator=g)
    train = PairedFeatures(torch.zeros(30, 3), torch.zeros(30, 2))
    sup = build("strategy", "ukd", k=6).distill(_Teacher(image, text), train)
    want = torch.from_numpy(official_sim(image.double().numpy(), text.double().numpy(), 6)).float()
    assert torch.equal(sup.dense(), want)
    assert not torch.equal(want, want.T)  # not symmetrised
    assert sup.info["k"] == 6 and sup.info["mode"] == "knn"
    on_demand = Supervision(sup.operator, None, cache_bytes=0)
    rows = torch.tensor([3, 7, 7, 29])
    assert torch.equal(on_demand.rows()[rows], want[rows])
    assert torch.equal(on_demand.columns(rows), want.T[rows])
    sym = build("strategy", "ukd", k=6, symmetrize=True).distill(_Teacher(image, text), train).dense()
    union = knn_mask(image, 6) | knn_mask(text, 6)
    assert torch.equal(sym.bool(), union | union.T)


# --- the student's loss and step (student_train.py:84-99, 179-248; ops.py:55-56) ---


def official_loss(sim: np.ndarray, ind: np.ndarray, other: np.ndarray, hsh: np.ndarray, b_batch: np.ndarray) -> float:
    """``loss_i`` as the official lines compute it, with ``Sim`` holding 0.999 (setting.py:72)."""
    theta = 1.0 / 2 * other @ hsh.T                                   # student_train.py:84 (n, batch)
    s = (0.999 * sim)[ind].T                                          # :195
    mse = lambda a, b: np.mean(np.sum((a - b) ** 2) / 2)  # noqa: E731  ops.py:55-56 (l2_loss = sum / 2)
    return 1 * mse(s * theta, np.log(1.0 + np.exp(theta))) + 1 * mse(b_batch, hsh)  # :85-89


def test_squared_pairwise_loss_is_the_official_one():
    from cmhbench_plugins.students.ssah import pairwise_loss

    rng = np.random.default_rng(1)
    n, m, bits = 12, 5, 8
    sim = (rng.random((n, n)) < 0.4).astype(np.float64)
    ind = rng.permutation(n)[:m]
    other = rng.standard_normal((n, bits))
    hsh = np.tanh(rng.standard_normal((m, bits)))
    theta = torch.from_numpy(0.5 * hsh @ other.T)
    ours = pairwise_loss(torch.from_numpy(sim[ind]), theta, "squared") + 0.5 * ((torch.sign(torch.from_numpy(hsh)) - torch.from_numpy(hsh)) ** 2).sum()
    assert float(ours) == pytest.approx(official_loss(sim, ind, other, hsh, np.sign(hsh)), rel=1e-12)


def test_one_step_is_tf_adam_on_the_official_gradient():
    """Dropout off: ``_ukd_step`` moves the image hash layer by TF 1's first Adam step on the written-out loss."""
    from cmhbench_plugins.students.ssah import UKDImageNet

    rng = np.random.default_rng(2)
    n, d, bits = 10, 6, 4
    sim = (rng.random((n, n)) < 0.5).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32))
    other = torch.from_numpy(rng.standard_normal((n, bits)).astype(np.float32))
    student = build("student", "ssah", paired_dropout=0.0)
    torch.manual_seed(0)
    net = UKDImageNet(d, bits, 0.0)
    w0, b0 = net.hash.weight.detach().clone(), net.hash.bias.detach().clone()
    idx = torch.tensor([1, 4, 5, 8])
    # the official gradient: autograd of the written-out loss_i at the initial weights
    w, b = w0.clone().double().requires_grad_(), b0.clone().double().requires_grad_()
    h = torch.tanh(x[idx].double() @ w.T + b)
    theta = 0.5 * other.double() @ h.T
    s = (0.999 * torch.from_numpy(sim).double())[idx].T
    loss = 0.5 * ((s * theta - torch.log1p(torch.exp(theta))) ** 2).sum() + 0.5 * ((torch.sign(h.detach()) - h) ** 2).sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    own = torch.zeros(n, bits)
    student._ukd_step(net, x, idx, torch.from_numpy(sim), other, own, {}, torch.Generator().manual_seed(0))
    lr, b1, b2, eps = 1e-4, 0.9, 0.999, 1e-8
    lr_t = lr * math.sqrt(1 - b2) / (1 - b1)
    for p0, g, p in ((w0, gw, net.hash.weight), (b0, gb, net.hash.bias)):
        m, v = (1 - b1) * g, (1 - b2) * g * g
        want = p0.double() - lr_t * m / (v.sqrt() + eps)
        torch.testing.assert_close(p.detach().double(), want, rtol=0, atol=1e-9)
    torch.testing.assert_close(own[idx], torch.tanh(x[idx] @ w0.T + b0))  # F[ind] = Hsh_I (student_train.py:204)


def test_adam_step_count_is_shared_by_both_nets():
    """One TF optimiser for ImgNet and TxtNet (student_train.py:105-111): its beta powers count every step."""
    from cmhbench_plugins.students.ssah import tf_adam_step

    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    state: dict = {}
    for _ in range(3):
        a.grad = torch.ones(1)
        tf_adam_step([a], state, 0.1)
        a.grad = None
    b.grad = torch.full((1,), 2.0)
    tf_adam_step([b], state, 0.1)
    t = 4  # b's first step is the optimiser's fourth
    lr_t = 0.1 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)
    want = -lr_t * (0.1 * 2.0) / (math.sqrt(0.001 * 4.0) + 1e-8)
    assert float(b.detach()) == pytest.approx(want, rel=1e-6) and state["t"] == 4


def test_alternation_order_is_imgnet_then_txtnet_per_round():
    """student_train.py:126-133: per epoch, rounds of (ImgNet pass, TxtNet pass); a pass is n // batch steps."""
    from cmhbench_plugins.students.ssah import SSAH, UKDImageNet, UKDTextNet

    data = load_tiny()
    train = paired(data, "train", labels=True)  # n = 160
    sup = build("strategy", "labels").distill(None, train)
    student = build("student", "ssah", paired_epochs=2, paired_rounds=2, paired_batch=32, paired_text_hidden=8)
    calls = []
    real = SSAH._ukd_step

    def record(self, net, x, idx, *rest):
        calls.append(("img" if isinstance(net, UKDImageNet.cls()) else "txt", len(idx)))
        return real(self, net, x, idx, *rest)

    SSAH._ukd_step = record
    try:
        student.fit(train.without_labels(), Supervision(sup.similarity), 8)
    finally:
        SSAH._ukd_step = real
    one_round = [("img", 32)] * 5 + [("txt", 32)] * 5
    assert calls == one_round * 4
    assert isinstance(student.nets[Modality.TEXT], UKDTextNet.cls())


# --- the networks (vgg19.py:84-88, tnet.py) ---


def test_image_net_is_dropout_and_the_hash_layer_only():
    from cmhbench_plugins.students.ssah import UKDImageNet

    torch.manual_seed(0)
    net = UKDImageNet(4096, 64, 0.5)
    assert [type(m).__name__ for m in net.modules()] == ["UKDImageNet", "Linear"]
    assert net.hash.weight.shape == (64, 4096)
    for p in (net.hash.weight, net.hash.bias):  # truncated normal, std 0.001 (vgg19.py:129-133)
        assert p.abs().max() <= 0.002
    assert 0.0007 < float(net.hash.weight.detach().std()) < 0.0010  # std of N(0, 1) truncated at 2: 0.88
    x = torch.rand(3, 4096)
    net.eval()
    torch.testing.assert_close(net(x), torch.tanh(net.hash(x)))
    net.train()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(net(x, g1), net(x, g2))  # masks from the run's generator
    assert not torch.allclose(net(x, g1), net(x, g1))


def tf1_resize_row(v: np.ndarray, out: int) -> np.ndarray:
    """TF 1 ``resize_bilinear(align_corners=False)`` of one row (legacy scaler: in = out_x * in / out)."""
    scale = len(v) / out
    res = np.empty(out)
    for x in range(out):
        src = x * scale
        lo = int(np.floor(src))
        hi = min(lo + 1, len(v) - 1)
        res[x] = v[lo] + (v[hi] - v[lo]) * (src - lo)
    return res


def test_text_net_is_tnet_whole():
    from cmhbench_plugins.students.ssah import UKDTextNet

    torch.manual_seed(0)
    d, bits = 120, 16
    net = UKDTextNet(d, 4096, bits)
    assert net.fc1.weight.shape == (4096, 6 * d) and net.hash.weight.shape == (bits, 4096)
    assert net.scales.shape == (5,)
    for p in (net.fc1.weight, net.hash.weight, net.fc1.bias):
        assert abs(float(p.detach().std()) - 0.01) < 0.001  # random_normal * 0.01 (tnet.py:9-10,20-21)
    with torch.no_grad():
        net.scales.copy_(torch.tensor([0.5, -0.2, 1.5, 2.0, 1.0]))
    x = torch.rand(2, d, dtype=torch.float32)
    got = net.multi_scale(x)
    assert got.shape == (2, d, 6)
    xs = x.double().numpy()
    scale = dict(zip((50, 30, 15, 10, 5), net.scales.detach().double().numpy()))
    want_channels = [xs]
    for w in (5, 10, 15, 30, 50):  # concat order: input, interp_block10 .. interp_block1 (tnet.py:50-55)
        cells = d // w
        pooled = xs[:, : cells * w].reshape(2, cells, w).mean(2)
        act = np.maximum(pooled * scale[w], 0.0)
        want_channels.append(np.stack([tf1_resize_row(r, d) for r in act]))
    want = np.stack(want_channels, axis=2)
    np.testing.assert_allclose(got.detach().double().numpy(), want, atol=1e-6)
    # fc1 -> ReLU -> LRN (depth_radius 2, bias 2, alpha 1e-4, beta 0.75, tnet.py:18) -> hash -> tanh
    h = torch.relu(net.fc1(got.flatten(1))).double()
    sq = torch.nn.functional.pad(h * h, (2, 2))
    norm = h / (2.0 + 1e-4 * sum(sq[:, i : i + 4096] for i in range(5))) ** 0.75
    want_out = torch.tanh(norm @ net.hash.weight.double().T + net.hash.bias.double())
    torch.testing.assert_close(net(x).double(), want_out, rtol=0, atol=1e-5)


def test_windows_longer_than_the_text_pool_nothing():
    from cmhbench_plugins.students.ssah import UKDTextNet

    net = UKDTextNet(12, 8, 4)
    with torch.no_grad():
        net.scales.fill_(1.0)
    got = net.multi_scale(torch.rand(3, 12))
    assert torch.equal(got[:, :, 3:], torch.zeros(3, 12, 3))  # windows 15, 30, 50 > 12
    assert got[:, :, 1].abs().sum() > 0 and got[:, :, 2].abs().sum() > 0  # windows 5, 10

"""``dadh`` keeps the official networks, losses and settings (Zjut-MultimediaPlus/DADH 5869b81).

Generator per modality ``d -> h -> h/2 -> h/4`` with BatchNorm after every Linear, then ``Linear(h/4, bits) ->
Tanh`` (``models/gen_model.py:44-74``); discriminators ``DIS(h/4, h/8, bits)`` (``models/dis_model.py:13-43``);
loss weights as ``main.py:19,170-171`` and ``triplet_loss.py:14,30-31,60-61`` compute them; the ``run_nus.sh``
settings on NUS-WIDE.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from cmhbench import interfaces
from cmhbench.config import default_config
from cmhbench.interfaces import Modality, PairedFeatures, Supervision
from cmhbench.plugins import get_registry
from method_helpers import build, cross_modal_map, paired, run_tiny
from plugins_for_tests import load_tiny

# The official settings at 5869b81: config.py, main.py, run_mir.sh (nothing but --flag and --bit).
OFFICIAL = {
    "batch_size": 128,  # config.py:15 batch_size = 128
    "hidden": 8192,  # config.py:17 hidden_dim = 8192
    "epochs": 300,  # config.py:21 max_epoch = 300
    "lr": 5e-5,  # config.py:24 lr = 0.00005 (generator main.py:60, discriminators main.py:63-64)
    "gamma": 1.0,  # config.py:30 gamma = 1
    "mu": 1e-5,  # config.py:32 mu = 0.00001
    "lamb": 1.0,  # config.py:33 lamb = 1
    "margin": 0.4,  # config.py:35 margin = 0.4
    "dropout": 0.0,  # config.py:36 dropout = False
    "triplet_weight": 121.0,  # config.py:29 alpha = 10 -> main.py:170 x triplet_loss.py:60-61 x (:30-31)
    "quant_weight": 1.1,  # config.py:31 beta = 1 -> main.py:19 beta + 0.1
    "gradient_penalty": 10.0,  # main.py:124,152 ... * 10
    "lr_decay": 0.8,  # main.py:213-215 lr * 0.8 when epoch % 100 == 0
    "weight_decay": 5e-4,  # main.py:60 weight_decay=0.0005
    "dis_weight_decay": 1e-4,  # main.py:63-64 weight_decay=0.0001
    "standardize_image": True,  # datasets/data_handler.py:17,26 (images - mean) / std
}
NUS_WIDE = {**OFFICIAL, "lr": 1e-5, "dropout": 0.5}  # run_nus.sh:2 --lr 1e-5 --dropout True (p: gen_model.py:19)


def head_loss_weights(alpha, beta, gamma):
    """HEAD's arithmetic, step by step: main.py:19 beta += 0.1; triplet_loss.py:14 flag = (beta - 0.1) *
    gamma; :30-31 weight and mask each * (flag + 0.1); :60-61 * 10 (alpha == 10); main.py:170 alpha *."""
    beta = beta + 0.1
    flag = (beta - 0.1) * gamma
    return alpha * 10 * (flag + 0.1) * (flag + 0.1), beta


@pytest.mark.parametrize("dataset,expected", [(None, OFFICIAL), ("wiki", OFFICIAL), ("mirflickr25k", OFFICIAL),
                                              ("nus-wide-tc21", NUS_WIDE), ("nus-wide-tc10", NUS_WIDE)])
def test_defaults_are_the_official_settings(dataset, expected):
    got = default_config(get_registry().method("student", "dadh"), dataset)
    assert got == pytest.approx(expected), {k: (got[k], v) for k, v in expected.items() if got.get(k) != v}


def test_loss_weights_as_head_computes_them():
    from cmhbench_plugins.students.dadh import official_loss_weights

    assert head_loss_weights(10, 1, 1) == pytest.approx((121.0, 1.1))  # config.py:29-31
    assert official_loss_weights(10, 1, 1) == pytest.approx(head_loss_weights(10, 1, 1))
    assert official_loss_weights(10, 1, 1) == pytest.approx((OFFICIAL["triplet_weight"], OFFICIAL["quant_weight"]))
    assert official_loss_weights(10, 2, 0.5) == pytest.approx(head_loss_weights(10, 2, 0.5))
    with pytest.raises(ValueError, match="alpha != 10"):
        official_loss_weights(5, 1, 1)  # HEAD drops the NDCG weights then (triplet_loss.py:62-63)


def _default_model(bits=32, image_dim=128, text_dim=10, **overrides):
    model = build("student", "dadh", **overrides)
    torch.manual_seed(0)
    model.build(image_dim, text_dim, bits)
    return model


def test_default_generator_is_the_official_one():
    model = _default_model()  # hidden 8192: constructed, not trained
    for modality, d in ((Modality.IMAGE, 128), (Modality.TEXT, 10)):
        branch = model.branches[modality]
        layers = list(branch.features)
        # gen_model.py:44-65, the same for image and text: Linear -> BatchNorm1d -> ReLU, three times
        assert [type(m) for m in layers] == [torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.ReLU] * 3
        linears = [m for m in layers if isinstance(m, torch.nn.Linear)]
        assert [tuple(m.weight.shape) for m in linears] == [(8192, d), (4096, 8192), (2048, 4096)]
        assert [m.num_features for m in layers if isinstance(m, torch.nn.BatchNorm1d)] == [8192, 4096, 2048]
        assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in layers if isinstance(m, torch.nn.BatchNorm1d))
        # gen_model.py:67-74: Linear(h/4, bits) -> Tanh
        assert [type(m) for m in branch.hash] == [torch.nn.Linear, torch.nn.Tanh]
        assert tuple(branch.hash[0].weight.shape) == (32, 2048)
        # default initialisation (GEN.weight_init is never called): uniform within 1/sqrt(fan_in), biases too
        for lin in (*linears, branch.hash[0]):
            bound = 1 / math.sqrt(lin.weight.shape[1])
            assert lin.weight.abs().max() <= bound and lin.weight.std() < 0.7 * bound
            assert 0 < lin.bias.abs().max() <= bound
        assert not any(isinstance(m, torch.nn.Dropout) for m in branch.modules())


def test_dropout_after_every_generator_relu_when_on():
    model = _default_model(hidden=64, dropout=0.5)  # gen_model.py:14-42
    layers = list(model.branches[Modality.TEXT].features)
    assert [type(m) for m in layers] == [torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.ReLU, torch.nn.Dropout] * 3
    assert all(m.p == 0.5 for m in layers if isinstance(m, torch.nn.Dropout))


def test_discriminators_are_the_official_ones():
    from cmhbench_plugins.students.dadh import discriminators

    torch.manual_seed(0)
    feature, hashed = discriminators(8192, 32)  # DIS(8192 // 4, 8192 // 8, 32), main.py:53
    assert [type(m) for m in feature] == [torch.nn.Linear, torch.nn.ReLU] * 2 + [torch.nn.Linear]
    shapes = [tuple(m.weight.shape) for m in feature if isinstance(m, torch.nn.Linear)]
    assert shapes == [(1024, 2048), (512, 1024), (1, 512)]  # dis_model.py:13-19
    assert [type(m) for m in hashed] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert [tuple(m.weight.shape) for m in hashed if isinstance(m, torch.nn.Linear)] == [(512, 32), (1, 512)]  # :21-25
    for lin in [m for m in (*feature, *hashed) if isinstance(m, torch.nn.Linear)]:
        assert not lin.bias.any()  # dis_model.py:35-39 kaiming_normal_, bias 0
        if lin.weight.shape[0] > 1:  # too few weights in the 1-output layers for a std estimate
            assert lin.weight.std().item() == pytest.approx(math.sqrt(2 / lin.weight.shape[1]), rel=0.05)


def official_triplet(source, target, labels, margin, alpha=10, beta=1.1, gamma=1.0):
    """triplet_loss.py:6-77 (reduction 'sum') times main.py:170's alpha, written out on (m, m, m) tensors."""
    m = source.shape[0]
    dist = (1 - F.cosine_similarity(source.unsqueeze(1), target, dim=-1)).clamp(min=0)
    flag = (beta - 0.1) * gamma
    sim_origin = labels @ labels.T
    sim = (sim_origin > 0).float()
    ideal = torch.sort(sim_origin, dim=1, descending=True)[0]
    z = ((2**ideal - 1) / torch.log2(torch.arange(0.0, m) + 2).repeat(m, 1)).sum(1, keepdim=True)
    gain = (2**sim_origin - 1) / z
    weight = (gain.unsqueeze(2) - gain.unsqueeze(1)) * (flag + 0.1)
    mask = sim.unsqueeze(2) * (1 - sim.unsqueeze(1)) * (flag + 0.1)
    loss = (10 * weight * mask * (dist.unsqueeze(2) - dist.unsqueeze(1) + margin)).clamp(0).sum()
    return alpha * loss


@pytest.mark.parametrize("multi_label", [False, True])
def test_triplet_term_equals_the_official_loss_times_alpha(multi_label):
    from cmhbench_plugins.students.dadh import weighted_cosine_triplet

    g = torch.Generator().manual_seed(5)
    m = 40
    src, tgt = torch.tanh(torch.randn(m, 16, generator=g, dtype=torch.float64)), torch.tanh(
        torch.randn(m, 16, generator=g, dtype=torch.float64))
    if multi_label:
        labels = (torch.rand(m, 6, generator=g, dtype=torch.float64) < 0.3).double()
        labels[labels.sum(1) == 0, 0] = 1.0
    else:
        labels = torch.eye(5, dtype=torch.float64)[torch.randint(0, 5, (m,), generator=g)]
    rel = labels @ labels.T
    src.requires_grad_(True)
    ours = OFFICIAL["triplet_weight"] * weighted_cosine_triplet(src, tgt, rel, rel > 0, 0.4)
    want = official_triplet(src, tgt, labels, 0.4)
    assert float(want.detach()) > 0
    # rtol 1e-6: the official discount log2(arange(0., m) + 2) is float32 (triplet_loss.py:19-21)
    torch.testing.assert_close(ours, want, rtol=1e-6, atol=1e-9)
    g_ours, = torch.autograd.grad(ours, src)
    g_want, = torch.autograd.grad(official_triplet(src, tgt, labels, 0.4), src)
    torch.testing.assert_close(g_ours, g_want, rtol=1e-6, atol=1e-6)


def test_triplet_with_graded_similarity_matches_the_direct_sum():
    from cmhbench_plugins.students.dadh import weighted_cosine_triplet

    g = torch.Generator().manual_seed(2)
    m = 30
    src, tgt = torch.randn(m, 8, generator=g, dtype=torch.float64), torch.randn(m, 8, generator=g, dtype=torch.float64)
    rel = torch.rand(m, m, generator=g, dtype=torch.float64)
    pos = rel >= 0.5
    dist = (1 - F.cosine_similarity(src.unsqueeze(1), tgt, dim=-1)).clamp(min=0)
    z = ((2 ** torch.sort(rel, 1, descending=True)[0] - 1) / torch.log2(torch.arange(m) + 2.0)).sum(1, keepdim=True)
    gain = (2**rel - 1) / z
    w = (gain.unsqueeze(2) - gain.unsqueeze(1)) * (pos.double().unsqueeze(2) * (~pos).double().unsqueeze(1))
    want = (w * (dist.unsqueeze(2) - dist.unsqueeze(1) + 0.3)).clamp(0).sum()
    torch.testing.assert_close(weighted_cosine_triplet(src, tgt, rel, pos, 0.3), want, rtol=1e-9, atol=1e-9)


def _one_batch_fit(dropout=0.0, n=24):
    """One epoch, one minibatch of n pairs, BatchNorm inputs recorded per call."""
    g = torch.Generator().manual_seed(0)
    train = PairedFeatures(torch.rand(n, 12, generator=g) * 5 + 3, torch.randn(n, 6, generator=g))
    labels = torch.eye(3)[torch.arange(n) % 3]
    model = build("student", "dadh", hidden=64, epochs=1, dropout=dropout)
    calls = {Modality.IMAGE: [], Modality.TEXT: []}
    original = model.build

    def build_and_record(*args):
        original(*args)
        for modality, branch in model.branches.items():
            for bn in [m for m in branch.features if isinstance(m, torch.nn.BatchNorm1d)]:
                bn.register_forward_hook(
                    lambda mod, inp, out, k=modality: calls[k].append((mod, inp[0].detach().clone())))

    model.build = build_and_record
    model.fit(train, Supervision((labels @ labels.T > 0).float(), labels), 8)
    return model, calls, train


def test_text_batchnorm_statistics_updated_twice_per_step_as_officially():
    """main.py:94 and :97 run the text module twice per step (the second for generate_txt_code); with
    dropout off the second pass sees the same batch, so running stats move by 1 - 0.9^2 = 0.19 of it."""
    model, calls, _ = _one_batch_fit()
    image_bns = [m for m in model.branches[Modality.IMAGE].features if isinstance(m, torch.nn.BatchNorm1d)]
    text_bns = [m for m in model.branches[Modality.TEXT].features if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(calls[Modality.IMAGE]) == 3 and len(calls[Modality.TEXT]) == 6  # text BNs run twice
    for bns, recorded, factor in ((image_bns, calls[Modality.IMAGE], 0.1), (text_bns, calls[Modality.TEXT], 0.19)):
        for bn in bns:
            x = next(inp for mod, inp in recorded if mod is bn)
            torch.testing.assert_close(bn.running_mean, factor * x.mean(0), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(bn.running_var, (1 - factor) + factor * x.var(0), rtol=1e-5, atol=1e-6)


def test_with_dropout_the_second_text_pass_is_run():
    model, calls, _ = _one_batch_fit(dropout=0.5)
    assert len(calls[Modality.IMAGE]) == 3 and len(calls[Modality.TEXT]) == 6
    first, second = calls[Modality.TEXT][1][1], calls[Modality.TEXT][4][1]  # 2nd BN, both passes
    assert not torch.equal(first, second)  # new dropout masks upstream


def test_images_are_standardised_by_the_global_mean_and_std():
    model, calls, train = _one_batch_fit()
    assert model.image_shift == pytest.approx(float(train.image.double().mean()))
    assert model.image_scale == pytest.approx(float(train.image.double().std(unbiased=False)))
    x = torch.rand(5, 12) * 5 + 3
    want = model.branches[Modality.IMAGE].eval()((x - model.image_shift) / model.image_scale)
    torch.testing.assert_close(model.encode(x, Modality.IMAGE), want)
    text = torch.randn(5, 6)
    torch.testing.assert_close(model.encode(text, Modality.TEXT), model.branches[Modality.TEXT].eval()(text))


def test_generator_lr_steps_after_epochs_0_100_200_and_discriminators_keep_theirs(monkeypatch):
    created = []

    class Recording(torch.optim.Adam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr(torch.optim, "Adam", Recording)
    g = torch.Generator().manual_seed(0)
    train = PairedFeatures(torch.randn(6, 4, generator=g), torch.randn(6, 3, generator=g))
    labels = torch.eye(2)[torch.arange(6) % 2]
    for epochs, factor in ((1, 0.8), (100, 0.8), (101, 0.64)):
        created.clear()
        model = build("student", "dadh", hidden=16, epochs=epochs, batch_size=6)
        model.fit(train, Supervision((labels @ labels.T > 0).float(), labels), 4)
        gen_opt, feature_opt, hash_opt = created
        assert gen_opt.param_groups[0]["lr"] == pytest.approx(5e-5 * factor)
        assert gen_opt.param_groups[0]["weight_decay"] == 5e-4
        for opt in (feature_opt, hash_opt):  # main.py:62-65
            assert opt.param_groups[0]["lr"] == 5e-5 and opt.param_groups[0]["betas"] == (0.5, 0.9)
            assert opt.param_groups[0]["weight_decay"] == 1e-4


def test_dadh_learns_on_tiny_data_from_labels():
    data = load_tiny()
    train = paired(data, "train", labels=True)
    sup = build("strategy", "labels").distill(None, train)
    torch.manual_seed(0)
    model = build("student", "dadh", hidden=64, epochs=30, lr=5e-4)
    model.fit(train.without_labels(), Supervision(sup.similarity, sup.soft_labels), 16)
    i2t, t2i = cross_modal_map(model, data)
    assert i2t > 0.8 and t2i > 0.8, (i2t, t2i)


def test_dadh_runs_end_to_end_from_the_cli(tmp_path, test_plugins):
    data, codes = run_tiny(tmp_path, "--strategy", "labels", "--student", "dadh", "--bits", "16",
                           "--set", "student.epochs=2", "--set", "student.hidden=64")
    student = data["config"]["student"]
    assert student["epochs"] == 2 and student["lr"] == 5e-5 and student["triplet_weight"] == 121.0
    assert codes["query_image_codes"].shape[1] == 16


# --- S read by blocks (issue 12) ---


class _FromMatrix:
    """A :class:`SimilarityOperator` over a matrix, so that a Supervision with ``cache_bytes=0`` reads blocks."""

    def __new__(cls, s, symmetric=True):
        from cmhbench.interfaces import SimilarityOperator

        class Op(SimilarityOperator):
            def __init__(self):
                self.s, self.n, self.symmetric = s, s.shape[0], symmetric

            def block(self, rows, cols=None):
                return self.s[rows] if cols is None else self.s[rows][:, cols]

        return Op()


def _label_similarity(n=90, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.eye(classes)[torch.randint(0, classes, (n,), generator=g)]
    return (labels @ labels.T > 0).float()


def _dense_projection(s, z, lamb):
    s = s.double()
    return s @ torch.linalg.solve(s.T @ s + lamb * torch.eye(len(s), dtype=s.dtype), s.T @ z)


@pytest.mark.parametrize("symmetric", [True, False])
def test_projection_from_blocks_equals_the_dense_update_where_s_has_low_rank(symmetric, monkeypatch):
    from cmhbench_plugins.students import dadh

    s = _label_similarity()  # rank 5
    if not symmetric:
        s = s * torch.linspace(0.5, 1.0, len(s))[None, :]  # still rank 5, no longer symmetric
    monkeypatch.setattr(dadh, "ROW_BLOCK_BYTES", 4 * len(s) * 7)  # 7 rows per block: many blocks
    monkeypatch.setattr(interfaces, "DENSE_CACHE_BYTES", 0)  # S too large to hold whole: dadh reads blocks
    monkeypatch.setattr(dadh, "EXACT_UPDATE_BYTES", 0)  # and too large for the exact update
    on_demand = Supervision(_FromMatrix(s, symmetric), cache_bytes=0)
    assert on_demand.kept_dense is None
    z = torch.sign(torch.randn(len(s), 16, generator=torch.Generator().manual_seed(1))).double()
    project = dadh.label_projection(on_demand, None, 1.0, torch.float64, torch.device("cpu"), seed=3)
    torch.testing.assert_close(project(z), _dense_projection(s, z, 1.0), rtol=1e-9, atol=1e-9)
    kept = dadh.label_projection(Supervision(s), None, 1.0, torch.float64, torch.device("cpu"), seed=3)
    torch.testing.assert_close(kept(z), _dense_projection(s, z, 1.0), rtol=1e-9, atol=1e-9)


def test_projection_of_a_kept_s_is_the_official_expression_exactly():
    from cmhbench_plugins.students import dadh

    g = torch.Generator().manual_seed(4)
    s = (torch.rand(70, 70, generator=g) < 0.3).float()
    z = torch.sign(torch.randn(70, 16, generator=g))
    chol = torch.linalg.cholesky(s.T @ s + 0.5 * torch.eye(70))  # main.py:179-185, L = S
    want = s @ torch.cholesky_solve(s.T @ z, chol)
    assert torch.equal(dadh.label_projection(Supervision(s), None, 0.5, torch.float32, torch.device("cpu"), seed=0)(z), want)


def _assert_equal_to_rounding(got, want):
    """``got`` equals ``want`` to 1e-5 (float32) or 1e-13 (float64) of ``want``'s largest entry."""
    atol = (1e-5 if want.dtype == torch.float32 else 1e-13) * float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_grams_are_factored_in_their_own_storage(monkeypatch, dtype):
    from cmhbench_plugins.students import dadh

    g = torch.Generator().manual_seed(5)
    s = (torch.rand(90, 90, generator=g) < 0.3).to(dtype)
    gram = s.T @ s
    gram.diagonal().add_(1.0)
    want = torch.linalg.cholesky(gram)
    assert torch.equal(dadh.cholesky_lower(gram.clone()), want)  # small: torch's factor, bit for bit
    monkeypatch.setattr(interfaces, "DENSE_FLOOR_BYTES", 0)  # every gram is "large": LAPACK in place
    copy = gram.clone()
    got = dadh.cholesky_lower(copy)
    assert got.data_ptr() == copy.data_ptr()
    _assert_equal_to_rounding(got, want)  # small entries come from cancellations: compare at the factor's scale
    assert torch.equal(got, got.tril())
    with pytest.raises(torch.linalg.LinAlgError, match="not positive definite"):
        dadh.cholesky_lower(-gram.clone())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cholesky_solve_by_triangular_solves_is_torchs(dtype):
    from cmhbench_plugins.students import dadh

    for n, seed in ((7, 0), (90, 1), (700, 2)):
        g = torch.Generator().manual_seed(seed)
        s = (torch.rand(n, n, generator=g) < 0.3).to(dtype)
        column_major = torch.linalg.cholesky(s.T @ s + torch.eye(n, dtype=dtype))  # as torch returns it
        y = torch.randn(n, 16, generator=g, dtype=dtype)
        assert torch.equal(dadh.cholesky_solve_lower(y, column_major), torch.cholesky_solve(y, column_major))
        # row-major, as cholesky_lower's in-place path leaves it: BLAS's transposed solves round as the CPU
        # dictates (bit-equal on earlier machines, a few ulps apart on AMD EPYC with MKL), so equal to rounding here
        row_major = column_major.contiguous()
        _assert_equal_to_rounding(dadh.cholesky_solve_lower(y, row_major), torch.cholesky_solve(y, row_major))


def test_projection_keeps_the_leading_subspace_of_a_full_rank_s(monkeypatch):
    from cmhbench_plugins.students import dadh

    s = 0.9 * _label_similarity(n=80) + 0.1 * torch.eye(80)  # full rank: 5 strong directions, the rest 0.1
    monkeypatch.setattr(dadh, "PROJECTION_RANK", 5)
    monkeypatch.setattr(interfaces, "DENSE_CACHE_BYTES", 0)  # S too large to hold whole: dadh reads blocks
    monkeypatch.setattr(dadh, "EXACT_UPDATE_BYTES", 0)  # and too large for the exact update
    project = dadh.label_projection(Supervision(_FromMatrix(s), cache_bytes=0), None, 1.0, torch.float64,
                                    torch.device("cpu"), seed=0)
    u, sigma, _ = torch.linalg.svd(s.double())
    z = torch.randn(80, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    want = u[:, :5] @ ((sigma[:5] ** 2 / (sigma[:5] ** 2 + 1.0))[:, None] * (u[:, :5].T @ z))
    torch.testing.assert_close(project(z), want, rtol=0, atol=1e-6)
    assert (project(z) - _dense_projection(s, z, 1.0)).abs().max() > 1e-3  # the weak directions are dropped


def test_fit_reads_s_by_blocks_only_and_matches_the_dense_path(monkeypatch):
    data = load_tiny()
    train = paired(data, "train", labels=True)
    s = (train.labels @ train.labels.T > 0).float()
    op = _FromMatrix(s)

    def refuse(self):
        raise AssertionError("dense() called")

    monkeypatch.setattr(type(op), "dense", refuse)
    monkeypatch.setattr(interfaces, "DENSE_CACHE_BYTES", 0)  # S too large to hold whole: dadh reads blocks
    monkeypatch.setattr(importlib.import_module("cmhbench_plugins.students.dadh"), "EXACT_UPDATE_BYTES", 0)
    codes = []
    for sup in (Supervision(s.clone()), Supervision(op, cache_bytes=0)):
        torch.manual_seed(0)
        model = build("student", "dadh", hidden=64, epochs=20)
        model.fit(train.without_labels(), sup, 16)
        image, text = torch.as_tensor(data.image), torch.as_tensor(data.text)
        codes.append(torch.cat([model.encode(image, Modality.IMAGE), model.encode(text, Modality.TEXT)]).sign())
    # above EXACT_UPDATE_BYTES the update takes S's leading subspace whether the strategy keeps S or
    # not (the rule depends on n only): the same blocks, the same range finder, the same fit
    assert torch.equal(codes[0], codes[1])


def test_the_exact_update_depends_on_n_only(monkeypatch):
    from cmhbench_plugins.students import dadh

    s = 0.9 * _label_similarity(n=80) + 0.1 * torch.eye(80)  # full rank: the exact and rank-5 maps differ
    z = torch.sign(torch.randn(80, 8, generator=torch.Generator().manual_seed(2))).double()
    monkeypatch.setattr(dadh, "PROJECTION_RANK", 5)
    on_demand = Supervision(_FromMatrix(s), cache_bytes=0)
    assert on_demand.kept_dense is None
    for kept_by_strategy in (Supervision(s), on_demand):  # exact at n <= the bound, kept or not
        torch.testing.assert_close(dadh.label_projection(kept_by_strategy, None, 1.0, torch.float64,
                                                         torch.device("cpu"), seed=0)(z),
                                   _dense_projection(s, z, 1.0), rtol=1e-9, atol=1e-9)
    monkeypatch.setattr(dadh, "EXACT_UPDATE_BYTES", 4 * 79 * 79)  # 80 pairs are now above the bound
    low_rank = [dadh.label_projection(sup, None, 1.0, torch.float64, torch.device("cpu"), seed=0)(z)
                for sup in (Supervision(s), on_demand)]
    assert torch.equal(low_rank[0], low_rank[1])  # a kept S takes the leading subspace too
    assert (low_rank[0] - _dense_projection(s, z, 1.0)).abs().max() > 1e-3


def test_global_mean_std_by_blocks_above_the_floor(monkeypatch):
    from cmhbench import interfaces
    from cmhbench_plugins.students.dadh import global_mean_std

    x = torch.rand(300, 40, generator=torch.Generator().manual_seed(0)) * 3 + 1
    whole = x.double()
    assert global_mean_std(x) == (float(whole.mean()), float(whole.std(unbiased=False)))  # one copy: as always
    monkeypatch.setattr(interfaces, "DENSE_FLOOR_BYTES", 8 * 40 * 7)  # 7-row blocks, two passes
    mean, std = global_mean_std(x)
    assert mean == pytest.approx(float(whole.mean()), rel=1e-12)
    assert std == pytest.approx(float(whole.std(unbiased=False)), rel=1e-12)

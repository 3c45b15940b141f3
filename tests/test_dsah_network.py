"""``dsah`` keeps the official networks after the feature point, its settings, loss and modal-fusion similarity
(idejie/DSAH b231976: ``settings.py``, ``models.py``, ``train.py``).

Image: AlexNet's classifier cut at fc7's ReLU (``models.py:13``) feeds ``fc_encode = Linear(4096, bits)``
(``models.py:14,26``), so on features the image net is exactly ``Linear(d_image, bits)``; its decoder
``Linear(bits, d_text)`` (``models.py:15``). Text: the whole ``TxtNet``, ``Linear(d_text, 4096) -> ReLU ->
Linear(4096, bits)`` (``models.py:39,41,46-48``) and its decoder ``Linear(bits, image_size)`` (``models.py:42``).
Codes ``tanh(sqrt(epoch + 1) h)`` (``models.py:27,33,50,56``).

The plugin is registered here through ``CMHBENCH_PLUGINS`` (the ``dsah_registered`` fixture), so these tests
need no entry point; they pass unchanged once ``dsah`` is also an entry point (a module is registered once).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmhbench.config import default_config
from cmhbench.interfaces import Modality, PairedFeatures
from cmhbench.plugins import clear_cache, get_registry
from method_helpers import (assert_codes_are_tanh_of_scaled_heads, assert_hash_layer_and_text_net, build, cross_modal_map,
                            fit_tiny_teacher, paired, run_tiny)
from plugins_for_tests import load_tiny
from cmhbench_plugins.teachers.dsah import official_nets

PLUGIN = "cmhbench_plugins.teachers.dsah"


@pytest.fixture(autouse=True)
def dsah_registered(monkeypatch):
    """Register the dsah module (and the tiny test dataset) next to the built-ins."""
    monkeypatch.setenv("CMHBENCH_PLUGINS", f"plugins_for_tests,{PLUGIN}")
    clear_cache()
    yield
    clear_cache()


# The official settings, idejie/DSAH @ b231976 settings.py. The three dataset blocks set the same values.
SHARED = {
    "k": 1.5,  # settings.py:42 K = 1.5
    "eta": 0.1,  # settings.py:43 ETA = 0.1
    "alpha": 0.9,  # settings.py:44 ALPHA = 0.9
    "batch_size": 32,  # settings.py:46 BATCH_SIZE = 32
    "momentum": 0.7,  # settings.py:48 MOMENTUM = 0.7 (nesterov=True: train.py:64-65,68-69,71-72)
    "weight_decay": 5e-4,  # settings.py:49 WEIGHT_DECAY = 5e-4
    "hidden": 4096,  # models.py:39 fc1 = Linear(txt_feat_len, 4096), models.py:41 fc2 = Linear(4096, code_len)
}
WIKI = {
    **SHARED,
    "epochs": 200,  # settings.py:18 NUM_EPOCH = 200
    "lr_image": 0.005,  # settings.py:19 LR_IMG = 0.005
    "lr_text": 0.005,  # settings.py:20 LR_TXT = 0.005
}
MIRFLICKR = {
    **SHARED,
    "epochs": 200,  # settings.py:27 NUM_EPOCH = 200
    "lr_image": 0.005,  # settings.py:28 LR_IMG = 0.005
    "lr_text": 0.005,  # settings.py:29 LR_TXT = 0.005
}
NUSWIDE = {  # the official NUS-WIDE is TC10 (settings.py:34-36)
    **SHARED,
    "epochs": 200,  # settings.py:37 NUM_EPOCH = 200
    "lr_image": 0.005,  # settings.py:38 LR_IMG = 0.005
    "lr_text": 0.005,  # settings.py:39 LR_TXT = 0.005
}
EXPECTED = {
    None: MIRFLICKR,  # the same values as every block
    "wiki": WIKI,
    "mirflickr25k": MIRFLICKR,
    "nus-wide-tc10": NUSWIDE,
    "nus-wide-tc21": NUSWIDE,  # the same NUS-WIDE images and tags
    "synthetic": MIRFLICKR,
    "iapr-tc12": MIRFLICKR,  # no official block: the shared values
}


@pytest.mark.parametrize("dataset", list(EXPECTED), ids=[d or "defaults" for d in EXPECTED])
def test_defaults_are_the_official_settings_on_every_dataset(dataset):
    spec = get_registry().teachers.get("dsah")
    assert default_config(spec, dataset) == EXPECTED[dataset]
    assert spec.code == "https://github.com/idejie/DSAH"
    assert set(spec.dataset_defaults) == {"wiki", "mirflickr25k", "nus-wide-tc10", "nus-wide-tc21"}


def _fit_tiny_batch(bits=8, **overrides):
    return fit_tiny_teacher("dsah", bits, **overrides)


def test_default_networks_are_the_official_ones():
    model = _fit_tiny_batch(bits=8)  # defaults: hidden = 4096 (official TxtNet width)
    assert_hash_layer_and_text_net(model)  # fc_encode alone; TxtNet's dropout is commented out
    # decoders: ImgNet.decode = Linear(code_len, txt_feat_len) (models.py:15), TxtNet.decode = Linear(code_len,
    # image_size) (models.py:42; image_size is the image feature's width)
    dec_i, dec_t = model.decoders[Modality.IMAGE], model.decoders[Modality.TEXT]
    assert type(dec_i) is torch.nn.Linear and tuple(dec_i.weight.shape) == (12, 8)
    assert type(dec_t) is torch.nn.Linear and tuple(dec_t.weight.shape) == (20, 8)
    modules = [m for net in (*model.heads.values(), *model.decoders.values()) for m in net.modules()]
    assert not any(isinstance(m, (torch.nn.Dropout, torch.nn.BatchNorm1d)) for m in modules)


def test_initialisation_is_pytorch_default_as_officially():
    """Nothing re-initialises the official layers: nn.Linear's default, weights and biases within
    +-1/sqrt(fan_in), drawn in the official order (models.py:14-15,39-42; train.py:58,61)."""
    torch.manual_seed(4)
    heads, decoders = official_nets(20, 12, 64, 8, torch.device("cpu"))
    torch.manual_seed(4)
    want = [torch.nn.Linear(20, 8), torch.nn.Linear(8, 12), torch.nn.Linear(12, 64), torch.nn.Linear(64, 8),
            torch.nn.Linear(8, 20)]
    text = heads[Modality.TEXT]
    mine = [heads[Modality.IMAGE], decoders[Modality.IMAGE], text[0], text[2], decoders[Modality.TEXT]]
    for layer, official in zip(mine, want):
        assert torch.equal(layer.weight, official.weight) and torch.equal(layer.bias, official.bias)
        bound = 1 / math.sqrt(layer.in_features)
        assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound


def test_optimisers_are_the_official_ones():
    model = _fit_tiny_batch(bits=8, hidden=32)
    opt_i, opt_t = model.optimisers()
    # train.py:63-72: opt_I on every CodeNet_I parameter (fc_encode and decode), opt_T on every CodeNet_T one
    assert [p for g in opt_i.param_groups for p in g["params"]] == [
        *model.heads[Modality.IMAGE].parameters(), *model.decoders[Modality.IMAGE].parameters()]
    assert [p for g in opt_t.param_groups for p in g["params"]] == [
        *model.heads[Modality.TEXT].parameters(), *model.decoders[Modality.TEXT].parameters()]
    for opt in (opt_i, opt_t):
        (group,) = opt.param_groups
        assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.005, 0.7, 5e-4, True)
        assert group["dampening"] == 0


def test_codes_are_tanh_of_the_scaled_hash_layer():
    model = _fit_tiny_batch(bits=8, hidden=32)
    assert model.code_scale == 1.0  # sqrt(epoch + 1) after the single epoch 0 (models.py:33, train.py:81)
    assert_codes_are_tanh_of_scaled_heads(model, model.code_scale)
    model3 = _fit_tiny_batch(bits=8, hidden=32, epochs=3)
    assert model3.code_scale == math.sqrt(3.0)


def _official_loss(nets, image, text, alpha, c):
    """The official minibatch loss (train.py:94-128), written out with ``F.normalize``; returns the terms."""
    img_hash, img_dec, fc1, fc2, txt_dec = nets
    code_I = torch.tanh(alpha * img_hash(image))  # models.py:26-27
    decoded_t = img_dec(torch.sign(code_I))  # models.py:28-29
    code_T = torch.tanh(alpha * fc2(F.relu(fc1(text))))  # models.py:46-50
    decoded_i = txt_dec(torch.sign(code_T))  # models.py:51-52
    F_I = F.normalize(image)  # train.py:98
    S_I = F_I.mm(F_I.t())
    S_I = S_I * 2 - 1  # train.py:99-100
    F_T = F.normalize(text)  # train.py:101
    S_T = F_T.mm(F_T.t())
    S_T = S_T * 2 - 1  # train.py:102-103
    B_I = F.normalize(code_I)  # train.py:105
    B_T = F.normalize(code_T)  # train.py:106
    BI_BI = B_I.mm(B_I.t())  # train.py:108
    BT_BT = B_T.mm(B_T.t())  # train.py:109
    BI_BT = B_I.mm(B_T.t())  # train.py:110
    S_tilde = c["alpha"] * S_I + (1 - c["alpha"]) * S_T  # train.py:112
    S = c["k"] * S_tilde  # train.py:113
    loss1 = F.mse_loss(BT_BT, S)  # train.py:115
    loss2 = F.mse_loss(BI_BT, S)  # train.py:116
    loss3 = F.mse_loss(BI_BI, S)  # train.py:117
    loss31 = F.mse_loss(BI_BI, c["k"] * S_I)  # train.py:118
    loss32 = F.mse_loss(BT_BT, c["k"] * S_T)  # train.py:119
    diagonal = BI_BT.diagonal()  # train.py:121
    all_1 = torch.rand((image.shape[0])).fill_(1)  # train.py:122
    loss4 = F.mse_loss(diagonal, c["k"] * all_1)  # train.py:123
    loss5 = F.mse_loss(decoded_i, F_I)  # train.py:124
    loss6 = F.mse_loss(decoded_t, F_T)  # train.py:125
    loss7 = F.mse_loss(BI_BT, BI_BT.t())  # train.py:126
    loss = 1 * loss1 + 1 * loss2 + 1 * loss3 + 1 * loss4 + 1 * loss5 + 1 * loss6 + 2 * loss7 + c["eta"] * (
        loss31 + loss32)  # train.py:127-128
    return {"loss1": loss1, "loss2": loss2, "loss3": loss3, "loss31": loss31, "loss32": loss32, "loss4": loss4,
            "loss5": loss5, "loss6": loss6, "loss7": loss7, "total": loss}


def _official_nets_of(model):
    text = model.heads[Modality.TEXT]
    return (model.heads[Modality.IMAGE], model.decoders[Modality.IMAGE], text[0], text[2],
            model.decoders[Modality.TEXT])


def test_loss_terms_are_the_official_lines():
    c = {"alpha": 0.7, "k": 1.3, "eta": 0.25}
    model = _fit_tiny_batch(bits=8, hidden=32, epochs=2, **c)  # trained a little: codes not at their init
    image, text = torch.randn(16, 20).abs(), torch.randn(16, 12).abs()
    with torch.no_grad():
        mine = model.losses(image, text)
        want = _official_loss(_official_nets_of(model), image, text, model.code_scale, c)
    assert set(mine) == set(want)
    for key in want:
        assert torch.equal(mine[key], want[key]), (key, mine[key], want[key])
    assert mine["loss4"] >= (c["k"] - 1) ** 2  # paired cosines <= 1 < K: this term never vanishes


def test_reconstruction_terms_do_not_reach_the_hash_nets():
    """The decoders read sign(code), whose gradient is zero (models.py:28,51): loss5 and loss6 train the decoders
    only, and the hash nets get the same gradient with or without them."""
    model = _fit_tiny_batch(bits=8, hidden=32)
    image, text = torch.randn(16, 20), torch.randn(16, 12)
    hash_params = [*model.heads[Modality.IMAGE].parameters(), *model.heads[Modality.TEXT].parameters()]
    dec_params = [*model.decoders[Modality.IMAGE].parameters(), *model.decoders[Modality.TEXT].parameters()]
    terms = model.losses(image, text)
    full = torch.autograd.grad(terms["total"], hash_params + dec_params, retain_graph=True)
    rest = torch.autograd.grad(terms["total"] - terms["loss5"] - terms["loss6"], hash_params, allow_unused=True)
    for g_full, g_rest in zip(full, rest):
        torch.testing.assert_close(g_full, g_rest, rtol=0, atol=1e-7)
    assert all(g.abs().sum() > 0 for g in full[len(hash_params):])  # the decoders do learn


def test_training_matches_the_official_loop_step_for_step():
    """Same initial weights and batches: the plugin's fit equals the official train.py loop written out, with
    opt_I on fc_encode + decode and opt_T on all of TxtNet, Nesterov SGD (train.py:63-72,91-148)."""
    c = {"alpha": 0.8, "k": 1.5, "eta": 0.1, "batch_size": 16, "lr_image": 0.02, "lr_text": 0.005,
         "momentum": 0.7, "weight_decay": 5e-4}
    image, text = torch.randn(40, 20), torch.randn(40, 12).abs()  # 2 full batches of 16 per epoch, 8 pairs dropped
    torch.manual_seed(3)
    model = build("teacher", "dsah", seed=5, epochs=3, hidden=24, **c)
    model.fit(PairedFeatures(image, text), 8)

    torch.manual_seed(3)  # the same draws in the same order: fc_encode, ImgNet.decode, fc1, fc2, TxtNet.decode
    nets = (torch.nn.Linear(20, 8), torch.nn.Linear(8, 12), torch.nn.Linear(12, 24), torch.nn.Linear(24, 8),
            torch.nn.Linear(8, 20))
    sgd = dict(momentum=c["momentum"], weight_decay=c["weight_decay"], nesterov=True)
    opts = (torch.optim.SGD([p for net in nets[:2] for p in net.parameters()], lr=c["lr_image"], **sgd),
            torch.optim.SGD([p for net in nets[2:] for p in net.parameters()], lr=c["lr_text"], **sgd))
    gen = torch.Generator().manual_seed(5)  # the run's generator gives the batch order
    for epoch in range(3):
        alpha = math.pow(1.0 * epoch + 1.0, 0.5)  # models.py:33
        perm = torch.randperm(40, generator=gen)
        for start in (0, 16):
            idx = perm[start:start + 16]
            for opt in opts:  # train.py:91-92
                opt.zero_grad()
            _official_loss(nets, image[idx], text[idx], alpha, c)["total"].backward()  # train.py:146
            for opt in opts:  # train.py:147-148
                opt.step()

    for mine, official in zip(_official_nets_of(model), nets):
        assert torch.equal(mine.weight, official.weight)  # bit for bit: same ops in the same order
        assert torch.equal(mine.bias, official.bias)
    assert model.code_scale == math.sqrt(3.0)


def test_fusion_similarity_is_the_official_formula():
    model = build("teacher", "dsah")  # official alpha 0.9, K 1.5; needs no fit
    rng = np.random.default_rng(0)
    image, text = rng.random((7, 5)), rng.random((7, 4))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = lambda x: unit(x) @ unit(x).T  # noqa: E731
    want = 1.5 * (0.9 * (2 * cos(image) - 1) + 0.1 * (2 * cos(text) - 1))  # train.py:98-103,112-113
    train = PairedFeatures(torch.from_numpy(image).float(), torch.from_numpy(text).float())
    fusion = model.fusion_similarity(train)
    dense = fusion.dense()
    assert dense.shape == (7, 7) and dense.dtype == torch.float32 and fusion.n == 7 and fusion.symmetric
    np.testing.assert_allclose(dense.numpy(), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(dense.diagonal(), torch.full((7,), 1.5))
    assert dense.min() >= -1.5 - 1e-6  # non-negative features: S in [-K, K]
    rows, cols = torch.tensor([4, 0, 6]), torch.tensor([1, 5])
    torch.testing.assert_close(fusion.block(rows, cols), dense[rows][:, cols], rtol=0, atol=1e-6)
    torch.testing.assert_close(fusion.block(rows), dense[rows], rtol=0, atol=1e-6)
    s_i, s_t = fusion.modal_blocks(rows, cols)
    np.testing.assert_allclose(s_i.numpy(), (2 * cos(image) - 1)[[4, 0, 6]][:, [1, 5]], atol=1e-6)
    np.testing.assert_allclose(s_t.numpy(), (2 * cos(text) - 1)[[4, 0, 6]][:, [1, 5]], atol=1e-6)


def test_fusion_similarity_block_of_a_batch_is_the_training_target():
    """``block(idx, idx)`` is exactly the S the teacher trains on for the batch idx (train.py:112-113)."""
    c = {"alpha": 0.6, "k": 1.2, "eta": 0.0}
    model = _fit_tiny_batch(bits=8, hidden=32, **c)
    image, text = torch.randn(50, 20), torch.randn(50, 12)
    idx = torch.randperm(50)[:32]
    block = model.fusion_similarity(PairedFeatures(image, text)).block(idx, idx)
    with torch.no_grad():
        terms = model.losses(image[idx], text[idx])
        want = _official_loss(_official_nets_of(model), image[idx], text[idx], model.code_scale, c)
    # loss2 = mse(cos(B_I, B_T), S): the plugin's S and the block give the same term
    b_i = F.normalize(model.encode(image[idx], Modality.IMAGE))
    b_t = F.normalize(model.encode(text[idx], Modality.TEXT))
    assert torch.equal(F.mse_loss(b_i @ b_t.T, block), terms["loss2"]) and torch.equal(terms["loss2"], want["loss2"])


def test_dsah_with_official_networks_learns_on_tiny_data():
    data = load_tiny()
    torch.manual_seed(0)
    model = build("teacher", "dsah", epochs=30, hidden=256)
    model.fit(paired(data, "train"), 16)
    i2t, t2i = cross_modal_map(model, data)
    assert i2t > 0.8 and t2i > 0.8, (i2t, t2i)  # chance is about 0.25 on this 4-class data


def test_dsah_runs_end_to_end_with_its_defaults_but_few_epochs(tmp_path):
    data, codes = run_tiny(tmp_path, "--teacher", "dsah", "--student", "none", "--bits", "16", "--set", "teacher.epochs=10")
    teacher = data["config"]["teacher"]
    assert teacher["hidden"] == 4096 and teacher["epochs"] == 10 and teacher["momentum"] == 0.7
    assert codes["query_image_codes"].shape[1] == 16
    assert data["metrics"]["i2t"]["map"] > 0.6 and data["metrics"]["t2i"]["map"] > 0.6, data["metrics"]

"""``djsrh`` keeps the official networks after the feature point and trains them as the official code does
(zzs1994/DJSRH 6041c2d: ``models.py``, ``train.py``, ``settings.py``).

Image: AlexNet's classifier cut at fc7's ReLU (``models.py:12``; its Dropout layers sit before fc6 and fc7) feeds
``fc_encode = Linear(4096, bits)`` (``models.py:13,21``), so on features the image net is exactly
``Linear(d_image, bits)``. Text: the whole ``TxtNet``, ``Linear(d_text, 4096) -> ReLU -> Linear(4096, bits)``
(``models.py:33-34,38-39``). Codes ``tanh(sqrt(epoch + 1) h)`` (``models.py:22,27,40,44``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmhbench.config import default_config
from cmhbench.interfaces import Modality, PairedFeatures
from cmhbench.plugins import get_registry
from method_helpers import (assert_codes_are_tanh_of_scaled_heads, assert_hash_layer_and_text_net, build, cross_modal_map,
                            fit_tiny_teacher, paired, run_tiny)
from plugins_for_tests import load_tiny


def _fit_tiny_batch(bits=8, **overrides):
    return fit_tiny_teacher("djsrh", bits, **overrides)


def test_default_networks_are_the_official_ones():
    model = _fit_tiny_batch(bits=8)  # defaults: hidden = 4096 (official TxtNet width)
    assert_hash_layer_and_text_net(model)  # fc_encode alone; no dropout in TxtNet
    image, text = model.heads[Modality.IMAGE], model.heads[Modality.TEXT]
    assert not any(isinstance(m, torch.nn.Dropout) for head in model.heads.values() for m in head.modules())
    # PyTorch default nn.Linear initialisation, as officially: within +-1/sqrt(fan_in) before training, still
    # close to that range after one epoch (2 steps)
    assert image.weight.abs().max() < 1.5 / math.sqrt(20)
    assert text[2].weight.abs().max() < 1.5 / math.sqrt(4096)


# Width of the text net per dataset: one TxtNet for every dataset (models.py:33 fc1 = Linear(txt_feat_len, 4096),
# models.py:34 fc2 = Linear(4096, code_len)); the per-dataset settings.py values are in test_official_defaults.py.
HIDDEN = {
    None: 4096,  # models.py:33-34
    "mirflickr25k": 4096,  # models.py:33-34
    "nus-wide-tc10": 4096,  # models.py:33-34
    "nus-wide-tc21": 4096,  # models.py:33-34
    "wiki": 4096,  # models.py:33-34
}


@pytest.mark.parametrize("dataset", list(HIDDEN), ids=[d or "defaults" for d in HIDDEN])
def test_text_width_is_official_on_every_dataset(dataset):
    config = default_config(get_registry().teachers.get("djsrh"), dataset)
    assert config["hidden"] == HIDDEN[dataset]
    # no other width or extra-layer knob is left (the 1024-wide image MLP is gone)
    assert {k for k in config if "hidden" in k or "width" in k or "dropout" in k} == {"hidden"}


def test_codes_are_tanh_of_the_scaled_hash_layer():
    model = _fit_tiny_batch(bits=8, hidden=32)
    assert model.alpha == 1.0  # sqrt(epoch + 1) after the single epoch 0 (models.py:27, train.py:73)
    assert_codes_are_tanh_of_scaled_heads(model, model.alpha)
    model3 = _fit_tiny_batch(bits=8, hidden=32, epochs=3)
    assert model3.alpha == math.sqrt(3.0)


def _official_step(nets, opts, image, text, alpha, c):
    """One minibatch of the official ``Session.train`` (train.py:84-119), written out with ``F.normalize``."""
    for opt in opts:
        opt.zero_grad()
    img_hash, fc1, fc2 = nets
    code_i = torch.tanh(alpha * img_hash(image))  # models.py:21-22
    code_t = torch.tanh(alpha * fc2(F.relu(fc1(text))))  # models.py:38-40
    f_i = F.normalize(image)
    s_i = f_i.mm(f_i.t()) * 2 - 1  # train.py:92-94
    f_t = F.normalize(text)
    s_t = f_t.mm(f_t.t()) * 2 - 1  # train.py:96-98
    b_i, b_t = F.normalize(code_i), F.normalize(code_t)  # train.py:101-102
    bi_bi, bt_bt, bi_bt = b_i.mm(b_i.t()), b_t.mm(b_t.t()), b_i.mm(b_t.t())  # train.py:104-106
    s_tilde = c["beta"] * s_i + (1 - c["beta"]) * s_t  # train.py:108
    s = (1 - c["eta"]) * s_tilde + c["eta"] * s_tilde.mm(s_tilde) / c["batch_size"]  # train.py:109
    s = s * c["mu"]  # train.py:110
    # train.py:112-115
    loss = c["lambda1"] * F.mse_loss(bi_bi, s) + 1 * F.mse_loss(bi_bt, s) + c["lambda2"] * F.mse_loss(bt_bt, s)
    loss.backward()
    for opt in opts:  # train.py:117-119
        opt.step()


def test_training_matches_the_official_loop_step_for_step():
    """Same initial weights and batches: the plugin's fit equals the official train.py loop written out, with
    opt_I on the hash layer at lr_image and opt_T on all of TxtNet at lr_text (train.py:58-66)."""
    c = {"beta": 0.3, "eta": 0.4, "mu": 1.5, "lambda1": 0.3, "lambda2": 0.2, "batch_size": 16,
         "lr_image": 0.02, "lr_text": 0.005, "momentum": 0.9, "weight_decay": 5e-4}
    image, text = torch.randn(40, 20), torch.randn(40, 12)  # 2 full batches of 16 per epoch, 8 pairs dropped
    torch.manual_seed(3)
    model = build("teacher", "djsrh", seed=5, epochs=3, hidden=24, **c)
    model.fit(PairedFeatures(image, text), 8)

    torch.manual_seed(3)  # the same draws in the same order: image hash layer, then TxtNet fc1, fc2
    nets = (torch.nn.Linear(20, 8), torch.nn.Linear(12, 24), torch.nn.Linear(24, 8))
    sgd = dict(momentum=c["momentum"], weight_decay=c["weight_decay"])
    opts = (torch.optim.SGD(nets[0].parameters(), lr=c["lr_image"], **sgd),
            torch.optim.SGD([*nets[1].parameters(), *nets[2].parameters()], lr=c["lr_text"], **sgd))
    gen = torch.Generator().manual_seed(5)  # the run's generator gives the batch order
    for epoch in range(3):
        alpha = math.pow(1.0 * epoch + 1.0, 0.5)  # models.py:27
        perm = torch.randperm(40, generator=gen)
        for start in (0, 16):
            idx = perm[start:start + 16]
            _official_step(nets, opts, image[idx], text[idx], alpha, c)

    text_net = model.heads[Modality.TEXT]
    for mine, official in ((model.heads[Modality.IMAGE], nets[0]), (text_net[0], nets[1]), (text_net[2], nets[2])):
        assert torch.equal(mine.weight, official.weight)  # bit for bit: same ops in the same order
        assert torch.equal(mine.bias, official.bias)
    assert model.alpha == math.sqrt(3.0)


def test_djsrh_with_official_networks_learns_on_tiny_data():
    data = load_tiny()
    torch.manual_seed(0)
    model = build("teacher", "djsrh", epochs=30, hidden=256)
    model.fit(paired(data, "train"), 16)
    i2t, t2i = cross_modal_map(model, data)
    assert i2t > 0.7 and t2i > 0.7, (i2t, t2i)


def test_djsrh_runs_end_to_end_with_its_defaults_but_few_epochs(tmp_path, test_plugins):
    data, codes = run_tiny(tmp_path, "--teacher", "djsrh", "--student", "none", "--bits", "16", "--set", "teacher.epochs=10")
    assert data["config"]["teacher"]["hidden"] == 4096 and data["config"]["teacher"]["epochs"] == 10
    assert codes["query_image_codes"].shape[1] == 16
    assert data["metrics"]["i2t"]["map"] > 0.6 and data["metrics"]["t2i"]["map"] > 0.6, data["metrics"]

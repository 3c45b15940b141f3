"""``dcmh`` follows the official MATLAB release (jiangqy/DCMH-CVPR2017 @ 67d0e84, ``DCMH_matlab/DCMH_matlab/``).

Image: CNN-F whose last layer is replaced by a hash layer ``4096 -> bits`` (``net_structure_img.m:11-17``), so on
features the image net is exactly ``Linear(d_image, bits)``. Text: ``d_text -> 8192 -> ReLU -> bits``
(``net_structure_txt.m``). All weights and biases N(0, 0.01). SGD with weight decay 5e-4 (``update_net.m``),
learning rate ``logspace(-1.5, -3, 500)`` (``DCMH_demo.m:20-21``), F = G = 0 at the start, text net first,
``ceil(n / batch)`` steps (``process_DCMH.m``), text zero-meaned (``DCMH_demo.m:27``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmhbench.config import default_config
from cmhbench.interfaces import Modality, PairedFeatures, Supervision
from cmhbench.plugins import get_registry
from cmhbench_plugins.students.dcmh import DCMH, centred_sparse_linear, lr_schedule, official_nets, text_forward
from method_helpers import build, cross_modal_map, paired, run_tiny
from plugins_for_tests import load_tiny

# DCMH_matlab/DCMH_matlab/ @ 67d0e84
OFFICIAL_DEFAULTS = {
    "epochs": 500,  # DCMH_demo.m:19 param.maxIter = 500
    "lr_start": 10**-1.5,  # DCMH_demo.m:20-21 param.lr_txt = param.lr_img = logspace(-1.5,-3,param.maxIter)
    "lr_end": 1e-3,  # DCMH_demo.m:20-21
    "lr_spacing": "log",  # DCMH_demo.m:20-21 logspace
    "gamma": 1.0,  # DCMH_demo.m:22 param.gamma = 1
    "eta": 1.0,  # DCMH_demo.m:23 param.eta = 1
    "batch_size": 128,  # DCMH_demo.m:24 param.batch_size = 128
    "text_zero_mean": True,  # DCMH_demo.m:27 dataset.Y = normZeroMean(YAll)
    "optimizer": "sgd",  # update_net.m:5-8 w = w - lr*(dzdw/(batch_size*N) + weights_decay*w), no momentum
    "weight_decay": 5e-4,  # update_net.m:2 weights_decay = 5*10^-4
    "text_hidden": 8192,  # net_structure_txt.m:2-3 weights{1} 0.01*randn(1,dy,1,8192)
    "init_std": 0.01,  # net_structure_txt.m:2-3,19-20; net_structure_img.m:15-16 0.01*randn
    "image_hidden": 0,  # net_structure_img.m:11-17 the hash layer replaces fc8 and reads relu7: nothing else
    "alternation": "matlab",  # process_DCMH.m:18-19 F = G = zeros; :33-75 text loop, then image loop
}


def _train(n=64, d_image=20, d_text=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.eye(4)[torch.randint(0, 4, (n,), generator=g)]
    data = PairedFeatures(torch.randn(n, d_image, generator=g), torch.randn(n, d_text, generator=g) + 3.0)
    return data, Supervision((labels @ labels.T > 0).float())


def _fit(bits=8, n=64, **overrides):
    torch.manual_seed(0)
    model = build("student", "dcmh", **{"epochs": 1, **overrides})
    data, sup = _train(n)
    model.fit(data, sup, bits)
    return model, data


@pytest.mark.parametrize("dataset", [None, "wiki", "mirflickr25k", "nus-wide-tc10", "synthetic"])
def test_defaults_are_the_official_matlab_settings(dataset):
    spec = get_registry().method("student", "dcmh")
    assert not spec.dataset_defaults  # the release sets one configuration (DCMH_demo.m), used everywhere
    config = default_config(spec, dataset)
    numbers = {k for k, v in OFFICIAL_DEFAULTS.items() if isinstance(v, float)}
    assert {k: config[k] for k in numbers} == pytest.approx({k: OFFICIAL_DEFAULTS[k] for k in numbers}, rel=1e-15)
    assert {k: config[k] for k in OFFICIAL_DEFAULTS.keys() - numbers} == {
        k: v for k, v in OFFICIAL_DEFAULTS.items() if k not in numbers}


def test_default_networks_are_the_official_ones():
    model, _ = _fit(bits=8)  # defaults: text_hidden 8192, image_hidden 0
    image = model.heads[Modality.IMAGE]
    assert type(image) is torch.nn.Linear  # the hash layer alone on the feature
    assert tuple(image.weight.shape) == (8, 20) and tuple(image.bias.shape) == (8,)
    text = model.heads[Modality.TEXT]
    assert [type(m) for m in text] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert tuple(text[0].weight.shape) == (8192, 12) and tuple(text[0].bias.shape) == (8192,)
    assert tuple(text[2].weight.shape) == (8, 8192) and tuple(text[2].bias.shape) == (8,)


def test_initial_weights_and_biases_are_normal_with_std_001():
    torch.manual_seed(0)
    image, text = official_nets(300, 40, 8192, 64, 0.01)
    for p in [*image.parameters(), *text.parameters()]:
        if p.numel() >= 8192:
            assert abs(float(p.detach().std()) - 0.01) < 0.0005 and abs(float(p.detach().mean())) < 0.0005
        else:  # the 64 biases of the hash layers
            assert float(p.detach().abs().max()) < 0.05
    # the column-major storage of the first text weight changes nothing a user sees
    x = torch.randn(5, 40)
    torch.testing.assert_close(text(x), F.linear(torch.relu(F.linear(x, text[0].weight.contiguous(), text[0].bias)),
                                                 text[2].weight, text[2].bias))


def test_optimiser_is_plain_sgd_with_weight_decay_and_the_official_schedule():
    model, _ = _fit(epochs=3, text_hidden=16)
    for opt in model.optimisers.values():
        assert type(opt) is torch.optim.SGD
        (group,) = opt.param_groups
        assert group["momentum"] == 0 and not group["nesterov"]
        assert group["lr"] == pytest.approx(1e-3)  # the last epoch of logspace(-1.5, -3, 3)
    # update_net.m:5-8: w <- w - lr (dJ/dw + 5e-4 w), weights and biases alike
    net = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(4, 3)
    grads = torch.autograd.grad(net(x).pow(2).sum(), list(net.parameters()))
    opt = model._optimiser(net)
    opt.param_groups[0]["lr"] = 0.1
    model._update(opt, net(x).pow(2).sum())
    for p, w, g in zip(net.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), w - 0.1 * (g + 5e-4 * w))
    # MATLAB logspace(-1.5, -3, 500): entry k (1-based) = 10^(-1.5 - 1.5 (k - 1) / 499)
    lrs = lr_schedule(10**-1.5, 1e-3, 500, "log")
    assert lrs.shape == (500,)
    for epoch, want in [(0, 10**-1.5), (1, 10 ** (-1.5 - 1.5 / 499)), (249, 10 ** (-1.5 - 1.5 * 249 / 499)),
                        (250, 10 ** (-1.5 - 1.5 * 250 / 499)), (499, 1e-3)]:
        assert lrs[epoch] == pytest.approx(want, rel=1e-12)
    # TensorFlow demo / PyTorch port: linspace(10^-1.5, 1e-6, epochs + 1), epoch e uses entry e
    port = lr_schedule(10**-1.5, 1e-6, 500, "linear")
    assert port[0] == pytest.approx(10**-1.5) and port[499] == pytest.approx(10**-1.5 + 499 * (1e-6 - 10**-1.5) / 500)


def test_closed_form_step_is_the_gradient_of_the_dcmh_objective():
    torch.manual_seed(0)
    n, m, bits, gamma, eta = 30, 7, 5, 0.7, 0.3
    model = build("student", "dcmh", gamma=gamma, eta=eta, weight_decay=0.0)
    net = torch.nn.Linear(4, bits)
    x, other = torch.randn(n, 4), torch.randn(n, bits)
    s = (torch.rand(n, n) > 0.6).float()
    own, codes = torch.randn(n, bits), torch.sign(torch.randn(n, bits))
    idx = torch.randperm(n)[:m]
    # autograd of the objective's batch terms, the other rows of `own` constant, divided by n m
    out = net(x[idx])
    rest = own.clone()
    rest[idx] = 0.0
    theta = 0.5 * out @ other.T
    loss = (-(s[idx] * theta - F.softplus(theta)).sum() + gamma * (codes[idx] - out).pow(2).sum()
            + eta * (out.sum(0) + rest.sum(0)).pow(2).sum()) / (n * m)
    want = torch.autograd.grad(loss, [net.weight, net.bias])
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    model._step(net, x, idx, other, s, own, codes, opt)
    torch.testing.assert_close(net.weight.grad, want[0])
    torch.testing.assert_close(net.bias.grad, want[1])
    torch.testing.assert_close(own[idx], net(x[idx]).detach())  # the batch's rows of F were replaced


@pytest.mark.parametrize("alternation,first,steps,zero_codes",
                         [("matlab", "text", 3, True), ("tensorflow", "image", 2, False)])
def test_alternation(monkeypatch, alternation, first, steps, zero_codes):
    calls = []
    original = DCMH._step

    def spy(self, net, x, idx, other, similarity, own, codes, opt):
        side = "image" if net is self.heads[Modality.IMAGE] else "text"
        calls.append((side, len(idx), float(codes.abs().sum())))
        original(self, net, x, idx, other, similarity, own, codes, opt)

    monkeypatch.setattr(DCMH, "_step", spy)
    _fit(n=80, epochs=2, batch_size=32, text_hidden=16, alternation=alternation)
    other = "image" if first == "text" else "text"
    # per epoch: `steps` batches of 32 on the first net, then as many on the other (80 / 32: ceil 3, floor 2)
    assert [c[0] for c in calls] == ([first] * steps + [other] * steps) * 2
    assert all(c[1] == 32 for c in calls)
    # MATLAB: F = G = 0, so B = sign(F + G) = 0 in the first epoch; TensorFlow/port: F, G ~ N(0, 1)
    assert all((c[2] == 0) == zero_codes for c in calls[: 2 * steps])
    assert all(c[2] > 0 for c in calls[2 * steps:])  # items no batch drew in epoch 1 keep F = G = 0 (B = 0)


def test_text_is_zero_meaned_with_the_training_mean():
    model, data = _fit(text_hidden=16)
    torch.testing.assert_close(model.text_mean, data.text.mean(0))
    y = torch.randn(6, 12)
    with torch.no_grad():
        want = model.heads[Modality.TEXT](y - data.text.mean(0))
    torch.testing.assert_close(model.encode(y, Modality.TEXT), want)
    raw, _ = _fit(text_hidden=16, text_zero_mean=False)
    assert raw.text_mean is None


def _tags(n, d, per_item, seed):
    """``(n, d)`` binary tag vectors with ``per_item`` ones per row (MIRFlickr-like bag-of-words)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, d)
    x.scatter_(1, torch.rand(n, d, generator=g).argsort(1)[:, :per_item], 1.0)
    return x


def test_sparse_first_layer_equals_the_dense_centred_layer_and_its_gradients():
    torch.manual_seed(0)
    x = _tags(9, 40, 3, 1) * torch.rand(9, 40)  # non-binary values too
    x[4] = 0  # an item without tags
    mean = torch.rand(40)
    _, net = official_nets(5, 40, 32, 6, init_std=0.1)
    layer = net[0]
    g = torch.randn(9, 32)
    grads = []
    for forward in (lambda: layer(x - mean), lambda: centred_sparse_linear(x, mean, layer)):
        layer.zero_grad(set_to_none=True)
        out = forward()
        (out * g).sum().backward()
        grads.append((out.detach(), layer.weight.grad.clone(), layer.bias.grad.clone()))
    for dense, sparse in zip(*grads):
        torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)


def test_text_forward_takes_the_sparse_path_for_tags_only():
    _, net = official_nets(5, 40, 32, 6, init_std=0.1)
    tags, dense = _tags(20, 40, 1, 2), torch.randn(20, 40)
    mean = tags.mean(0)
    forward, inputs = text_forward(net, tags, mean)
    assert forward is not net and inputs is tags  # raw tags, centred inside the first layer
    with torch.no_grad():
        torch.testing.assert_close(forward(inputs[:7]), net(tags[:7] - mean))
    forward, inputs = text_forward(net, dense, dense.mean(0))
    assert forward is net
    torch.testing.assert_close(inputs, dense - dense.mean(0))


def test_fit_on_tags_matches_the_dense_path(monkeypatch):
    import cmhbench_plugins.students.dcmh as dcmh

    n, bits = 150, 8
    g = torch.Generator().manual_seed(3)
    labels = torch.eye(3)[torch.randint(0, 3, (n,), generator=g)]
    data = PairedFeatures(torch.randn(n, 10, generator=g), _tags(n, 60, 2, 4))
    sup = Supervision((labels @ labels.T > 0).float())
    calls = []
    monkeypatch.setattr(dcmh, "centred_sparse_linear", lambda *a: calls.append(1) or centred_sparse_linear(*a))
    outputs = []
    for density in (0.05, 0.0):  # 2 tags of 60: the sparse path, then the dense one
        monkeypatch.setattr(dcmh, "SPARSE_INPUT_DENSITY", density)
        torch.manual_seed(0)
        model = build("student", "dcmh", epochs=20, text_hidden=64)
        model.fit(data, sup, bits)
        outputs.append(torch.cat([model.encode(data.image, Modality.IMAGE), model.encode(data.text, Modality.TEXT)]))
        if density:
            assert len(calls) == 20 * 2  # every text step of the first fit
    assert len(calls) == 40 and outputs[1].abs().mean() > 1e-3
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-3 * float(outputs[1].abs().mean()))
    assert torch.equal(outputs[0].sign(), outputs[1].sign())


def test_dcmh_with_official_settings_learns_on_tiny_data():
    data = load_tiny()
    train = paired(data, "train", labels=True)
    sup = build("strategy", "labels").distill(None, train)
    torch.manual_seed(0)
    student = build("student", "dcmh", text_hidden=256)  # official settings, 500 epochs, narrower text net
    student.fit(train.without_labels(), Supervision(sup.similarity), 16)
    i2t, t2i = cross_modal_map(student, data)
    assert i2t > 0.9 and t2i > 0.9, (i2t, t2i)


def test_dcmh_runs_end_to_end_with_its_defaults_but_few_epochs(tmp_path, test_plugins):
    record, codes = run_tiny(tmp_path, "--strategy", "labels", "--student", "dcmh", "--bits", "16", "--set", "student.epochs=2")
    config = record["config"]["student"]
    assert config["text_hidden"] == 8192 and config["epochs"] == 2 and config["eta"] == 1.0
    assert codes["query_image_codes"].shape[1] == 16 and set(np.unique(codes["db_text_codes"])) <= {-1, 1}
    assert math.isfinite(record["metrics"]["i2t"]["map"])

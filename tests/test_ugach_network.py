"""``ugach`` follows the official code (PKU-ICST-MIPL/UGACH_AAAI2018 98c163f; UKD's teacher, huhengtong/UKD_CVPR2020
a96a9f7 ``teacher_model/``, as ``variant=ukd``).

``train_32.py`` is ``UGACH-mir/train_32.py``; ``pre/`` is ``unsuper-pretrain-mir-D-beta/``. D and G are
``Linear(d, 8192) -> tanh -> Linear(8192, bits) -> sigmoid`` per modality (``dis_model_nn.py:21-64``), trained by plain
SGD with constant learning rates (``global_step`` is never passed to ``minimize()``, ``dis_model_nn.py:120-126``), one
triplet / one query per step (``train_32.py:26``).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cmhbench.interfaces import Modality, PairedFeatures
from method_helpers import build, cross_modal_map, paired
from plugins_for_tests import load_tiny

from cmhbench_plugins.teachers import ugach as U

OFFICIAL_UGACH = {
    "k": 5,  # KNN/knn_mir_cross5.py:7,75-79 (K = 10 = 5 image + 5 text neighbours)
    "positives": "knn",  # UGACH-mir/utils.py:36 (j in KNN_cross[i])
    "epochs": 30,  # train_32.py:15 (WHOLE_EPOCH; D_EPOCH = 1 at :16)
    "g_epochs": 2,  # train_32.py:17 (G_EPOCH)
    "select": 2,  # train_32.py:12 (SELECTNUM)
    "sample_ratio": 50,  # train_32.py:13 (SAMPLERATIO)
    "hidden": 8192,  # train_32.py:24 (HIDDEN_DIM)
    "batch_size": 1,  # train_32.py:26 (BATCH_SIZE)
    "d_lr": 0.001,  # train_32.py:28 (D_LEARNING_RATE)
    "g_lr": 0.01,  # train_32.py:29 (G_LEARNING_RATE)
    "weight_decay": 0.01,  # train_32.py:27 (WEIGHT_DECAY)
    "margin_per_bit": 0.125,  # train_32.py:30 (BETA = OUTPUT_DIM / 8.0)
    "pretrain_epochs": 30000,  # pre/train_32.py:14-15 (WHOLE_EPOCH 30 x D_EPOCH 1000)
    "pretrain_resample": 1000,  # pre/train_32.py:16,127 (GS_EPOCH: new triplets once per WHOLE_EPOCH)
    "pretrain_batch": 20,  # pre/train_32.py:23 (BATCH_SIZE)
    "pretrain_lr": 0.01,  # pre/train_32.py:25 (D_LEARNING_RATE)
    "pretrain_select": 1,  # pre/train_32.py:11 (SELECTNUM)
}
OFFICIAL_UKD = {
    **OFFICIAL_UGACH,
    "positives": "pair",  # teacher_model/utils.py:24 (i == j)
    "batch_size": 512,  # teacher_model/teacher_train.py:30
    "d_lr": 0.01,  # teacher_model/teacher_train.py:32
    "pretrain_epochs": 200,  # teacher_model/pretrain/teacher_pretrain.py:18-19 (1 x 200)
    "pretrain_batch": 256,  # teacher_model/pretrain/teacher_pretrain.py:27
}


def _settings(config):
    return {f: (config.setting(f) if f in U.VARIANTS["ugach"] else getattr(config, f)) for f in OFFICIAL_UGACH}


@pytest.mark.parametrize("variant,want", [("ugach", OFFICIAL_UGACH), ("ukd", OFFICIAL_UKD)])
def test_defaults_are_the_official_settings(variant, want):
    assert _settings(build("teacher", "ugach", variant=variant).config) == want
    assert U.UGACHConfig().variant == "ugach"
    # no learning-rate decay of any kind is configurable: the official decay is dead code
    assert not any("decay" in f.name and f.name != "weight_decay" for f in dataclasses.fields(U.UGACHConfig))
    assert not any("scale" in f.name for f in dataclasses.fields(U.UGACHConfig))


def test_explicit_fields_override_the_variant():
    config = build("teacher", "ugach", variant="ukd", batch_size=3, d_lr=0.5).config
    assert config.setting("batch_size") == 3 and config.setting("d_lr") == 0.5 and config.setting("positives") == "pair"


def test_networks_have_the_official_shapes_and_initialisation():
    net = U._Net(128, 10, 8192, 32, torch.Generator().manual_seed(0))
    for head, d in ((net.image, 128), (net.text, 10)):
        assert [type(m) for m in head] == [torch.nn.Linear, torch.nn.Tanh, torch.nn.Linear]
        assert tuple(head[0].weight.shape) == (8192, d) and tuple(head[2].weight.shape) == (32, 8192)
        for layer in (head[0], head[2]):  # truncated_normal_initializer(0, 0.1): within 2 std; biases 0
            assert layer.weight.abs().max() <= 0.2 and 0.08 < layer.weight.std() < 0.1
            assert torch.count_nonzero(layer.bias) == 0


def _official_d_loss(net, qm, xq, xp, xn, beta, wd):
    """dis_model_nn.py:56-90: reduce_mean(max(0, beta + pred_distance - pred_neg_distance)) + wd * sum(l2_loss)."""
    cm = Modality.TEXT if qm is Modality.IMAGE else Modality.IMAGE
    sq, sp, sn = net.sig(xq, qm), net.sig(xp, cm), net.sig(xn, cm)
    loss = torch.clamp(beta + ((sq - sp) ** 2).sum(1) - ((sq - sn) ** 2).sum(1), min=0.0).mean()
    return loss + wd * sum((p ** 2).sum() / 2 for p in net.parameters())


def _official_g_loss(net, qm, xq, xneg, reward, wd):
    """gen_model_nn.py:68-78: gen_prob = softmax(pred_score over the fed negatives) + 1e-20;
    -reduce_mean(log(gen_prob) * reward) + wd * sum(l2_loss)."""
    cm = Modality.TEXT if qm is Modality.IMAGE else Modality.IMAGE
    score = -((net.sig(xq, qm) - net.sig(xneg, cm)) ** 2).sum(1)
    prob = torch.softmax(score.reshape(1, -1), 1).reshape(-1) + 1e-20
    return -(torch.log(prob) * reward).mean() + wd * sum((p ** 2).sum() / 2 for p in net.parameters())


def _copy(net):
    new = U._Net(7, 5, 16, 6, torch.Generator().manual_seed(9)).double()
    new.load_state_dict(net.state_dict())
    return new


def _sgd(net, loss, lr):
    grads = torch.autograd.grad(loss, list(net.parameters()))
    with torch.no_grad():
        for p, g in zip(net.parameters(), grads):
            p -= lr * g


def _d_steps(seed, n, net_seed, modality, triplets, batch, beta, lr, wd):
    """``(net, ref, feats, trip)``: ``net`` after ``_train_d`` on ``triplets`` random triplets in batches of
    ``batch`` (double precision), ``ref`` an untouched copy of it for the official steps to replay."""
    torch.manual_seed(seed)
    feats = {Modality.IMAGE: torch.randn(n, 7).double(), Modality.TEXT: torch.randn(n, 5).double()}
    net = U._Net(7, 5, 16, 6, torch.Generator().manual_seed(net_seed)).double()
    ref = _copy(net)
    model = build("teacher", "ugach", weight_decay=wd)
    model._beta = beta
    trip = torch.randint(0, n, (triplets, 3))
    heads = U._Heads(net)
    with torch.no_grad():
        model._train_d(heads, feats, modality, trip, batch, lr)
        heads.fold()
    return net, ref, feats, trip


def _assert_same_parameters(net, ref):
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_d_steps_are_the_official_per_triplet_sgd_with_a_constant_learning_rate():
    """60 single-triplet steps of ``_train_d`` equal 60 autograd SGD steps on the official loss at the same lr."""
    beta, lr, wd = 0.75, 0.3, 0.05  # large lr and wd so that decay and updates show
    net, ref, feats, trip = _d_steps(0, 30, 1, Modality.IMAGE, 61, 1, beta, lr, wd)
    active = 0
    for q, p, m in trip[1:].tolist():  # the official pass starts at index 1 (train_32.py:116)
        loss = _official_d_loss(ref, Modality.IMAGE, feats[Modality.IMAGE][[q]], feats[Modality.TEXT][[p]],
                                feats[Modality.TEXT][[m]], beta, wd)
        active += int(loss.item() > wd * sum((p_ ** 2).sum().item() / 2 for p_ in ref.parameters()) + 1e-12)
        _sgd(ref, loss, lr)  # constant lr: no decay however many steps
    assert active > 5
    _assert_same_parameters(net, ref)


def test_minibatch_d_step_is_the_mean_of_the_batch():
    beta, lr, wd = 3.0, 0.2, 0.01
    net, ref, feats, trip = _d_steps(1, 12, 2, Modality.TEXT, 9, 5, beta, lr, wd)  # steps on rows 1-5, then 6-8
    for rows in (trip[1:6], trip[6:9]):
        loss = _official_d_loss(ref, Modality.TEXT, feats[Modality.TEXT][rows[:, 0]], feats[Modality.IMAGE][rows[:, 1]],
                                feats[Modality.IMAGE][rows[:, 2]], beta, wd)
        _sgd(ref, loss, lr)
    _assert_same_parameters(net, ref)


def test_generator_loss_and_step_match_the_official_lines():
    torch.manual_seed(2)
    net = U._Net(7, 5, 16, 6, torch.Generator().manual_seed(3)).double()
    ref = _copy(net)
    xq, xneg = torch.randn(1, 7).double(), torch.randn(2, 5).double()
    reward = torch.sigmoid(torch.tensor([0.3, 1.7]).double())
    heads = U._Heads(net)
    with torch.no_grad():
        sq, cq = heads.forward(Modality.IMAGE, xq)
        sn, cn = heads.forward(Modality.TEXT, xneg)
        loss, gq, gn = U.gen_loss_grads(sq, sn, reward)
        heads.step(0.5, 0.01, [(Modality.IMAGE, cq, gq), (Modality.TEXT, cn, gn)])
        heads.fold()
    want = _official_g_loss(ref, Modality.IMAGE, xq, xneg, reward, 0.0)
    torch.testing.assert_close(loss, want.detach())
    _sgd(ref, _official_g_loss(ref, Modality.IMAGE, xq, xneg, reward, 0.01), 0.5)
    _assert_same_parameters(net, ref)


def test_hinge_and_reward_are_the_official_svm_lines():
    q = torch.tensor([[0.0, 0.0]])
    assert U.triplet_hinge(q, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), 0.5).item() == 0.0
    assert abs(U.triplet_hinge(q, torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]), 0.5).item() - 1.5) < 1e-6


def _spy(monkeypatch):
    calls = []
    original = U.UGACH._train_d

    def spy(self, d, feats, qm, triplets, batch, lr):
        calls.append((qm, triplets.clone(), batch, lr))
        return original(self, d, feats, qm, triplets, batch, lr)

    monkeypatch.setattr(U.UGACH, "_train_d", spy)
    return calls


def _tiny_fit(monkeypatch, **overrides):
    calls = _spy(monkeypatch)
    torch.manual_seed(0)
    x = PairedFeatures(torch.randn(40, 6), torch.randn(40, 4))
    model = build("teacher", "ugach", hidden=16, **overrides)
    model.fit(x, 8)
    return model, x, calls


def _mask(lists, n):
    """``(n, n)`` bool of -1-padded index lists."""
    out = torch.zeros(n, n + 1, dtype=torch.bool)
    out.scatter_(1, lists % (n + 1), True)
    return out[:, :n]


def test_correlation_graph_is_the_union_of_both_knn_graphs():
    from cmhbench.neighbours import knn_mask

    g = torch.Generator().manual_seed(3)
    image, text = torch.randint(0, 3, (60, 4), generator=g).float(), torch.randn(60, 5, generator=g)  # ties in image
    lists = U.correlation_graph(image, text, 5)
    want = knn_mask(image, 5) | knn_mask(text, 5) | torch.eye(60, dtype=torch.bool)
    assert torch.equal(_mask(lists, 60), want)
    assert lists.shape[1] <= 11 and bool((lists[:, :1] >= 0).all())


def test_pretraining_positives_are_the_pair_only(monkeypatch):
    monkeypatch.setattr(U, "QUERY_BLOCK", 16)  # candidates drawn in 3 blocks of queries
    model, x, calls = _tiny_fit(monkeypatch, epochs=1, pretrain_epochs=4, pretrain_resample=2)
    pre = calls[:8]  # 4 passes x (i2t, t2i)
    assert [c[0] for c in pre] == [Modality.IMAGE, Modality.TEXT] * 4
    for qm, trip, batch, lr in pre:
        assert batch == 20 and lr == 0.01  # pre/train_32.py:23,25
        assert trip.shape == (40, 3)  # one triplet per query (pre/train_32.py:11,53)
        assert torch.equal(trip[:, 1], trip[:, 0])  # positive = the paired item (pre/utils.py:35)
        assert bool((trip[:, 2] != trip[:, 0]).all())  # negative from the non-paired list
        assert sorted(trip[:, 0].tolist()) == list(range(40))
    # the same list for pretrain_resample passes, then a new one (GS_EPOCH)
    assert torch.equal(pre[0][1], pre[2][1]) and not torch.equal(pre[0][1], pre[4][1])
    adv = calls[8:]
    assert len(adv) == 2
    graph = _mask(U.correlation_graph(x.image, x.text, 5), 40)
    for qm, trip, batch, lr in adv:
        assert batch == 1 and lr == 0.001 and trip.shape == (80, 3)  # SELECTNUM 2, BATCH_SIZE 1, D lr 0.001
        assert bool(graph[trip[:, 0], trip[:, 1]].all())  # positives from the kNN graph
        assert not bool(graph[trip[:, 0], trip[:, 2]].any())  # negatives are never positives
        per_query = trip[torch.argsort(trip[:, 0] * 1000 + trip[:, 1])].reshape(40, 2, 3)
        counts = graph.sum(1)
        distinct = per_query[:, 0, 1] != per_query[:, 1, 1]
        assert bool(distinct[counts >= 2].all())  # two different positives when there are two


def test_ukd_variant_uses_pair_positives_and_its_batches(monkeypatch):
    model, x, calls = _tiny_fit(monkeypatch, variant="ukd", epochs=1, pretrain_epochs=2)
    pre, adv = calls[:4], calls[4:]
    assert all(c[2] == 256 and c[3] == 0.01 for c in pre)
    for qm, trip, batch, lr in adv:
        assert batch == 512 and lr == 0.01
        assert torch.equal(trip[:, 1], trip[:, 0])  # pos_list = [paired item], reused for both triplets
        assert bool((trip[:, 2] != trip[:, 0]).all())


def test_learning_rate_is_constant_over_many_steps(monkeypatch):
    """Every pass gets the configured lr (no ``0.9 ** (step // 20000)``), and 25000 steps later a step still
    moves the weights by exactly ``lr * grad`` after the weight decay."""
    model, x, calls = _tiny_fit(monkeypatch, epochs=3, pretrain_epochs=3)
    assert {c[3] for c in calls[:6]} == {0.01} and {c[3] for c in calls[6:]} == {0.001} and len(calls) == 12
    net = U._Net(7, 5, 16, 6, torch.Generator().manual_seed(4)).double()
    start = [p.detach().clone() for p in net.parameters()]
    heads = U._Heads(net)
    lr, wd, steps = 0.001, 0.01, 25000
    x1 = torch.randn(1, 7).double()
    with torch.no_grad():
        for _ in range(steps):  # steps whose hinge is 0: weight decay only
            heads.decay(lr, wd)
        sig, cache = heads.forward(Modality.IMAGE, x1)
        heads.step(lr, wd, [(Modality.IMAGE, cache, torch.ones_like(sig))])
        heads.fold()
    shrink = (1 - lr * wd) ** (steps + 1)
    b2 = net.image[2].bias
    want_b2 = start[3] * shrink - lr * (sig * (1 - sig))[0]
    torch.testing.assert_close(b2.detach(), want_b2, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(net.text[0].weight.detach(), start[4] * shrink, rtol=1e-9, atol=1e-12)


def test_ugach_learns_on_tiny_data_and_encodes_d_outputs():
    data = load_tiny()
    torch.manual_seed(0)
    model = build("teacher", "ugach", epochs=2, pretrain_epochs=2, hidden=256)
    train = paired(data, "train")
    model.fit(train, 16)
    i2t, t2i = cross_modal_map(model, data)
    assert i2t > 0.8 and t2i > 0.8, (i2t, t2i)
    out = model.encode(train.image, "image")
    torch.testing.assert_close(out, torch.sigmoid(model.dis.image(train.image)) - 0.5)


def test_same_seed_same_codes():
    x = PairedFeatures(torch.randn(30, 6), torch.randn(30, 4))
    outs = []
    for _ in range(2):
        model = build("teacher", "ugach", hidden=16, epochs=1, pretrain_epochs=1)
        model.fit(x, 8)
        outs.append(model.encode(x.text, "text"))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("fold_below", [1e-3, 0.97])  # 0.97: the weights fold every few steps of the pass
def test_generator_pass_with_cached_preactivations_is_the_direct_pass(monkeypatch, fold_below):
    """A G pass reading its candidates' first layer from :class:`PreactivationCache` (logged updates,
    flushed every few steps, rescaled at folds) ends with the weights of the direct pass, in float64."""
    torch.manual_seed(0)
    n, d_i, d_t = 60, 300, 270
    feats = {Modality.IMAGE: torch.randn(n, d_i, dtype=torch.float64),
             Modality.TEXT: torch.randn(n, d_t, dtype=torch.float64)}
    monkeypatch.setattr(U, "CACHE_LOG_ROWS", 6)  # flush every 3 steps
    monkeypatch.setattr(U, "QUERY_BLOCK", 16)
    monkeypatch.setattr(U, "FOLD_BELOW", fold_below)
    caches, folds = [], []
    original_cache, original_fold = U.PreactivationCache.__init__, U._Heads.fold
    monkeypatch.setattr(U.PreactivationCache, "__init__",
                        lambda self, *a: (caches.append(self), original_cache(self, *a))[1])
    monkeypatch.setattr(U._Heads, "fold", lambda self: (folds.append(bool(self.caches)), original_fold(self))[1])
    finals = []
    for min_width in (10**9, 1):  # direct, then cached
        monkeypatch.setattr(U, "CACHE_MIN_WIDTH", min_width)
        model = build("teacher", "ugach", hidden=32, g_lr=0.5, sample_ratio=5)
        model._rng = torch.Generator().manual_seed(3)
        model._beta = 1.0
        dis = U._Net(d_i, d_t, 32, 8, torch.Generator().manual_seed(1)).double()
        gen = U._Net(d_i, d_t, 32, 8, torch.Generator().manual_seed(2)).double()
        d, g = U._Heads(dis), U._Heads(gen)
        positives = torch.arange(n)[:, None]
        with torch.no_grad():
            for qm, cm in model._directions():
                model._train_g(d, g, feats, positives, qm, cm, n, n // 5)
            g.fold()
        assert not g.caches
        finals.append([p.detach().clone() for p in gen.parameters()])
    assert len(caches) == 2  # the cached run used one per direction
    if fold_below > 0.5:
        assert sum(folds) >= 10  # folds with a cache open: the cache was rescaled
    assert finals[0][0].abs().max() > 1e-2  # weights still of their initial size (truncated normal, std 0.1)
    for a, b in zip(*finals):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-15)

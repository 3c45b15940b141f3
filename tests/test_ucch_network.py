"""``ucch`` keeps the official networks, memory and losses (penghu-cs/UCCH 0c20e62).

Image head ``Linear(d, 8192) -> ReLU -> Linear(8192, 8192) -> ReLU -> Linear(8192, bits)``, text head
``Linear(d, 8192) -> ReLU -> Linear(8192, bits)`` (``nets/ImageNet.py:7,15-27``, ``nets/TextNet.py:7,15-27``),
outputs ``tanh`` then L2-normalised (``:31-36``); memory ``normalise(sign(randn * 2s - s))``
(``NCE/NCEAverage.py:18-20``); ``K`` negatives drawn per item (``NCEAverage.py:43-44``).
The references below are written the official way (gathered rows, ``bmm``, ``-log softmax``).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.training import minibatches
from cmhbench_plugins.teachers.ucch import (
    UCCHConfig, contrastive_logits, initial_memory, memory_scores, ranking_loss, warmup_logits,
)
from method_helpers import build

OFFICIAL = {  # UCCHConfig field: official value  # where, at 0c20e62
    "alpha": 0.7,  # README.md:16 --alpha 0.7 (utils/config.py:27 default 0.9)
    "temperature": 0.9,  # utils/config.py:30 --T
    "momentum": 0.4,  # utils/config.py:28
    "negatives": 4096,  # utils/config.py:29 --K
    "margin": 0.2,  # README.md:16, utils/config.py:32
    "shift": 0.1,  # README.md:16 (utils/config.py:31 default 1)
    "lr": 1e-4,  # README.md:16, utils/config.py:15
    "weight_decay": 1e-6,  # utils/config.py:16 --wd
    "batch_size": 256,  # README.md:16, utils/config.py:17
    "epochs": 20,  # README.md:16 --max_epochs 20 (utils/config.py:19 default 100)
    "warmup_epochs": 1,  # utils/config.py:33 --warmup_epoch
    "image_layers": 3,  # README.md:16 --num_hiden_layers 3 2, utils/config.py:23
    "text_layers": 2,  # README.md:16, utils/config.py:23
    "hidden": 8192,  # nets/ImageNet.py:7, nets/TextNet.py:7 (mid_num1 = mid_num2 = 1024 * 8)
    "clip_norm": 1.0,  # UCCH.py:165 clip_grad_norm(parameters, 1.)
}


def test_defaults_are_the_official_settings():
    assert {f.name: f.default for f in dataclasses.fields(UCCHConfig)} == OFFICIAL


def _fit(n=20, bits=8, seed=3, **overrides):
    torch.manual_seed(0)
    model = build("teacher", "ucch", seed=seed, **{"epochs": 1, **overrides})
    train = PairedFeatures(torch.randn(n, 20), torch.randn(n, 12))
    model.fit(train, bits)
    return model, train


def test_default_networks_are_the_official_ones():
    model, _ = _fit(batch_size=8)  # official width 8192, 3 + 2 layers
    image, text = model.heads[Modality.IMAGE].fc, model.heads[Modality.TEXT].fc
    L, R = torch.nn.Linear, torch.nn.ReLU
    assert [type(m) for m in image] == [L, R, L, R, L] and [type(m) for m in text] == [L, R, L]
    assert [tuple(m.weight.shape) for m in image if isinstance(m, L)] == [(8192, 20), (8192, 8192), (8, 8192)]
    assert [tuple(m.weight.shape) for m in text if isinstance(m, L)] == [(8192, 12), (8, 8192)]
    assert all(m.bias is not None for m in (*image, *text) if isinstance(m, L))
    # default nn.Linear initialisation (ImageNet.py:28 leaves weights_init commented out): |w| <= 1/sqrt(fan_in),
    # still within it after two Adam steps of lr 1e-4
    assert image[2].weight.abs().max() < 1 / math.sqrt(8192) + 3e-4


def test_outputs_are_tanh_then_l2_normalised():
    model, train = _fit(hidden=16, batch_size=8)
    for m, x in ((Modality.IMAGE, train.image), (Modality.TEXT, train.text)):
        out = model.encode(x, m)
        with torch.no_grad():
            h = torch.tanh(model.heads[m].fc(x))
        torch.testing.assert_close(out, h / h.norm(dim=1, keepdim=True))
        torch.testing.assert_close(out.norm(dim=1), torch.ones(len(x)))


def test_memory_starts_as_the_official_biased_signs():
    mem = initial_memory(20000, 32, torch.Generator().manual_seed(0))
    torch.testing.assert_close(mem.abs(), torch.full_like(mem, 1 / math.sqrt(32)))  # unit rows of +-1 signs
    # sign(z * 2s - s) = sign(z - 1/2), z ~ N(0, 1): P(+) = 1 - Phi(1/2) = 0.3085 (NCEAverage.py:19)
    assert abs((mem > 0).float().mean().item() - 0.3085) < 0.005


def test_fit_uses_the_official_memory_and_drops_the_last_partial_batch():
    n, bits, seed = 20, 8, 3
    model, _ = _fit(n=n, bits=bits, seed=seed, hidden=16, batch_size=8)
    ctx = RunContext(seed=seed)
    seen = torch.cat(list(minibatches(n, 8, ctx.generator(), drop_last=True)))
    assert len(seen) == 16  # UCCH.py:63 drop_last=True: 4 pairs never visited in the epoch
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[seen] = False
    torch.testing.assert_close(model.memory[untouched], initial_memory(n, bits, ctx.generator(1))[untouched])
    assert not torch.equal(model.memory[seen], initial_memory(n, bits, ctx.generator(1))[seen])


def _official_nce(x, weight, T):
    """NCEAverage.py:54-60 + NCECriterion.py:9-11: weight (m, K+1, bits) rows, positive first."""
    out = torch.bmm(weight.sign(), x.view(x.shape[0], x.shape[1], 1)) / (T * math.sqrt(x.shape[1]))
    return -out.squeeze(2).softmax(1)[:, 0].log().mean()


def test_memory_scores_both_paths_match_the_gathered_rows():
    x, signs = torch.randn(5, 4), torch.randn(7, 4).sign()
    for c in (3, 1):  # (m, n) product path when n <= c * bits, gathered rows otherwise
        cols = torch.randint(0, 7, (5, c))
        want = torch.bmm(signs[cols], x.unsqueeze(2)).squeeze(2)
        torch.testing.assert_close(memory_scores(x, signs, cols), want)


def test_contrastive_loss_draws_k_negatives_per_item_as_officially():
    model = build("teacher", "ucch", negatives=6, hidden=16)
    n, m, bits, c = 30, 4, 8, model.config
    model.memory = initial_memory(n, bits, torch.Generator().manual_seed(1))
    before = model.memory.clone()
    u, v = [torch.nn.functional.normalize(torch.tanh(torch.randn(m, bits)), dim=1) for _ in range(2)]
    idx = torch.tensor([3, 9, 0, 17])
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    loss = model.contrastive_loss(u, v, idx, warmup=False, gen=gen)
    draw = torch.randint(0, n, (m, 6), generator=torch.Generator().set_state(state))
    assert not all(torch.equal(draw[0], row) for row in draw)  # each item its own K draws
    cols = torch.cat([idx[:, None], draw], 1)  # NCEAverage.py:43-44: own row first
    weight = before[cols]  # (m, K+1, bits), NCEAverage.py:52
    want = _official_nce(u, weight, c.temperature) + _official_nce(v, weight, c.temperature)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(contrastive_logits(u, before, cols, c.temperature)[:, 0],
                               (before[idx].sign() * u).sum(1) / (c.temperature * math.sqrt(bits)))
    # NCEAverage.py:81-88: M_i <- normalise(mu M_i + (1 - mu) normalise((u_i + v_i) / 2)), mu = 0.4
    joint = torch.nn.functional.normalize((u + v) / 2, dim=1)
    want_rows = torch.nn.functional.normalize(0.4 * before[idx] + 0.6 * joint, dim=1)
    torch.testing.assert_close(model.memory[idx], want_rows)
    rest = torch.ones(n, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(model.memory[rest], before[rest])


def test_warmup_contrasts_within_the_batch_and_overwrites_the_memory():
    model = build("teacher", "ucch", hidden=16)
    n, m, bits, T = 12, 5, 8, 0.9
    model.memory = initial_memory(n, bits, torch.Generator().manual_seed(1))
    u, v = [torch.nn.functional.normalize(torch.tanh(torch.randn(m, bits)), dim=1) for _ in range(2)]
    idx = torch.tensor([1, 4, 6, 7, 11])
    loss = model.contrastive_loss(u, v, idx, warmup=True, gen=torch.Generator())
    # NCEAverage.py:46-50: row i = [own, the other m - 1 in order] of the batch's (l + ab) / 2
    joint = (u + v) / 2
    inx = torch.stack([torch.arange(m)] * m)
    inx = torch.cat([torch.arange(m).view(-1, 1), inx[torch.eye(m) == 0].view(m, -1)], 1).view(-1)
    weight = joint[inx].view(m, m, -1)
    torch.testing.assert_close(loss, _official_nce(u, weight, T) + _official_nce(v, weight, T))
    torch.testing.assert_close(warmup_logits(u, joint, T).diag(), (joint.sign() * u).sum(1) / (T * math.sqrt(bits)))
    torch.testing.assert_close(model.memory[idx], torch.nn.functional.normalize(joint, dim=1))  # mu = 0


def test_ranking_loss_is_the_official_expression():
    torch.manual_seed(2)
    im, s = [torch.nn.functional.normalize(torch.randn(6, 8), dim=1) for _ in range(2)]
    margin, shift = 0.2, 0.1
    scores = im @ s.T  # src/utils.py:59-69, tau = 1
    d1 = scores.diag().view(6, 1).expand_as(scores)
    d2 = scores.diag().view(6, 1).t().expand_as(scores)
    mask_s = (scores >= (d1 - margin)).float()
    cost_s = scores * mask_s + (1.0 - mask_s) * (scores - shift)
    mask_im = (scores >= (d2 - margin)).float()
    cost_im = scores * mask_im + (1.0 - mask_im) * (scores - shift)
    want = (-cost_s.diag() + cost_s.exp().sum(1).log() + margin).mean() + (
        -cost_im.diag() + cost_im.exp().sum(0).log() + margin).mean()
    torch.testing.assert_close(ranking_loss(im, s, margin, shift), want)


def test_fused_adam_takes_the_official_adam_step():
    torch.manual_seed(0)
    a = torch.nn.Linear(32, 16)
    b = torch.nn.Linear(32, 16)
    b.load_state_dict(a.state_dict())
    opts = [torch.optim.Adam(a.parameters(), lr=1e-4, weight_decay=1e-6),
            torch.optim.Adam(b.parameters(), lr=1e-4, weight_decay=1e-6, fused=True)]
    for _ in range(3):
        x = torch.randn(8, 32)
        for net, opt in zip((a, b), opts):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)

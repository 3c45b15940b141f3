"""Deep unsupervised teachers UGACH and UCCH (DGCPN: test_dgcpn.py): core formulas on hand-made
inputs, and that each learns on the tiny structured data (chance mAP about 0.25)."""

from __future__ import annotations

import math

import torch

from method_helpers import build, cross_modal_map, paired
from plugins_for_tests import load_tiny


def test_ucch_ranking_and_contrastive_terms():
    from cmhbench_plugins.teachers.ucch import contrastive_logits, ranking_loss

    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # s = u v^T = [[1, .6], [0, .8]]; the loss recomputed entry by entry
    s = u @ v.T
    margin, shift = 0.2, 0.5
    row = []
    for i in range(2):
        cost = [s[i, j] - (0.0 if s[i, j] >= s[i, i] - margin else shift) for j in range(2)]
        row.append(-s[i, i] + math.log(sum(math.exp(x) for x in cost)) + margin)
    col = []
    for j in range(2):
        cost = [s[i, j] - (0.0 if s[i, j] >= s[j, j] - margin else shift) for i in range(2)]
        col.append(-s[j, j] + math.log(sum(math.exp(x) for x in cost)) + margin)
    want = sum(row) / 2 + sum(col) / 2
    assert abs(ranking_loss(u, v, margin, shift).item() - want) < 1e-6

    memory = torch.tensor([[0.3, -0.2], [-0.1, 0.5], [1.0, 1.0], [-1.0, 0.2], [0.4, -3.0]])
    cols = torch.tensor([[0, 2, 3, 4], [1, 2, 3, 4]])  # own row first, then K = 3 rows per item
    logits = contrastive_logits(u, memory, cols, 0.9)
    assert logits.shape == (2, 4)
    scale = 0.9 * math.sqrt(2)
    torch.testing.assert_close(logits[0], torch.tensor([1.0, 1.0, -1.0, 1.0]) / scale)
    torch.testing.assert_close(logits[1], torch.tensor([1.0, 1.0, 1.0, -1.0]) / scale)


def test_ugach_correlation_graph_and_hinge():
    from cmhbench_plugins.teachers.ugach import correlation_graph, triplet_hinge

    image = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    text = torch.tensor([[0.0], [5.0], [5.1], [20.0]])
    g = correlation_graph(image, text, 2)
    want = torch.tensor([[0, 1, -1], [0, 1, 2], [1, 2, 3], [2, 3, -1]])
    # image pairs {0,1}, {2,3}; text pairs 0->1, 1<->2, 3->2; as index lists padded with -1
    assert torch.equal(g, want)
    q = torch.tensor([[0.0, 0.0]])
    assert triplet_hinge(q, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), 0.5).item() == 0.0
    assert abs(triplet_hinge(q, torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]), 0.5).item() - 1.5) < 1e-6


def test_ucch_teacher_learns_on_structured_data():
    data = load_tiny()
    torch.manual_seed(0)
    teacher = build("teacher", "ucch", epochs=20, hidden=64, batch_size=32, lr=1e-3, negatives=256)
    teacher.fit(paired(data, "train"), 16)
    i2t, t2i = cross_modal_map(teacher, data)
    assert i2t > 0.7 and t2i > 0.7, (i2t, t2i)


def test_ugach_teacher_learns_and_encodes_discriminator_outputs():
    data = load_tiny()
    torch.manual_seed(0)
    teacher = build("teacher", "ugach", epochs=2, pretrain_epochs=2, hidden=256)  # official per-triplet steps, a narrower net
    train = paired(data, "train")
    teacher.fit(train, 16)
    i2t, t2i = cross_modal_map(teacher, data)
    assert i2t > 0.7 and t2i > 0.7, (i2t, t2i)
    out = teacher.encode(train.image, "image")
    assert out.min() >= -0.5 and out.max() <= 0.5  # sigmoid outputs shifted by -0.5
    want = torch.sigmoid(teacher.dis.image(train.image)) - 0.5
    torch.testing.assert_close(out, want)

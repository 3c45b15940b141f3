"""Zoo students ssah, dadh and linear: their core losses on tiny inputs, and that each learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmhbench.interfaces import Supervision
from method_helpers import build, cross_modal_map, paired
from plugins_for_tests import load_tiny


def _label_supervision():
    data = load_tiny()
    train = paired(data, "train", labels=True)
    return data, train, build("strategy", "labels").distill(None, train)


def test_ssah_pairwise_loss_forms():
    from cmhbench_plugins.students.ssah import pairwise_loss

    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    theta = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    sp = torch.log1p(torch.exp(theta))
    torch.testing.assert_close(pairwise_loss(s, theta, "nll"), (sp - s * theta).sum())
    torch.testing.assert_close(pairwise_loss(s, theta, "squared"), 0.5 * ((0.999 * s * theta - sp) ** 2).sum())


@pytest.mark.parametrize("kind", ["nll", "squared"])
def test_ssah_lean_pairwise_loss_equals_the_graph(kind, monkeypatch):
    from cmhbench_plugins.students import ssah

    g = torch.Generator().manual_seed(3)
    a0 = torch.randn(12, 8, generator=g)
    b = 2 * torch.randn(50, 8, generator=g)  # |theta| up to ~20: both softplus regimes
    s = (torch.rand(12, 50, generator=g) < 0.3).float()
    results = []
    for lean_above in (10**9, 0):  # the graph, then the lean function (12 x 50 entries > 0)
        monkeypatch.setattr(ssah, "LEAN_PAIRWISE_ENTRIES", lean_above)
        monkeypatch.setattr(ssah, "LEAN_CHUNK_ENTRIES", 3 * 50)  # 3-row chunks
        a = a0.clone().requires_grad_()
        loss = 1.7 * ssah.pairwise_product_loss(s, a, b, kind)
        loss.backward()
        results.append((loss.detach(), a.grad))
    assert torch.equal(results[0][0], 1.7 * ssah.pairwise_loss(s, 0.5 * a0 @ b.T, kind))  # the same expression
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-4 * float(results[0][1].abs().max()))


def test_dadh_weighted_cosine_triplet_by_hand():
    from cmhbench_plugins.students.dadh import weighted_cosine_triplet

    src = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tgt = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    rel = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = rel > 0
    # Row 0: Z = 1 (one gain (2-1)/log2(2)); positive j=0, negative k=1, weight 1.
    # d_00 = 1 - cos(45deg), d_01 = 1 - cos(135deg).
    c = 2**-0.5
    row0 = max(0.0, (1 - c) - (1 + c) + 0.4)
    # Row 1: positive j=1 (d = 1 - c), negative k=0 (d = 1 - c): loss = margin.
    row1 = 0.4
    got = weighted_cosine_triplet(src, tgt, rel, pos, 0.4)
    assert abs(float(got) - (row0 + row1)) < 1e-6
    # Graded relevance: gains (2^r - 1) / ideal DCG.
    rel2 = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    got2 = weighted_cosine_triplet(src, tgt, rel2, rel2 > 0, 0.4)
    assert abs(float(got2) - (row0 + row1)) < 1e-6  # row-normalised gains stay 1 with one positive


def test_linear_student_has_linear_heads_and_learns():
    data, train, sup = _label_supervision()
    torch.manual_seed(0)
    student = build("student", "linear", epochs=100, lr_start=0.01)
    student.fit(train.without_labels(), Supervision(sup.similarity), 16)
    assert all(isinstance(h, torch.nn.Linear) for h in student.heads.values())
    i2t, t2i = cross_modal_map(student, data)
    assert i2t > 0.8 and t2i > 0.8, (i2t, t2i)


def test_ssah_student_learns_from_soft_labels():
    data, train, sup = _label_supervision()
    torch.manual_seed(0)
    # LabNet reads the soft labels; official losses, rates and schedule, narrow nets and batches for 160 items
    student = build("student", "ssah", label_hidden=64, text_hidden=64, batch_size=32, epochs=3)
    student.fit(train.without_labels(), Supervision(sup.similarity, sup.soft_labels), 16)
    i2t, t2i = cross_modal_map(student, data)
    assert i2t > 0.9 and t2i > 0.9, (i2t, t2i)  # chance ~0.25; got 1.00 / 1.00


def test_ssah_student_learns_from_similarity_alone_as_ukd_pairs_it():
    data, train, sup = _label_supervision()
    torch.manual_seed(0)
    # no soft labels: UKD's student (official nets, schedule and rate); batches of 32 for 160 items
    student = build("student", "ssah", paired_batch=32)
    student.fit(train.without_labels(), Supervision(sup.similarity), 16)
    i2t, t2i = cross_modal_map(student, data)
    assert i2t > 0.9 and t2i > 0.9, (i2t, t2i)  # chance ~0.25; got 1.00 / 1.00


def test_dadh_student_learns_from_similarity_alone():
    data, train, sup = _label_supervision()
    torch.manual_seed(0)
    student = build("student", "dadh", hidden=64)  # the official 300 epochs and lr, a narrow generator
    student.fit(train.without_labels(), Supervision(sup.similarity), 16)
    i2t, t2i = cross_modal_map(student, data)
    assert i2t > 0.8 and t2i > 0.8, (i2t, t2i)  # chance ~0.25; got 0.90 / 0.91


def test_dadh_triplet_matches_the_triple_sum_with_graded_relevance():
    from cmhbench_plugins.students.dadh import weighted_cosine_triplet

    g = torch.Generator().manual_seed(3)
    src, tgt = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)
    labels = (torch.rand(7, 5, generator=g) < 0.4).float()
    rel = labels @ labels.T
    pos = rel > 0
    d = (1 - torch.nn.functional.cosine_similarity(src[:, None], tgt[None], dim=-1)).clamp(min=0)
    want = 0.0
    for i in range(7):
        ideal = sorted(rel[i].tolist(), reverse=True)
        z = max(sum((2**r - 1) / np.log2(rank + 2) for rank, r in enumerate(ideal)), 1e-12)
        gain = [(2 ** float(r) - 1) / z for r in rel[i]]
        for j in range(7):
            for k in range(7):
                if pos[i, j] and not pos[i, k]:
                    want += max(0.0, (gain[j] - gain[k]) * float(d[i, j] - d[i, k] + 0.3))
    assert abs(float(weighted_cosine_triplet(src, tgt, rel, pos, 0.3)) - want) < 1e-4 * max(1.0, want)

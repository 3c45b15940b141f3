"""DGCPN (Atmegal/DGCPN @ 9f62c56): the similarity target, the loss and the three-step update against
small independent computations written from the official equations, the official networks, the
training-set size rule, and that the teacher learns on the tiny structured data (chance mAP about 0.25)."""

from __future__ import annotations

import copy

import pytest
import torch

from method_helpers import build, cross_modal_map, paired, run_tiny
from plugins_for_tests import load_tiny


def reference_target(image, text, a1, a2, knn_number, scale):
    """train_div.py:78-103 with plain loops: A = a1 cos_T + (1 - a1) cos_I; per row drop the knn_number
    smallest entries and the largest, normalise to sum 1; S = 2[(1 - a2) A + a2 scale P P^T] - 1."""
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    a = a1 * unit(text) @ unit(text).T + (1 - a1) * unit(image) @ unit(image).T
    n = a.shape[0]
    p = torch.zeros_like(a)
    for r in range(n):
        ascending = sorted(range(n), key=lambda j: a[r, j].item())
        for j in ascending[knn_number:-1]:
            p[r, j] = a[r, j]
        p[r] /= p[r].sum()
    return 2 * ((1 - a2) * a + a2 * scale * p @ p.T) - 1, p


def reference_loss(code_i, code_t, s, k=1.5, dw=1.0, cw=1.0):
    """train_div.py:105-131 entry by entry: pair term on the diagonal, three off-diagonal terms
    averaged over all m^2 entries, four consistency MSEs."""
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    bi, bt = unit(code_i), unit(code_t)
    ii, tt, it = bi @ bi.T, bt @ bt.T, bi @ bt.T
    m = s.shape[0]
    pair = sum((it[a, a] - k) ** 2 for a in range(m)) / m
    dis = sum(((x[a, b] - s[a, b]) ** 2 for x in (tt, it, ii) for a in range(m) for b in range(m) if a != b)) / m**2
    cons = sum(((x - y) ** 2).mean() for x, y in ((it, ii), (it, tt), (ii, tt), (it, it.T)))
    return pair + dw * dis + cw * cons


def features(n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 6, generator=g, dtype=torch.float64), torch.rand(n, 4, generator=g, dtype=torch.float64)


def test_knn_graph_keeps_the_n_minus_knn_minus_1_nearest_others():
    from cmhbench_plugins.teachers.dgcpn import neighbour_distribution

    # one-dimensional images on a line, text weight 0: the affinity ranks items by position
    image = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.3], [1.0, 0.7], [0.0, 1.0]], dtype=torch.float64)
    text = torch.ones(5, 1, dtype=torch.float64)
    p = neighbour_distribution(image, text, 0.0, knn_number=2)  # 5 - 2 - 1 = 2 neighbours, self excluded
    assert torch.equal(p > 0, torch.tensor([[0, 1, 1, 0, 0], [1, 0, 1, 0, 0], [1, 1, 0, 0, 0],
                                            [0, 1, 1, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.bool))
    torch.testing.assert_close(p.sum(1), torch.ones(5, dtype=torch.float64))
    cos = image / image.norm(dim=1, keepdim=True)
    a = cos @ cos.T
    torch.testing.assert_close(p[0, 1] / p[0, 2], a[0, 1] / a[0, 2])  # kept entries keep their affinities


@pytest.mark.parametrize("knn_number", [0, 3, 7])
def test_target_matches_the_official_equations(knn_number):
    from cmhbench_plugins.teachers.dgcpn import dgcpn_target, neighbour_distribution

    image, text = features()
    want, want_p = reference_target(image, text, 0.01, 0.3, knn_number, 7.2)
    torch.testing.assert_close(dgcpn_target(image, text, 0.01, 0.3, knn_number, 7.2), want)
    torch.testing.assert_close(neighbour_distribution(image, text, 0.01, knn_number), want_p)
    # row chunks of one row give the same P
    torch.testing.assert_close(neighbour_distribution(image, text, 0.01, knn_number, chunk_elements=1), want_p)
    # other weights: text 0.4, coherence 0.6
    want, _ = reference_target(image, text, 0.4, 0.6, knn_number, 3.0)
    torch.testing.assert_close(dgcpn_target(image, text, 0.4, 0.6, knn_number, 3.0), want)


def test_minibatch_blocks_equal_the_full_target():
    from cmhbench_plugins.teachers.dgcpn import coherence_target, dgcpn_target, joint_affinity, neighbour_distribution

    image, text = features(12, seed=3)
    full = dgcpn_target(image, text, 0.01, 0.3, 5, 9.6)
    p = neighbour_distribution(image, text, 0.01, 5)
    idx = torch.tensor([7, 2, 11, 0])
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    block = coherence_target(joint_affinity(unit(image)[idx], unit(text)[idx], 0.01), p[idx], p[idx], 0.3, 9.6)
    torch.testing.assert_close(block, full[idx][:, idx])


def test_size_rule_gives_the_official_values_at_5000_pairs():
    from cmhbench_plugins.teachers.dgcpn import DGCPNConfig, graph_sizes

    c = DGCPNConfig()
    assert graph_sizes(c, 5000) == (3000, 4000.0)  # train.py:61,63
    assert graph_sizes(c, 2173) == (1304, pytest.approx(1738.4))
    assert graph_sizes(DGCPNConfig(knn_number=100, scale=50.0), 2173) == (100, 50.0)
    with pytest.raises(ValueError, match="no neighbour"):
        graph_sizes(DGCPNConfig(knn_number=99), 100)


def test_loss_matches_the_official_equations():
    from cmhbench_plugins.teachers.dgcpn import dgcpn_loss

    g = torch.Generator().manual_seed(1)
    ci, ct = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(5, 8, generator=g, dtype=torch.float64)
    s = torch.rand(5, 5, generator=g, dtype=torch.float64) * 3 - 1.5
    torch.testing.assert_close(dgcpn_loss(ci, ct, s, 1.5, 1.0, 1.0), reference_loss(ci, ct, s))
    want = reference_loss(ci, ct.sign(), s, 1.2, 0.5, 2.0)
    torch.testing.assert_close(dgcpn_loss(ci, ct.sign(), s, 1.2, 0.5, 2.0), want)
    # the diagonal of S is masked out of the similarity terms
    s2 = s.clone()
    s2.diagonal().fill_(100.0)
    torch.testing.assert_close(dgcpn_loss(ci, ct, s2, 1.5, 1.0, 1.0), dgcpn_loss(ci, ct, s, 1.5, 1.0, 1.0))


def test_three_sequential_steps_per_batch_match_the_official_update():
    teacher = build("teacher", "dgcpn", hidden=8, dropout=0.0)
    torch.manual_seed(0)
    teacher.build(6, 4, 5)
    ref_i, ref_t = (copy.deepcopy(teacher.nets[m]) for m in ("image", "text"))
    sgd = lambda net: torch.optim.SGD(net.parameters(), lr=0.005, momentum=0.9, weight_decay=5e-4)  # noqa: E731
    opt_i, opt_t = sgd(ref_i), sgd(ref_t)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):  # several batches: momentum buffers carry over
        x, y = torch.randn(6, 6, generator=g), torch.randn(6, 4, generator=g)
        s = torch.rand(6, 6, generator=g) * 2 - 1
        teacher.train_batch(x, y, s)
        # train_div.py:149-172: joint step; fresh forward; image vs sign(text); text vs sign(image)
        loss = reference_loss(torch.tanh(ref_i(x)), torch.tanh(ref_t(y)), s)
        opt_i.zero_grad(); opt_t.zero_grad(); loss.backward(); opt_i.step(); opt_t.step()  # noqa: E702
        hi, ht = torch.tanh(ref_i(x)), torch.tanh(ref_t(y))
        loss_i = reference_loss(hi, ht.sign().detach(), s)
        opt_i.zero_grad(); loss_i.backward(retain_graph=True); opt_i.step()  # noqa: E702
        loss_t = reference_loss(hi.sign().detach(), ht, s)
        opt_t.zero_grad(); loss_t.backward(); opt_t.step()  # noqa: E702
    for mine, ref in ((teacher.nets["image"], ref_i), (teacher.nets["text"], ref_t)):
        for a, b in zip(mine.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b)


def test_official_networks():
    teacher = build("teacher", "dgcpn")
    torch.manual_seed(0)
    teacher.build(128, 10, 32)
    for m, d in (("image", 128), ("text", 10)):
        net = teacher.nets[m]
        kinds = [type(layer).__name__ for layer in net]
        assert kinds == ["Linear", "ReLU", "Dropout", "Linear"]
        assert net[0].weight.shape == (4096, d) and net[3].weight.shape == (32, 4096) and net[2].p == 0.5
    assert abs(teacher.nets["text"][3].weight.std().item() - 0.3) < 0.005  # models.py:44
    assert teacher.nets["image"][3].weight.abs().max().item() <= 4096**-0.5  # PyTorch default init
    x = torch.rand(4, 128)
    torch.testing.assert_close(teacher.encode(x, "image"), teacher.encode(x, "image"))  # dropout off


def test_dgcpn_teacher_learns_on_structured_data():
    data = load_tiny()
    torch.manual_seed(0)
    teacher = build("teacher", "dgcpn", epochs=10)  # official width; 10 epochs instead of 100
    teacher.fit(paired(data, "train"), 16)
    i2t, t2i = cross_modal_map(teacher, data)
    assert i2t > 0.9 and t2i > 0.9, (i2t, t2i)


def test_dgcpn_runs_from_the_cli_on_tiny_data(tmp_path, test_plugins):
    data, _ = run_tiny(tmp_path, "--teacher", "dgcpn", "--student", "none", "--bits", "8",
                       "--set", "teacher.epochs=10", "--set", "teacher.hidden=128")
    assert data["metrics"]["i2t"]["map"] > 0.6 and data["metrics"]["t2i"]["map"] > 0.6, data["metrics"]


def _graph_features(n, seed, duplicates=0):
    g = torch.Generator().manual_seed(seed)
    image, text = torch.rand(n, 40, generator=g), (torch.rand(n, 12, generator=g) < 0.3).float()
    text[:, 0] = 1.0  # no empty tag row
    if duplicates:  # exact duplicate items: tied affinities in every row
        image[-duplicates:], text[-duplicates:] = image[:duplicates], text[:duplicates]
    return image, text


@pytest.mark.parametrize("knn_number", [0, 1, 40, 70, 98])
@pytest.mark.parametrize("duplicates", [0, 30])
def test_on_demand_rows_of_p_equal_the_kept_matrix(knn_number, duplicates):
    from cmhbench_plugins.teachers.dgcpn import NeighbourRows, neighbour_distribution

    image, text = _graph_features(100, seed=knn_number, duplicates=duplicates)
    dense = neighbour_distribution(image, text, 0.01, knn_number)
    graph = NeighbourRows(image, text, 0.01, knn_number)
    rows = graph.rows(torch.arange(100))
    assert torch.equal(rows > 0, dense > 0)  # the same kept sets, ties included (stable order)
    torch.testing.assert_close(rows, dense, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(rows.sum(1), torch.ones(100))


def test_on_demand_rows_do_not_depend_on_the_request():
    from cmhbench_plugins.teachers.dgcpn import NeighbourRows

    image, text = _graph_features(150, seed=4, duplicates=20)
    graph = NeighbourRows(image, text, 0.01, 90)
    whole = graph.rows(torch.arange(150))
    g = torch.Generator().manual_seed(1)
    for size in (1, 7, 32, 33, 64):  # minibatches of any size, rows in any order and tile position
        idx = torch.randperm(150, generator=g)[:size]
        assert torch.equal(graph.rows(idx), whole[idx])


def test_dgcpn_fit_without_the_kept_p_matches_the_dense_fit(monkeypatch):
    from cmhbench import interfaces

    data = load_tiny()
    train = paired(data, "train")
    outputs = []
    for cache in (interfaces.DENSE_CACHE_BYTES, 0):  # 0: P is never kept, rows on demand
        monkeypatch.setattr(interfaces, "DENSE_CACHE_BYTES", cache)
        torch.manual_seed(0)
        teacher = build("teacher", "dgcpn", epochs=3, hidden=64)
        teacher.fit(train, 16)
        outputs.append(teacher.encode(train.image, "image"))
    # targets equal up to float rounding: the same training, to rounding
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-4, rtol=0)

"""Built-in methods: their formulas on tiny inputs, and that each learns on structured data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmhbench.config import resolve_config
from cmhbench.evaluation import retrieval_metrics
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, Supervision
from cmhbench.plugins import get_registry
from cmhbench_plugins.strategies.ukd import knn_mask
from plugins_for_tests import load_tiny


def build(kind, name, **overrides):
    spec = get_registry().method(kind, name)
    config = resolve_config(spec.config, {k: str(v) for k, v in overrides.items()}, owner=name)
    return spec.build(config, RunContext(seed=11))


def paired(data, split, labels=False):
    idx = getattr(data.splits, split)
    return PairedFeatures(
        torch.from_numpy(data.image[idx]), torch.from_numpy(data.text[idx]),
        torch.from_numpy(data.labels[idx].astype(np.float32)) if labels else None,
    )


def cross_modal_map(model, data):
    q, db = paired(data, "query"), paired(data, "database")
    ql, dl = data.labels[data.splits.query], data.labels[data.splits.database]
    with torch.no_grad():
        codes = {m: (model.encode(x.get(m), m)) for x in (q,) for m in (Modality.IMAGE, Modality.TEXT)}
        db_codes = {m: (model.encode(db.get(m), m)) for m in (Modality.IMAGE, Modality.TEXT)}
    for value in list(codes.values()) + list(db_codes.values()):
        assert value.shape[1] == 16 and torch.isfinite(value).all()
    i2t = retrieval_metrics(torch.sign(codes[Modality.IMAGE]), torch.sign(db_codes[Modality.TEXT]), ql, dl)["map"]
    t2i = retrieval_metrics(torch.sign(codes[Modality.TEXT]), torch.sign(db_codes[Modality.IMAGE]), ql, dl)["map"]
    return i2t, t2i


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_mask_matches_brute_force(metric):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5))
    mask = knn_mask(torch.from_numpy(x), 6, metric).numpy()
    if metric == "cosine":
        z = x / np.linalg.norm(x, axis=1, keepdims=True)
        key = -(z @ z.T)
    else:
        key = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    for i in range(40):
        want = set(np.argsort(key[i], kind="stable")[:6].tolist())
        assert set(np.flatnonzero(mask[i]).tolist()) == want
        assert mask[i, i]


def test_ukd_similarity_is_a_symmetric_union_of_neighbour_sets():
    data = load_tiny()
    train = paired(data, "train")
    teacher = build("teacher", "djsrh", epochs=3, hidden=32)
    teacher.fit(train, 16)
    sup = build("strategy", "ukd", k=10).distill(teacher, train)
    s = sup.similarity
    assert torch.equal(s, s.T) and set(torch.unique(s).tolist()) <= {0.0, 1.0}
    assert torch.all(torch.diagonal(s) == 1) and torch.all(s.sum(1) >= 10)
    with torch.no_grad():
        out_i = teacher.encode(train.image, Modality.IMAGE)
        out_t = teacher.encode(train.text, Modality.TEXT)
    union = knn_mask(out_i, 10) | knn_mask(out_t, 10)
    assert torch.equal(s.bool(), union | union.T)
    sim = build("strategy", "ukd", mode="sim").distill(teacher, train).similarity
    assert sim.min() >= 0 and sim.max() <= 1 and torch.allclose(sim, sim.T)


def test_labels_strategy_is_label_overlap():
    data = load_tiny()
    train = paired(data, "train", labels=True)
    sup = build("strategy", "labels").distill(None, train)
    want = (train.labels @ train.labels.T > 0).float()
    assert torch.equal(sup.similarity, want)
    with pytest.raises(ValueError):
        build("strategy", "labels").distill(None, paired(data, "train"))


def test_djsrh_joint_affinity_formula():
    model = build("teacher", "djsrh", beta=0.7, eta=0.4, mu=1.5)
    image = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    text = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    cos = lambda x: (x / x.norm(dim=1, keepdim=True)) @ (x / x.norm(dim=1, keepdim=True)).T  # noqa: E731
    s = 0.7 * (2 * cos(image) - 1) + 0.3 * (2 * cos(text) - 1)
    want = 1.5 * (0.6 * s + 0.4 * s @ s.T / 3)
    torch.testing.assert_close(model.joint_affinity(image, text), want)


def test_djsrh_teacher_learns_on_structured_data():
    data = load_tiny()
    torch.manual_seed(0)
    teacher = build("teacher", "djsrh", epochs=30, hidden=64)
    teacher.fit(paired(data, "train"), 16)
    i2t, t2i = cross_modal_map(teacher, data)
    # Chance level on this 4-class data is about 0.25.
    assert i2t > 0.6 and t2i > 0.6, (i2t, t2i)


def test_dcmh_student_learns_from_label_similarity():
    data = load_tiny()
    train = paired(data, "train", labels=True)
    sup = build("strategy", "labels").distill(None, train)
    torch.manual_seed(0)
    student = build("student", "dcmh", epochs=60, image_hidden=64, text_hidden=64)
    student.fit(train.without_labels(), Supervision(sup.similarity), 16)
    i2t, t2i = cross_modal_map(student, data)
    assert i2t > 0.8 and t2i > 0.8, (i2t, t2i)

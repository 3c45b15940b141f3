"""Strategy ``sakdh``: its fused, reconstructed similarity on hand-made outputs, and that it carries
label information on structured data well enough for a DCMH student to learn."""

from __future__ import annotations

import numpy as np
import torch

from cmhbench.interfaces import Modality, PairedFeatures, Supervision
from method_helpers import build, cross_modal_map, paired
from plugins_for_tests import load_tiny


class FixedTeacher:
    """A stub teacher whose ``encode`` returns fixed outputs per modality."""

    def __init__(self, image: np.ndarray, text: np.ndarray) -> None:
        self.out = {Modality.IMAGE: torch.tensor(image, dtype=torch.float32),
                    Modality.TEXT: torch.tensor(text, dtype=torch.float32)}

    def encode(self, x, modality):
        return self.out[Modality(modality)]


def _reference(image, text, beta, alignment, eta):
    """Direct O(n^3) computation of S_R in float64."""
    zi = image / np.linalg.norm(image, axis=1, keepdims=True)
    zt = text / np.linalg.norm(text, axis=1, keepdims=True)
    s_i, s_t, s_it = zi @ zi.T, zt @ zt.T, zi @ zt.T
    s_f = (1 - alignment) * (beta * s_i + (1 - beta) * s_t) + alignment * (s_it + s_it.T) / 2
    return (1 - eta) * s_f + eta * s_f @ s_f.T / len(image)


def test_sakdh_fused_reconstruction_matches_direct_computation():
    rng = np.random.default_rng(3)
    n = 9
    image, text = rng.standard_normal((n, 6)), rng.standard_normal((n, 6))
    teacher = FixedTeacher(image, text)
    train = PairedFeatures(torch.zeros(n, 2), torch.zeros(n, 3))
    want = _reference(image, text, beta=0.7, alignment=0.3, eta=0.4)

    soft = build("strategy", "sakdh", beta=0.7, alignment=0.3, eta=0.4, mode="soft").distill(teacher, train).similarity
    want_soft = (want + 1) / 2
    np.fill_diagonal(want_soft, 1.0)
    np.testing.assert_allclose(soft.numpy(), want_soft, atol=1e-5)

    sup = build("strategy", "sakdh", beta=0.7, alignment=0.3, eta=0.4, similar_fraction=0.25).distill(teacher, train)
    off = want[~np.eye(n, dtype=bool)]
    k = round(0.25 * n * (n - 1))
    threshold = np.sort(off)[::-1][k - 1]
    want_bin = (want >= threshold).astype(np.float32)
    np.fill_diagonal(want_bin, 1.0)
    np.testing.assert_array_equal(sup.similarity.numpy(), want_bin)
    s = sup.similarity
    assert torch.equal(s, s.T) and torch.all(torch.diagonal(s) == 1)
    assert abs(float((s.sum() - n) / (n * (n - 1))) - 0.25) < 0.05


def test_sakdh_equal_weights_without_reconstruction_is_the_fused_code_similarity():
    # beta = alignment = 0.5, eta = 0: S_F = Z_F Z_F^T with Z_F = (Z_I + Z_T) / 2.
    image = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    text = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, -1.0]])
    zi = image / np.linalg.norm(image, axis=1, keepdims=True)
    zt = text / np.linalg.norm(text, axis=1, keepdims=True)
    z = (zi + zt) / 2
    want = (z @ z.T + 1) / 2
    np.fill_diagonal(want, 1.0)
    got = build("strategy", "sakdh", eta=0.0, mode="soft").distill(
        FixedTeacher(image, text), PairedFeatures(torch.zeros(3, 1), torch.zeros(3, 1))
    ).similarity
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_sakdh_similarity_agrees_with_labels_and_teaches_dcmh():
    data = load_tiny()
    train = paired(data, "train", labels=True)
    torch.manual_seed(0)
    teacher = build("teacher", "djsrh", epochs=30, hidden=64)
    teacher.fit(train.without_labels(), 16)
    sup = build("strategy", "sakdh", similar_fraction=0.2).distill(teacher, train.without_labels())
    s = sup.similarity
    assert torch.equal(s, s.T) and torch.all(torch.diagonal(s) == 1)
    assert set(torch.unique(s).tolist()) <= {0.0, 1.0}
    n = s.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    truth = (train.labels @ train.labels.T > 0)[off]
    similar = s.bool()[off]
    base_rate = float(truth.float().mean())  # about 0.25 on 4 balanced classes
    precision = float(truth[similar].float().mean())
    assert base_rate < 0.35 and precision > 0.8, (base_rate, precision)

    torch.manual_seed(0)
    student = build("student", "dcmh", text_hidden=256)  # official schedule and image hash layer; a narrower text net
    student.fit(train.without_labels(), Supervision(s), 16)
    i2t, t2i = cross_modal_map(student, data)
    # Chance level on this 4-class data is about 0.25.
    assert i2t > 0.6 and t2i > 0.6, (i2t, t2i)

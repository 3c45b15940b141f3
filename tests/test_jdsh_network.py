"""``jdsh`` keeps the official networks after the feature point (KaiserLew/JDSH caa8224, ``models.py``).

Image: the frozen AlexNet's fc7 output feeds one trainable ``hash_layer = Linear(4096, bits)``
(``models.py:8-30``), so on features the image network is exactly ``Linear(d_image, bits)``. Text: the whole
``Linear(d_text, 4096) -> ReLU -> Linear(4096, bits)`` (``models.py:37-40``). Codes ``tanh(sqrt(epoch + 1) h)``.
"""

from __future__ import annotations

import math

import torch

from cmhbench.interfaces import Modality
from method_helpers import (assert_codes_are_tanh_of_scaled_heads, assert_hash_layer_and_text_net, build, cross_modal_map,
                            fit_tiny_teacher, paired, run_tiny)
from plugins_for_tests import load_tiny


def _fit_tiny_batch(bits=8, **overrides):
    return fit_tiny_teacher("jdsh", bits, **overrides)


def test_default_networks_are_the_official_ones():
    model = _fit_tiny_batch(bits=8)  # defaults: hidden = 4096 (official text width)
    assert_hash_layer_and_text_net(model)  # the single hash layer, nothing before it
    image = model.heads[Modality.IMAGE]
    # official nn.Linear initialisation (PyTorch default): weights in +-1/sqrt(fan_in) before training;
    # after one epoch of SGD at lr 0.01 they are still close to that range
    assert image.weight.abs().max() < 1.5 / math.sqrt(20)


def test_codes_are_tanh_of_the_scaled_hash_layer():
    model = _fit_tiny_batch(bits=8, hidden=32)
    assert model.code_scale == 1.0  # sqrt(epoch + 1) after the single epoch 0
    assert_codes_are_tanh_of_scaled_heads(model, model.code_scale, [Modality.IMAGE])
    model3 = _fit_tiny_batch(bits=8, hidden=32, epochs=3)
    assert model3.code_scale == math.sqrt(3.0)


def test_jdsh_with_official_networks_learns_on_tiny_data():
    data = load_tiny()
    torch.manual_seed(0)
    model = build("teacher", "jdsh", epochs=15, hidden=256)
    model.fit(paired(data, "train"), 16)
    i2t, t2i = cross_modal_map(model, data)
    assert i2t > 0.8 and t2i > 0.8, (i2t, t2i)


def test_jdsh_runs_end_to_end_with_its_defaults_but_few_epochs(tmp_path, test_plugins):
    data, codes = run_tiny(tmp_path, "--teacher", "jdsh", "--student", "none", "--bits", "16", "--set", "teacher.epochs=10")
    assert data["config"]["teacher"]["hidden"] == 4096 and data["config"]["teacher"]["epochs"] == 10
    assert codes["query_image_codes"].shape[1] == 16
    assert data["metrics"]["i2t"]["map"] > 0.7 and data["metrics"]["t2i"]["map"] > 0.7, data["metrics"]

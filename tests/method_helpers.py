"""Helpers the method tests share: build a registered method, slice the tiny data, score codes,
run the CLI on the tiny data."""

from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from cmhbench.cli import app
from cmhbench.config import resolve_config
from cmhbench.evaluation import retrieval_metrics
from cmhbench.interfaces import Modality, PairedFeatures, RunContext
from cmhbench.plugins import get_registry


def build(kind, name, seed=11, **overrides):
    """A registered method of ``kind`` with hyperparameter ``overrides`` (validated like ``--set``)."""
    spec = get_registry().method(kind, name)
    config = resolve_config(spec.config, {k: str(v) for k, v in overrides.items()}, owner=name)
    return spec.build(config, RunContext(seed=seed))


def paired(data, split, labels=False):
    """The ``split`` ("train", "query", "database") of ``data`` as :class:`PairedFeatures`."""
    idx = getattr(data.splits, split)
    return PairedFeatures(
        torch.from_numpy(data.image[idx]), torch.from_numpy(data.text[idx]),
        torch.from_numpy(data.labels[idx].astype(np.float32)) if labels else None,
    )


def cross_modal_map(model, data, bits=16):
    """``(i2t, t2i)`` mAP@all of ``model``'s sign codes, query vs database; asserts shapes and finiteness."""
    q, db = paired(data, "query"), paired(data, "database")
    ql, dl = data.labels[data.splits.query], data.labels[data.splits.database]
    with torch.no_grad():
        out = {(side, m): model.encode(x.get(m), m) for side, x in (("q", q), ("db", db)) for m in Modality}
    for value in out.values():
        assert value.shape[1] == bits and torch.isfinite(value).all()
    i2t = retrieval_metrics(torch.sign(out["q", Modality.IMAGE]), torch.sign(out["db", Modality.TEXT]), ql, dl)["map"]
    t2i = retrieval_metrics(torch.sign(out["q", Modality.TEXT]), torch.sign(out["db", Modality.IMAGE]), ql, dl)["map"]
    return i2t, t2i


def fit_tiny_teacher(name, bits=8, **overrides):
    """Teacher ``name`` fitted (one epoch unless ``overrides`` say otherwise) on 64 random pairs of
    20-d image and 12-d text features, torch seeded with 0."""
    torch.manual_seed(0)
    model = build("teacher", name, **{"epochs": 1, **overrides})
    model.fit(PairedFeatures(torch.randn(64, 20), torch.randn(64, 12)), bits)
    return model


def assert_hash_layer_and_text_net(model, bits=8, hidden=4096):
    """The official layout on fc7 features of a model fitted by :func:`fit_tiny_teacher`: the image
    head is the hash layer alone (``Linear(20, bits)``), the text head ``Linear(12, hidden)``, ReLU,
    ``Linear(hidden, bits)``."""
    image, text = model.heads[Modality.IMAGE], model.heads[Modality.TEXT]
    assert type(image) is torch.nn.Linear  # nothing between the fc7 feature and the hash layer
    assert tuple(image.weight.shape) == (bits, 20) and tuple(image.bias.shape) == (bits,)
    assert [type(m) for m in text] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert tuple(text[0].weight.shape) == (hidden, 12) and tuple(text[2].weight.shape) == (bits, hidden)


def assert_codes_are_tanh_of_scaled_heads(model, scale, modalities=tuple(Modality)):
    """``model.encode`` of random 20-d image / 12-d text rows equals ``tanh(scale * head(x))`` for each of
    ``modalities`` (a model fitted by :func:`fit_tiny_teacher`)."""
    width = {Modality.IMAGE: 20, Modality.TEXT: 12}
    for modality in modalities:
        x = torch.randn(5, width[modality])
        with torch.no_grad():
            want = torch.tanh(scale * model.heads[modality](x))
        torch.testing.assert_close(model.encode(x, modality), want)


def run_tiny(tmp_path, *args):
    """``cmhbench run --dataset tiny ARGS --results tmp_path -q``, checked to succeed; returns the one
    result file's record (a dict) and its codes (the ``NpzFile`` it names)."""
    res = CliRunner().invoke(app, ["run", "--dataset", "tiny", *args, "--results", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    (result,) = tmp_path.rglob("*.json")
    record = json.loads(result.read_text())
    return record, np.load(result.with_name(record["codes_file"]))

"""Helpers the method tests share: build a registered method, slice the tiny data, score codes."""

from __future__ import annotations

import numpy as np
import torch

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

"""Choose hyperparameters without touching the query set: train/validate inside the training split.

The training split of a dataset is cut into a fit part (70%) and a validation part (30%, the
queries; the fit part is the database). A student is trained on the ``labels`` similarity of the
fit part, or on a teacher's distilled similarity, and the validation mAP is printed as a table,
one row per setting. Example:

    CMHBENCH_DATA=../shared/data python benchmarks/trainval.py --dataset wiki --student dadh \
        --setting epochs=50 --setting epochs=100
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from cmhbench.config import resolve_config
from cmhbench.evaluation import retrieval_metrics
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, Supervision
from cmhbench.plugins import get_registry
from cmhbench.training import seed_everything

app = typer.Typer(add_completion=False)


def _overrides(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if item)


def _build(kind: str, name: str, overrides: dict[str, str], seed: int):
    spec = get_registry().method(kind, name)
    return spec.build(resolve_config(spec.config, overrides, owner=name), RunContext(seed=seed))


@app.command()
def main(
    dataset: str = "wiki",
    student: str = "dcmh",
    teacher: Optional[str] = typer.Option(None, help="Distil from this teacher instead of the fit part's labels."),
    strategy: str = "ukd",
    setting: list[str] = typer.Option([""], help="Student overrides a=1,b=2; one table row each."),
    teacher_setting: str = "",
    bits: int = 32,
    seed: int = 0,
) -> None:
    """Print validation mAP (i2t, t2i) and training seconds per student setting."""
    root = Path(os.environ.get("CMHBENCH_DATA", "../shared/data"))
    data = get_registry().datasets.get(dataset).load(root / dataset)
    train = np.asarray(data.splits.train)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(train))
    cut = int(0.7 * len(train))
    fit, val = train[perm[:cut]], train[perm[cut:]]
    part = lambda idx, labels=False: PairedFeatures(  # noqa: E731
        torch.from_numpy(data.image[idx]), torch.from_numpy(data.text[idx]),
        torch.from_numpy(data.labels[idx].astype(np.float32)) if labels else None,
    )
    if teacher:
        seed_everything(seed)
        model = _build("teacher", teacher, _overrides(teacher_setting), seed)
        model.fit(part(fit), bits)
        sup = _build("strategy", strategy, {}, seed).distill(model, part(fit))
    else:
        sup = _build("strategy", "labels", {}, seed).distill(None, part(fit, labels=True))
    table = Table(title=f"{dataset} train-split validation, {teacher or 'labels'} -> {student}, {bits} bits")
    for col in ("setting", "val i2t", "val t2i", "fit s"):
        table.add_column(col)
    for text in setting:
        seed_everything(seed)
        model = _build("student", student, _overrides(text), seed)
        start = time.perf_counter()
        model.fit(part(fit), Supervision(sup.similarity, sup.soft_labels), bits)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            q_i, q_t = model.encode(part(val).image, Modality.IMAGE), model.encode(part(val).text, Modality.TEXT)
            d_i, d_t = model.encode(part(fit).image, Modality.IMAGE), model.encode(part(fit).text, Modality.TEXT)
        ql, dl = data.labels[val], data.labels[fit]
        i2t = retrieval_metrics(torch.sign(q_i), torch.sign(d_t), ql, dl)["map"]
        t2i = retrieval_metrics(torch.sign(q_t), torch.sign(d_i), ql, dl)["map"]
        table.add_row(text or "(defaults)", f"{i2t:.4f}", f"{t2i:.4f}", f"{seconds:.1f}")
    Console().print(table)


if __name__ == "__main__":
    app()

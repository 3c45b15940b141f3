"""Published mAP tables bundled with cmhbench, each with its citation and protocol.

Reported numbers are shown as separate, clearly marked rows beside reproduced ones: they come
from other splits, features and code, so they are context, never part of a reproduced ranking.
Each table is a CSV (``dataset, protocol, method, direction, bits, metric, value``) with a JSON
sidecar holding ``citation``, ``source``, ``metric``, ``protocol`` and ``note``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import pandas as pd


@dataclass(frozen=True)
class ReportedTable:
    """Published values for one dataset and metric: ``values`` indexed (method, direction, bits)."""

    name: str
    citation: str
    source: str
    metric_definition: str
    protocol: str
    note: str
    values: pd.DataFrame


def _tables() -> list[tuple[str, dict, pd.DataFrame]]:
    folder = resources.files("cmhbench.leaderboard") / "reported"
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".csv"):
            meta = json.loads((folder / entry.name.replace(".csv", ".json")).read_text())
            with entry.open("r") as fh:
                out.append((entry.name[:-4], meta, pd.read_csv(fh)))
    return out


def reported_for(dataset: str, metric: str) -> Optional[ReportedTable]:
    """The first bundled table with values for ``dataset`` and ``metric``, or None."""
    for name, meta, frame in _tables():
        part = frame[(frame["dataset"] == dataset) & (frame["metric"] == metric)]
        if not part.empty:
            return ReportedTable(
                name=name, citation=meta["citation"], source=meta["source"], metric_definition=meta["metric"],
                protocol=meta["protocol"], note=meta["note"], values=part.reset_index(drop=True),
            )
    return None

"""Stored results as one long pandas DataFrame: a row per (run, direction, scalar metric)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmhbench.results.store import ResultStore

KEY_COLUMNS = ("dataset", "protocol", "teacher", "strategy", "student", "bits", "seed", "config_hash", "variant")


def results_frame(root: Path) -> pd.DataFrame:
    """Columns: the run key, ``synthetic``, ``revision``, ``split_checksum``, ``direction``, ``metric``,
    ``value``, ``path``.

    Only scalar metrics are included (curves stay in the JSON files). ``protocol`` and
    ``split_checksum`` are columns so that a table never pools results of different splits.
    """
    rows = []
    for path, result in ResultStore(root).iter_results():
        key = result["key"]
        base = {c: key.get(c, "") for c in KEY_COLUMNS}
        base["synthetic"] = bool(result["dataset"].get("synthetic", False))
        base["revision"] = result["dataset"].get("revision", "")
        base["split_checksum"] = result["dataset"].get("split_checksum", "")
        for direction, metrics in result["metrics"].items():
            for metric, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    rows.append({**base, "direction": direction, "metric": metric, "value": float(value), "path": str(path)})
    columns = [*KEY_COLUMNS, "synthetic", "revision", "split_checksum", "direction", "metric", "value", "path"]
    return pd.DataFrame(rows, columns=columns)

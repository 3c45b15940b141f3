"""Leaderboards: stored results pivoted into one row per (teacher, strategy, student, variant).

The rules that keep a leaderboard honest:

- one dataset, one protocol, one data revision and one split per table: results that mix them
  are refused with the choices named (``--protocol`` picks one protocol);
- exact duplicates (the same run stored twice) count once;
- cells are the mean and sample standard deviation over seeds, with the number of seeds;
- the best value per column is marked among label-free rows only: the ``labels`` strategy is
  the supervised upper bound and is shown apart;
- numbers reported in papers are separate, cited rows (:mod:`cmhbench.leaderboard.reported`),
  never mixed with reproduced ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from cmhbench.config import settings_tag
from cmhbench.errors import DataError
from cmhbench.leaderboard.reported import ReportedTable, reported_for
from cmhbench.results.frame import KEY_COLUMNS, results_frame

DIRECTIONS = ("i2t", "t2i")
KIND_ORDER = {"teacher": 0, "distilled": 1, "upper-bound": 2}


@dataclass
class Row:
    """One pipeline variant: its name parts, a display label and per-(direction, bits) cells."""

    teacher: str
    strategy: str
    student: str
    variant: str
    variant_label: str = ""
    cells: dict[tuple[str, int], tuple[float, float, int]] = field(default_factory=dict)
    curves: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``teacher`` (evaluated alone), ``upper-bound`` (labels strategy) or ``distilled``."""
        if self.student == "none":
            return "teacher"
        return "upper-bound" if self.strategy == "labels" else "distilled"

    @property
    def label(self) -> str:
        """Human-readable pipeline name."""
        if self.kind == "teacher":
            base = f"{self.teacher} (teacher alone)"
        elif self.teacher == "none":
            base = f"{self.strategy} → {self.student}"
        else:
            base = f"{self.teacher} → {self.strategy} → {self.student}"
        if self.kind == "upper-bound":
            base += " (supervised upper bound)"
        return f"{base} [{self.variant_label}]" if self.variant_label else base

    def score(self) -> float:
        """Mean of the cell means (to order rows and pick plot lines)."""
        return float(np.mean([c[0] for c in self.cells.values()])) if self.cells else float("nan")


@dataclass
class Leaderboard:
    """The table of one dataset under one protocol and one data revision."""

    dataset: str
    protocol: str
    revision: str
    split_checksum: str
    synthetic: bool
    metric: str
    bits: list[int]
    rows: list[Row]
    reported: Optional[ReportedTable] = None

    def best(self, direction: str, bits: int) -> Optional[float]:
        """The highest mean in a column among label-free rows."""
        values = [r.cells[(direction, bits)][0] for r in self.rows if r.kind != "upper-bound" and (direction, bits) in r.cells]
        return max(values) if values else None


def _one_group(frame: pd.DataFrame, dataset: str, protocol: Optional[str]) -> pd.DataFrame:
    part = frame[frame["dataset"] == dataset]
    if protocol is not None:
        part = part[part["protocol"] == protocol]
        if part.empty:
            known = ", ".join(sorted(frame[frame["dataset"] == dataset]["protocol"].unique()))
            raise DataError(f"no {dataset} results under protocol {protocol!r} (stored: {known})")
    groups = part[["protocol", "revision", "split_checksum"]].drop_duplicates()
    if len(groups["protocol"].unique()) > 1:
        raise DataError(
            f"{dataset} results mix protocols {', '.join(sorted(groups['protocol'].unique()))}; "
            f"choose one with --protocol"
        )
    if len(groups) > 1:
        described = "; ".join(f"revision {r.revision}, split {r.split_checksum}" for r in groups.itertuples())
        raise DataError(
            f"{dataset} results under protocol {groups['protocol'].iloc[0]} come from different data or splits "
            f"({described}); keep one set of results per data revision"
        )
    return part


def _variant_labels(part: pd.DataFrame, registry: Any = None) -> dict[tuple, str]:
    """The settings tag of every (teacher, strategy, student, variant): its hyperparameters that
    differ from the methods' defaults on the dataset, ``role.key=value`` joined by ``, ``;
    empty for a run at the defaults.

    Defaults are those of the methods as registered now (``registry``), so a row computed before
    a default changed says so; a method not registered here falls back to the ``non_default``
    record the run stored. Where two variants of a pipeline would get the same tag (they differ
    elsewhere, e.g. in evaluation settings), the settings that tell them apart are added.
    """
    labels: dict[tuple, str] = {}
    for pipeline, sub in part.groupby(["teacher", "strategy", "student"]):
        settings: dict[str, dict[str, Any]] = {}
        flat: dict[str, dict[str, Any]] = {}
        for variant in sorted(sub["variant"].unique()):
            path = sub[sub["variant"] == variant]["path"].iloc[0]
            result = json.loads(Path(path).read_text())
            settings[variant] = _non_default(result, registry)
            flat[variant] = {**_flatten(result["config"]), **{f"evaluation.{k}": v for k, v in result.get("evaluation", {}).items()}}
        tags = {v: settings_tag(s) for v, s in settings.items()}
        if len(set(tags.values())) < len(tags):
            keys = sorted({k for c in flat.values() for k in c})
            differing = [k for k in keys if len({json.dumps(c.get(k)) for c in flat.values()}) > 1]
            for variant in tags:
                extra = {k: flat[variant].get(k) for k in differing if k not in settings[variant]}
                tags[variant] = settings_tag({**settings[variant], **extra})
        for variant, tag in tags.items():
            labels[(*pipeline, variant)] = tag
    return labels


def _non_default(result: dict[str, Any], registry: Any) -> dict[str, Any]:
    """``role.key -> value`` of a stored run's settings that are not its methods' defaults, and
    ``teacher_bits`` when the run asked for a teacher code length (``--teacher-bits``)."""
    from cmhbench.config import default_config, non_default_settings

    asked = {"teacher_bits": result["key"]["teacher_bits"]} if "teacher_bits" in result.get("key", {}) else {}
    methods = result.get("methods", {})
    if registry is not None:
        try:
            specs = {role: registry.method(role, info["name"]) for role, info in methods.items()}
            defaults = {role: default_config(spec, result["key"]["dataset"]) for role, spec in specs.items()}
            return {**non_default_settings(result["config"], defaults), **asked}
        except Exception:  # noqa: BLE001 - a method or field this installation does not know
            pass
    return {**result.get("non_default", {}), **asked}


def _flatten(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{role}.{k}": v for role, values in config.items() for k, v in values.items()}


def _curves(paths: Sequence[str]) -> dict[str, Any]:
    """Mean precision-recall and precision@K curves over the seeds' result files."""
    pr_p, pr_r, pk = {d: [] for d in DIRECTIONS}, {d: [] for d in DIRECTIONS}, {d: [] for d in DIRECTIONS}
    pk_k: dict[str, list[int]] = {}
    for path in paths:
        metrics = json.loads(Path(path).read_text())["metrics"]
        for d in DIRECTIONS:
            if d not in metrics:
                continue
            pr_p[d].append(metrics[d]["pr_curve"]["precision"])
            pr_r[d].append(metrics[d]["pr_curve"]["recall"])
            if "pk_curve" in metrics[d]:
                pk[d].append(metrics[d]["pk_curve"]["precision"])
                pk_k[d] = metrics[d]["pk_curve"]["k"]
    out: dict[str, Any] = {}
    for d in DIRECTIONS:
        if pr_p[d]:
            out[d] = {
                "pr_precision": np.mean(pr_p[d], 0).tolist(),
                "pr_recall": np.mean(pr_r[d], 0).tolist(),
                "pk_k": pk_k.get(d, []),
                "pk_precision": np.mean(pk[d], 0).tolist() if pk[d] else [],
            }
    return out


def build_leaderboards(
    results_dir: Path,
    dataset: Optional[str] = None,
    protocol: Optional[str] = None,
    bits: Optional[Sequence[int]] = None,
    metric: str = "map",
    with_curves: bool = False,
    registry: Any = None,
) -> list[Leaderboard]:
    """One :class:`Leaderboard` per dataset found under ``results_dir`` (or just ``dataset``).

    ``registry`` (the methods as installed) supplies the defaults that settings tags are measured
    against; without it, each run's stored ``non_default`` record is used."""
    frame = results_frame(Path(results_dir))
    if frame.empty:
        raise DataError(f"no results under {results_dir}")
    datasets = [dataset] if dataset else sorted(frame["dataset"].unique())
    boards = []
    for name in datasets:
        if name not in set(frame["dataset"]):
            raise DataError(f"no results for dataset {name!r} under {results_dir} (stored: {', '.join(sorted(frame['dataset'].unique()))})")
        part = _one_group(frame, name, protocol)
        if metric not in set(part["metric"]):
            raise DataError(f"metric {metric!r} is not stored (available: {', '.join(sorted(part['metric'].unique()))})")
        part = part.drop_duplicates(subset=[*KEY_COLUMNS, "direction", "metric"])
        if bits:
            part = part[part["bits"].isin(list(bits))]
            if part.empty:
                raise DataError(f"no {name} results at {', '.join(map(str, bits))} bits")
        labels = _variant_labels(part, registry)
        chosen = part[part["metric"] == metric]
        rows = []
        for (teacher, strategy, student, variant), sub in chosen.groupby(["teacher", "strategy", "student", "variant"]):
            row = Row(teacher, strategy, student, variant, labels.get((teacher, strategy, student, variant), ""))
            for (direction, b), cell in sub.groupby(["direction", "bits"]):
                values = cell["value"].to_numpy(dtype=np.float64)
                std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                row.cells[(direction, int(b))] = (float(values.mean()), std, len(values))
            if with_curves:
                for b, sub_bits in sub.groupby("bits"):
                    row.curves[int(b)] = _curves(sorted(sub_bits["path"].unique()))
            rows.append(row)
        rows.sort(key=lambda r: (KIND_ORDER[r.kind], -r.score() if not math.isnan(r.score()) else 0.0, r.label))
        first = part.iloc[0]
        boards.append(
            Leaderboard(
                dataset=name, protocol=str(first["protocol"]), revision=str(first["revision"]),
                split_checksum=str(first["split_checksum"]), synthetic=bool(first["synthetic"]), metric=metric,
                bits=sorted(int(b) for b in part["bits"].unique()), rows=rows, reported=reported_for(name, metric),
            )
        )
    return boards

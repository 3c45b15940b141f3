"""Leaderboard rows say when their settings are not the methods' defaults, always, in every format."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

from cmhbench.cli import app
from cmhbench.leaderboard import build_leaderboards
from cmhbench.results.store import SCHEMA_VERSION, ResultStore, RunKey


def _run(results: Path, *args: str) -> None:
    res = CliRunner().invoke(app, ["run", "--dataset", "tiny", "--bits", "8", "--results", str(results), "-q", *args])
    assert res.exit_code == 0, res.output


def test_a_lone_shortened_run_is_tagged_and_a_default_run_is_not(tmp_path, test_plugins):
    results = tmp_path / "res"
    _run(results, "--teacher", "cvh", "--student", "none")  # the defaults
    _run(results, "--teacher", "features", "--student", "none", "--set", "projection=random")  # the only variant
    stored = {r["key"]["teacher"]: r for _, r in ResultStore(results).iter_results()}
    assert stored["cvh"]["non_default"] == {}
    assert stored["features"]["non_default"] == {"teacher.projection": "random"}

    out = tmp_path / "board"
    res = CliRunner().invoke(app, ["leaderboard", "--results", str(results), "--format", "md,csv,html", "--out", str(out)])
    assert res.exit_code == 0, res.output
    board = out / "tiny"
    md = (board / "leaderboard.md").read_text()
    assert "| features (teacher alone) [teacher.projection=random] |" in md
    assert "| cvh (teacher alone) |" in md
    assert "an untagged row ran at the defaults" in md
    rows = {r["teacher"]: r["variant_settings"] for r in csv.DictReader(io.StringIO((board / "leaderboard.csv").read_text()))}
    assert rows == {"features": "teacher.projection=random", "cvh": ""}
    html = (board / "leaderboard.html").read_text()
    assert "features (teacher alone) [teacher.projection=random]</td>" in html and "cvh (teacher alone)</td>" in html
    legend = (board / "plots" / "tiny-map-vs-bits.svg").read_text()
    assert "features (teacher alone) [teacher.projection=random]" in legend
    assert "cvh (teacher alone) [" not in legend


def test_two_variants_are_told_apart_and_the_default_stays_bare(tmp_path, test_plugins):
    results = tmp_path / "res"
    _run(results, "--teacher", "cvh", "--student", "none")
    _run(results, "--teacher", "cvh", "--student", "none", "--set", "reg=0.01")
    _run(results, "--teacher", "cvh", "--student", "none", "--set", "reg=0.001")  # the default, spelled out
    from cmhbench.plugins import get_registry

    (board,) = build_leaderboards(results, registry=get_registry())
    assert sorted(r.label for r in board.rows) == ["cvh (teacher alone)", "cvh (teacher alone) [teacher.reg=0.01]"]


def test_without_the_method_installed_the_stored_record_is_used(tmp_path):
    root = tmp_path / "res"
    key = RunKey("wiki", "wiki", "gone", "ukd", "none", 16, 0, "h1", "v1")
    metrics = {"map": 0.2, "pr_curve": {"radius": [0], "precision": [0.2], "recall": [0.1]}}
    ResultStore(root).write(key, {
        "schema": SCHEMA_VERSION, "key": dict(key.__dict__), "config": {"teacher": {"epochs": 5}},
        "methods": {"teacher": {"name": "gone"}}, "non_default": {"teacher.epochs": 5},
        "dataset": {"name": "wiki", "synthetic": False, "revision": "r", "split_checksum": "s"},
        "metrics": {"i2t": metrics, "t2i": metrics},
    }, None)
    from cmhbench.plugins import get_registry

    (board,) = build_leaderboards(root, registry=get_registry())
    assert [r.label for r in board.rows] == ["gone (teacher alone) [teacher.epochs=5]"]
    assert json.loads(next(root.rglob("*.json")).read_text())["non_default"] == {"teacher.epochs": 5}

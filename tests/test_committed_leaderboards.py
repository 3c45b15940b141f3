"""The committed leaderboards are exactly what their committed results regenerate."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmhbench.cli import app
from cmhbench.errors import ConfigError
from cmhbench.plugins import get_registry
from cmhbench.runner import Runner
from cmhbench.sweep import load_sweep
from cmhbench.sweep.execute import plan, results_outside

ROOT = Path(__file__).resolve().parent.parent / "leaderboards"
BOARDS = sorted(p for p in ROOT.iterdir() if (p / "results").is_dir() and (p / "leaderboard.md").is_file()) if ROOT.is_dir() else []


@pytest.mark.parametrize("folder", BOARDS, ids=[p.name for p in BOARDS])
def test_regenerating_a_committed_leaderboard_changes_nothing(folder, tmp_path):
    out = tmp_path / folder.name
    res = CliRunner().invoke(app, ["leaderboard", "--results", str(folder / "results"), "--dataset", folder.name,
                                   "--format", "md,csv,html", "--out", str(out)])
    assert res.exit_code == 0, res.output
    compared = ["leaderboard.md", "leaderboard.csv", "leaderboard.html"]
    compared += [str(p.relative_to(folder)) for p in sorted((folder / "plots").glob("*.svg"))]
    for name in compared:
        assert (out / name).read_text() == (folder / name).read_text(), f"{folder.name}/{name} is stale: regenerate it"
    # PNGs are regenerated too; their bytes depend on the rasteriser build, so only their set is compared.
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == sorted(p.name for p in (folder / "plots").glob("*.png"))


def test_every_leaderboard_folder_has_its_sweep_and_results():
    for folder in BOARDS:
        assert (folder / "sweep.toml").is_file(), folder
        assert list((folder / "results").rglob("*.json")), folder


@pytest.mark.parametrize("folder", BOARDS, ids=[p.name for p in BOARDS])
def test_every_committed_result_is_a_run_of_the_boards_sweep(folder):
    """No stale rows: a result of settings the sweep no longer has (a method whose config changed) is on no board."""
    try:
        sweep = load_sweep(folder / "sweep.toml", get_registry())
    except ConfigError as exc:  # e.g. $CMHBENCH_DATA unset
        pytest.skip(f"{folder.name}: {exc}")
    runner = Runner(get_registry())
    failures = plan(sweep, runner, force=False).failures
    if failures:
        pytest.skip(f"{folder.name}: its data cannot be loaded here ({failures[0].error})")
    outside = results_outside(sweep, runner)
    assert not outside, f"{folder.name}: results no run of sweep.toml names: {[str(p) for p in outside]}"

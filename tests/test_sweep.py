"""Sweeps: expansion, validation, failures, resumption after SIGKILL, worker processes and Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmhbench.cli import app
from cmhbench.errors import ConfigError, UnknownNameError
from cmhbench.plugins import get_registry
from cmhbench.results.store import ResultStore
from cmhbench.sweep import SweepExecutor, load_sweep

TESTS = Path(__file__).resolve().parent
FAST_TEACHER = '"teacher.epochs" = 2\n"teacher.hidden" = 32\n'
FAST_STUDENT = '"student.epochs" = 2\n"student.image_hidden" = 32\n"student.text_hidden" = 32\n'


def write(tmp_path: Path, body: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


GRID = f"""
name = "tiny"
results = "res"
[defaults]
datasets = ["tiny"]
bits = [8, 16]
seeds = [0, 1]
[[grid]]
teachers = ["djsrh"]
strategies = ["ukd", "labels"]
students = ["dcmh", "none"]
[grid.set]
{FAST_TEACHER}{FAST_STUDENT}
[[grid]]
teachers = ["none"]
strategies = ["labels"]
students = ["dcmh"]
[grid.set]
"student.epochs" = [2, 3]
"student.image_hidden" = 32
"student.text_hidden" = 32
"""


def keys_in(root: Path) -> Counter:
    return Counter(json.dumps(r["key"], sort_keys=True) for _, r in ResultStore(root).iter_results())


def test_expansion_pairs_strategies_with_teachers_and_deduplicates(tmp_path, test_plugins):
    sweep = load_sweep(write(tmp_path, GRID), get_registry())
    assert sweep.name == "tiny" and sweep.results_dir == tmp_path / "res"
    combos = Counter((r.teacher, r.strategy, r.student) for r in sweep.runs)
    # labels uses no teacher: never paired with djsrh; the teacher alone runs once per bits x seed.
    assert combos == {("djsrh", "ukd", "dcmh"): 4, ("djsrh", "ukd", "none"): 4, ("none", "labels", "dcmh"): 8}
    assert len(set(sweep.runs)) == len(sweep.runs) == 16
    epochs = Counter(dict(r.overrides).get("student.epochs") for r in sweep.runs if r.teacher == "none")
    assert epochs == {"2": 4, "3": 4}


@pytest.mark.parametrize(
    "body, error, pattern",
    [
        ("[[grid]]\ndatasets=['tiny']\nbits=[8]\nteachers=['djsrhh']\n", UnknownNameError, "did you mean djsrh"),
        ("[[grid]]\ndatasets=['tiny']\nbits=[8]\nteachers=['djsrh']\n[grid.set]\n'teacher.epoch'=1\n", ConfigError, "did you mean epochs"),
        ("[[grid]]\ndatasets=['tiny']\nbits=[0]\nteachers=['djsrh']\n", ConfigError, "bits must be positive"),
        ("[[grid]]\ndatasets=['tiny']\nbits=[8]\nteacher=['djsrh']\n", ConfigError, "unknown key 'teacher'; did you mean teachers"),
        ("[defaults]\nseed=[0, 1]\n[[grid]]\ndatasets=['tiny']\nbits=[8]\nteachers=['djsrh']\n", ConfigError,
         "[defaults]: unknown key 'seed'; did you mean seeds"),
        ("[defaults]\nbit=[8]\n[[grid]]\ndatasets=['tiny']\nteachers=['djsrh']\n", ConfigError,
         "[defaults]: unknown key 'bit'; did you mean bits"),
        ("nam='x'\n[[grid]]\ndatasets=['tiny']\nbits=[8]\nteachers=['djsrh']\n", ConfigError, "unknown setting 'nam'; did you mean name"),
        ("[data_dirs]\nwikki='x'\n[[grid]]\ndatasets=['tiny']\nbits=[8]\nteachers=['djsrh']\n", ConfigError,
         "[data_dirs]: unknown dataset 'wikki'; did you mean wiki"),
        ("defaults=3\n[[grid]]\ndatasets=['tiny']\nbits=[8]\nteachers=['djsrh']\n", ConfigError, "[defaults]: must be a table"),
        ("name = 'x'\n", ConfigError, "at least one [[grid]] block"),
        ("[[grid]\n", ConfigError, "not a valid sweep file"),
        ("[[grid]]\ndatasets=['wikii']\nbits=[8]\nteachers=['djsrh']\n", UnknownNameError, "unknown dataset 'wikii'"),
    ],
)
def test_bad_sweep_files_fail_before_running(tmp_path, test_plugins, body, error, pattern):
    with pytest.raises(error, match=pattern.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        load_sweep(write(tmp_path, body), get_registry())


def test_cli_bad_sweep_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and res.output.strip().startswith("error: sweep file not found")


def test_failing_runs_are_recorded_and_the_sweep_goes_on(tmp_path, test_plugins):
    body = """
results = "res"
[[grid]]
datasets = ["tiny"]
bits = [8]
teachers = ["raising", "djsrh"]
students = ["none"]
[grid.set]
"djsrh.epochs" = 2
"djsrh.hidden" = 32
"""
    res = CliRunner().invoke(app, ["sweep", str(write(tmp_path, body)), "-q"])
    assert res.exit_code == 1
    assert "1 done" in res.output and "1 failed" in res.output and "boom in fit" in res.output
    (error,) = (tmp_path / "res").rglob("*.error.json")
    assert "teacher 'raising' failed during fit: RuntimeError: boom in fit" in json.loads(error.read_text())["error"]
    summary = json.loads((tmp_path / "res" / ".sweeps" / "grid.json").read_text())
    assert summary["done"] == 1 and len(summary["failed"]) == 1
    assert len(keys_in(tmp_path / "res")) == 1


def test_worker_processes_give_the_same_results_as_one_process(tmp_path, test_plugins):
    registry = get_registry()
    a = load_sweep(write(tmp_path, GRID), registry, results_dir=tmp_path / "seq")
    b = load_sweep(write(tmp_path, GRID), registry, results_dir=tmp_path / "pool")
    SweepExecutor(registry).run(a)
    report = SweepExecutor(registry, jobs=2).run(b)
    assert report.done == 16 and not report.failed
    seq = {json.dumps(r["key"], sort_keys=True): r["metrics"] for _, r in ResultStore(tmp_path / "seq").iter_results()}
    pool = {json.dumps(r["key"], sort_keys=True): r["metrics"] for _, r in ResultStore(tmp_path / "pool").iter_results()}
    assert seq == pool and len(seq) == 16


@pytest.mark.slow
def test_sigkilled_sweep_resumes_with_every_result_exactly_once(tmp_path):
    body = GRID.replace('"teacher.epochs" = 2', '"teacher.epochs" = 40')
    grid = write(tmp_path, body)
    env = {**os.environ, "CMHBENCH_PLUGINS": "plugins_for_tests", "PYTHONPATH": str(TESTS), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "cmhbench.cli", "sweep", str(grid), "-q"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(keys_in(tmp_path / "res")) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(keys_in(tmp_path / "res"))
    assert 3 <= partial < 16, partial
    subprocess.run(command, env=env, check=True, capture_output=True)
    counts = keys_in(tmp_path / "res")
    assert len(counts) == 16 and set(counts.values()) == {1}
    summary = json.loads((tmp_path / "res" / ".sweeps" / "tiny.json").read_text())
    assert summary["skipped"] == partial and summary["done"] == 16 - partial


@pytest.mark.slow
def test_ray_engine_runs_a_grid_locally(tmp_path, test_plugins, monkeypatch):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'cmhbench[ray]')")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    registry = get_registry()
    a = load_sweep(write(tmp_path, GRID), registry, results_dir=tmp_path / "seq")
    b = load_sweep(write(tmp_path, GRID), registry, results_dir=tmp_path / "ray")
    SweepExecutor(registry).run(a)
    report = SweepExecutor(registry, engine="ray", jobs=2).run(b)
    assert report.done == 16 and not report.failed, report.failed
    seq = {json.dumps(r["key"], sort_keys=True): r["metrics"] for _, r in ResultStore(tmp_path / "seq").iter_results()}
    ray_results = {json.dumps(r["key"], sort_keys=True): r["metrics"] for _, r in ResultStore(tmp_path / "ray").iter_results()}
    assert seq == ray_results

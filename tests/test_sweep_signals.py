"""Sweeps under signals and in logs: ``kill -9`` and Ctrl-C of the driver, a summary kept per
execution, the dry-run listing, Ray left alone when nothing is left to run, and timestamped
progress lines when stderr is not a terminal."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmhbench.cli import app
from cmhbench.evaluation.crossmodal import CodeSet
from cmhbench.plugins import get_registry
from cmhbench.progress import PlainProgress
from cmhbench.results.store import ResultStore, load_result
from cmhbench.sweep import SweepExecutor, load_sweep
from cmhbench.runner import Runner
from cmhbench.sweep import execute
from cmhbench.sweep.execute import _PoolTally, results_outside, write_summary

TESTS = Path(__file__).resolve().parent
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process trees from /proc (Linux)")

# 12 runs in 6 teacher groups; a group takes seconds, so a sweep is still running after its first result.
SLOW_GRID = """
name = "slow"
results = "res"
[defaults]
datasets = ["tiny"]
bits = [8, 16]
seeds = [0, 1, 2]
[[grid]]
teachers = ["djsrh"]
students = ["dcmh", "none"]
[grid.set]
"teacher.epochs" = 150
"teacher.hidden" = 32
"student.epochs" = 10
"student.image_hidden" = 32
"student.text_hidden" = 32
"""

# One quick run per seed: the teacher alone.
QUICK_GRID = """
name = "quick"
results = "res"
[[grid]]
datasets = ["tiny"]
bits = [8]
seeds = [{seeds}]
teachers = ["djsrh"]
students = ["none"]
[grid.set]
"djsrh.epochs" = 2
"djsrh.hidden" = 32
"""


def child_env() -> dict[str, str]:
    """The environment of a ``cmhbench`` subprocess: test plugins, one thread, no forced terminal."""
    env = {**os.environ, "CMHBENCH_PLUGINS": "plugins_for_tests", "PYTHONPATH": str(TESTS), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "CMHBENCH_DEBUG"):
        env.pop(name, None)
    return env


def cmhbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "cmhbench.cli", *args]


def result_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.json")
            if not any(part.startswith(".") for part in p.relative_to(root).parts) and not p.name.endswith(".error.json")]


def keys_in(root: Path) -> Counter:
    return Counter(json.dumps(r["key"], sort_keys=True) for _, r in ResultStore(root).iter_results())


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (children, their children...), from the ppid links in /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids: set[int], seconds: float) -> set[int]:
    """The processes of ``pids`` still alive after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := {pid for pid in pids if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def kill_all(pids: set[int]) -> None:
    """Leave no process behind when a test fails."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def _as_a_terminal_job() -> None:
    """In the child before exec: SIGINT at its default, as for a command typed at a terminal. A
    background job of a script (``pytest ... &``) inherits SIGINT ignored, and the sweep would
    then rightly ignore the tests' Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_sweep(grid: Path, jobs: int, stderr_file: Path) -> subprocess.Popen:
    """``cmhbench sweep GRID --jobs N`` in its own session, stderr to a file (not a terminal), SIGINT
    not ignored whatever the test process inherited."""
    with open(stderr_file, "w") as err:
        return subprocess.Popen(cmhbench("sweep", str(grid), "--jobs", str(jobs)), env=child_env(), stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True, preexec_fn=_as_a_terminal_job)


def wait_for_results(proc: subprocess.Popen, root: Path, count: int = 1, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while len(result_files(root)) < count:
        assert proc.poll() is None, f"the sweep ended (exit code {proc.returncode}) before writing {count} result(s)"
        assert time.monotonic() < deadline, f"no result after {seconds} s"
        time.sleep(0.05)


def assert_complete(root: Path) -> int:
    """Every result JSON under ``root`` loads, and so do its codes; returns how many there are."""
    files = result_files(root)
    for path in files:
        result = load_result(path)
        assert CodeSet.load(path.parent / result["codes_file"]).bits == result["key"]["bits"]
    return len(files)


@LINUX
@pytest.mark.slow
def test_kill_9_of_a_pool_sweep_leaves_no_process_and_loses_no_result(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(SLOW_GRID)
    root = tmp_path / "res"
    proc = start_sweep(grid, 2, tmp_path / "stderr.txt")
    below: set[int] = set()
    try:
        wait_for_results(proc, root)
        below = descendants(proc.pid)
        commands = [command_line(pid) for pid in below]
        assert sum("spawn_main" in c for c in commands) == 2 and any("resource_tracker" in c for c in commands), commands
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not wait_gone(below, 5.0), "processes outlived their killed driver"
    finally:
        kill_all(below | {proc.pid})
        proc.stdout.close()
    on_disk = assert_complete(root)
    assert 1 <= on_disk < 12, on_disk

    rerun = subprocess.run(cmhbench("sweep", str(grid), "--jobs", "2", "-q"), env=child_env(), capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{12 - on_disk} done, {on_disk} already stored" in rerun.stdout
    summary = json.loads((root / ".sweeps" / "slow.json").read_text())
    assert summary["skipped"] == on_disk and summary["done"] == 12 - on_disk and not summary["failed"]
    counts = keys_in(root)
    assert len(counts) == 12 and set(counts.values()) == {1}
    assert assert_complete(root) == 12


@LINUX
@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_stops_the_sweep_writes_its_summary_and_exits_130(tmp_path, jobs):
    grid = tmp_path / "grid.toml"
    grid.write_text(SLOW_GRID)
    root = tmp_path / "res"
    proc = start_sweep(grid, jobs, tmp_path / "stderr.txt")
    below: set[int] = set()
    try:
        wait_for_results(proc, root)
        below = descendants(proc.pid)
        # A terminal's Ctrl-C reaches the whole process group: the workers ignore it, the driver stops them.
        os.killpg(proc.pid, signal.SIGINT) if jobs > 1 else proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)  # not communicate(): workers left alive would hold stdout open
        assert not wait_gone(below, 5.0), "workers outlived the interrupted sweep"
        stdout = proc.stdout.read()
    finally:
        kill_all(below | {proc.pid})
        proc.stdout.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, (proc.returncode, stdout, stderr[-4000:])
    assert stderr.splitlines().count("interrupted: rerun the same command to resume") == 1
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    summary = json.loads((root / ".sweeps" / "slow.json").read_text())
    assert summary["interrupted"] is True and summary["done"] + len(summary["failed"]) < 12
    (kept,) = (root / ".sweeps" / "slow").glob("*.json")
    assert json.loads(kept.read_text()) == summary
    on_disk = assert_complete(root)
    assert summary["done"] <= on_disk < 12
    assert f"{summary['done']} done" in stdout

    # Off a terminal, progress came as timestamped lines: each run started and finished, epoch blocks.
    label = r"tiny djsrh (?:-> ukd -> dcmh|\(teacher alone\)) (8|16) bits seed \d teacher\.epochs=150"
    started = re.findall(rf"^{STAMP} started {label}", stderr, re.M)
    finished = re.findall(rf"^{STAMP} finished {label}.* \(done, \d+\.\d s\)$", stderr, re.M)
    assert len(started) >= summary["done"] >= 1 and len(finished) == summary["done"]
    blocks = re.findall(rf"^{STAMP} {label}.*: djsrh (8|16|128) bits (\d+)/150 \(\d+\.\d s\)$", stderr, re.M)
    assert blocks and {int(done) for *_, done in blocks} <= set(range(15, 151, 15))


@pytest.mark.slow
def test_run_off_a_terminal_writes_timestamped_progress_lines(tmp_path):
    command = cmhbench("run", "--teacher", "djsrh", "--student", "dcmh", "--dataset", "tiny", "--bits", "8,16",
                       "--results", str(tmp_path / "res"), "--set", "teacher.epochs=20", "--set", "teacher.hidden=32",
                       "--set", "student.epochs=3", "--set", "student.image_hidden=32", "--set", "student.text_hidden=32")
    res = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    for bits in (8, 16):
        label = f"tiny djsrh -> ukd -> dcmh {bits} bits seed 0 teacher.epochs=20"
        assert [line for line in lines if re.match(rf"{STAMP} started {label}", line)]
        assert [line for line in lines if re.match(rf"{STAMP} finished {label}.* \(done, \d+\.\d s\)$", line)]
        assert [line for line in lines if re.match(rf"{STAMP} dcmh {bits} bits 3/3 \(", line)]
    # ukd's teacher is 128-bit whatever the student's length: fitted once, reused for the 16-bit student
    blocks = [line for line in lines if re.match(rf"{STAMP} djsrh 128 bits \d+/20 \(", line)]
    assert len(blocks) == 10, blocks  # one line per tenth of the epochs, not one per epoch
    assert "\x1b[" not in res.stderr  # no terminal control codes in a log


def test_plain_progress_writes_a_line_per_tenth_and_at_the_end(capsys):
    progress = PlainProgress(prefix="run: ")
    assert list(progress.track(range(40), 40, "fit")) == list(range(40))
    assert list(progress.track(range(3), 3, "short")) == [0, 1, 2]
    assert list(progress.track(iter(range(7)), None, "open-ended")) == list(range(7))
    lines = capsys.readouterr().err.splitlines()
    assert all(re.match(rf"{STAMP} run: ", line) for line in lines), lines
    assert [re.search(r"fit (\d+)/40", line).group(1) for line in lines if " fit " in line] == [str(n) for n in range(4, 41, 4)]
    assert sum(" short " in line for line in lines) == 3
    assert [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in lines if "open-ended" in line] == ["open-ended 7"]


def test_every_execution_keeps_its_summary(tmp_path, test_plugins):
    grid = tmp_path / "grid.toml"
    grid.write_text(QUICK_GRID.format(seeds="0"))
    sweep = load_sweep(grid, get_registry())
    first = SweepExecutor(get_registry()).run(sweep)
    second = SweepExecutor(get_registry()).run(sweep)
    assert (first.done, second.skipped) == (1, 1)
    kept = sorted((tmp_path / "res" / ".sweeps" / "quick").glob("*.json"))
    assert len(kept) == 2 and all(re.fullmatch(r"\d{8}T\d{6}Z(_\d+)?\.json", p.name) for p in kept), kept
    summaries = [json.loads(p.read_text()) for p in kept]
    assert sorted((s["done"], s["skipped"]) for s in summaries) == [(0, 1), (1, 0)]
    latest = json.loads((tmp_path / "res" / ".sweeps" / "quick.json").read_text())
    assert (latest["done"], latest["skipped"], latest["interrupted"]) == (0, 1, False)


def test_summaries_finished_in_the_same_second_do_not_overwrite_each_other(tmp_path):
    when = dt.datetime(2026, 11, 30, 3, 45, 12, tzinfo=dt.timezone.utc)
    paths = [write_summary(tmp_path, "grid", {"n": n}, when) for n in range(3)]
    assert [p.name for p in paths] == ["20261130T034512Z.json", "20261130T034512Z_2.json", "20261130T034512Z_3.json"]
    assert [json.loads(p.read_text())["n"] for p in paths] == [0, 1, 2]
    assert json.loads((tmp_path / ".sweeps" / "grid.json").read_text()) == {"n": 2}
    assert sorted(p.name for p in (tmp_path / ".sweeps" / "grid").iterdir()) == sorted(p.name for p in paths)


def test_ray_is_not_started_when_every_run_is_stored(tmp_path, test_plugins, monkeypatch):
    grid = tmp_path / "grid.toml"
    grid.write_text(QUICK_GRID.format(seeds="0, 1"))
    sweep = load_sweep(grid, get_registry())
    SweepExecutor(get_registry()).run(sweep)
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now fails
    report = SweepExecutor(get_registry(), engine="ray", jobs=2).run(sweep)
    assert (report.skipped, report.done, report.failed) == (2, 0, [])
    res = CliRunner().invoke(app, ["sweep", str(grid), "--engine", "ray", "-q"])
    assert res.exit_code == 0 and "0 done, 2 already stored" in res.output, res.output


def test_dry_run_lists_every_run_and_marks_the_stored_ones(tmp_path, test_plugins):
    grid = tmp_path / "grid.toml"
    grid.write_text(QUICK_GRID.format(seeds="0"))
    SweepExecutor(get_registry()).run(load_sweep(grid, get_registry()))
    grid.write_text(QUICK_GRID.format(seeds="0, 1, 2"))
    res = CliRunner().invoke(app, ["sweep", str(grid), "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("quick: 3 runs, 1 stored, 2 to run in 2 teacher groups, 0 cannot start, 0 stored results "
                               "outside the sweep")
    label = "tiny djsrh (teacher alone) 8 bits seed {} djsrh.epochs=2 djsrh.hidden=32"
    assert lines[1:] == [f"  stored {label.format(0)}", f"  run    {label.format(1)}", f"  run    {label.format(2)}"]
    forced = CliRunner().invoke(app, ["sweep", str(grid), "--dry-run", "--force"]).output.splitlines()
    assert forced[1:] == [f"  run    {label.format(seed)}" for seed in range(3)]
    assert len(list((tmp_path / "res" / ".sweeps" / "quick").glob("*.json"))) == 1  # the real run's: dry runs write none


def test_dry_run_lists_stored_results_that_no_run_of_the_sweep_names(tmp_path, test_plugins):
    grid = tmp_path / "grid.toml"
    grid.write_text(QUICK_GRID.format(seeds="0, 1"))
    SweepExecutor(get_registry()).run(load_sweep(grid, get_registry()))
    stored = sorted((tmp_path / "res").rglob("*.json"))
    stored = [p for p in stored if ".sweeps" not in p.parts]
    assert len(stored) == 2
    # the same runs at other settings: the two stored results are now rows of settings the sweep no longer has
    grid.write_text(QUICK_GRID.format(seeds="0, 1").replace('"djsrh.hidden" = 32', '"djsrh.hidden" = 16'))
    sweep = load_sweep(grid, get_registry())
    assert results_outside(sweep, Runner(get_registry())) == stored
    res = CliRunner().invoke(app, ["sweep", str(grid), "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "0 stored, 2 to run in 2 teacher groups, 0 cannot start, 2 stored results outside the sweep" in lines[0]
    assert lines[-2:] == [f"  outside {p.relative_to(tmp_path / 'res')}" for p in stored]
    # back at the stored settings, nothing is outside; failure records (.error.json) never count
    grid.write_text(QUICK_GRID.format(seeds="0"))
    (stored[1].with_name(stored[1].stem + ".error.json")).write_text("{}")
    assert results_outside(load_sweep(grid, get_registry()), Runner(get_registry())) == stored[1:]


@pytest.mark.slow
def test_pool_workers_write_results_and_failure_records_and_report_each_run(tmp_path, test_plugins, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    grid = tmp_path / "grid.toml"
    grid.write_text(QUICK_GRID.format(seeds="0").replace('teachers = ["djsrh"]', 'teachers = ["raising", "djsrh"]'))
    events, counts = [], []
    executor = SweepExecutor(get_registry(), jobs=2, on_event=events.append,
                             on_update=lambda report, running: counts.append(report.done + len(report.failed)))
    report = executor.run(load_sweep(grid, get_registry()))
    assert report.done == 1
    assert [f["error"] for f in report.failed] == ["teacher 'raising' failed during fit: RuntimeError: boom in fit"]
    (error,) = (tmp_path / "res").rglob("*.error.json")
    assert "boom in fit" in json.loads(error.read_text())["error"]
    assert assert_complete(tmp_path / "res") == 1
    assert Counter(e.kind for e in events) == {"started": 2, "finished": 1, "failed": 1}
    assert {e.request.teacher for e in events if e.kind == "failed"} == {"raising"}
    assert counts[-1] == 2


@pytest.mark.slow
def test_an_interrupt_just_after_a_run_ended_in_a_worker_still_counts_that_run(tmp_path, test_plugins, monkeypatch):
    """Ctrl-C can reach the driver after a worker has written a result and queued its end but before the
    driver has read it (what failed CI once): the summary still counts the run that is on disk."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    grid = tmp_path / "grid.toml"
    grid.write_text(QUICK_GRID.format(seeds="0, 1, 2").replace('"djsrh.epochs" = 2', '"djsrh.epochs" = 150'))
    root = tmp_path / "res"
    drain, interrupts = _PoolTally.drain, []

    def interrupted_before_reading_an_end(tally, events, timeout):
        if interrupts:  # the drain after the interrupt
            return drain(tally, events, timeout)
        while not result_files(root):  # the driver reads nothing until a result is on disk...
            time.sleep(0.01)
        time.sleep(0.5)  # ...and its end queued, when the interrupt comes
        interrupts.append(True)
        raise KeyboardInterrupt

    monkeypatch.setattr(_PoolTally, "drain", interrupted_before_reading_an_end)
    report = SweepExecutor(get_registry(), jobs=2).run(load_sweep(grid, get_registry()))
    assert interrupts and report.interrupted and not report.failed
    on_disk = assert_complete(root)
    assert 1 <= on_disk < 3 and report.done == on_disk
    assert json.loads((root / ".sweeps" / "quick.json").read_text())["done"] == on_disk


def test_a_ctrl_c_while_a_run_is_written_is_held_until_the_run_is_counted(tmp_path, test_plugins, monkeypatch):
    """Without a pool the driver writes each result: a Ctrl-C between the write and the count waits for
    the count, then stops the sweep, so the summary never misses a result on disk."""
    grid = tmp_path / "grid.toml"
    grid.write_text(QUICK_GRID.format(seeds="0, 1"))
    write = execute.write_outcome

    def written_then_ctrl_c(store, outcome):
        write(store, outcome)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(execute, "write_outcome", written_then_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, whatever pytest inherited
    try:
        report = SweepExecutor(get_registry()).run(load_sweep(grid, get_registry()))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert report.interrupted and not report.failed
    assert report.done == 1 == assert_complete(tmp_path / "res")
    assert json.loads((tmp_path / "res" / ".sweeps" / "quick.json").read_text())["done"] == 1

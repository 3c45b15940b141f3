"""What a user sees when something is off: one clear line, the right exit code, readable files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cmhbench.cli import app
from test_cli import assert_one_line_error, invoke, write_codes

VENV_BIN = Path(sys.executable).parent


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """The installed console script in a subprocess (real pipes, real exit status)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **kwargs.pop("env", {})}
    return subprocess.run([str(VENV_BIN / "cmhbench"), *args], capture_output=True, text=True, env=env, **kwargs)


@pytest.mark.parametrize(
    "content, pattern",
    [
        ('{"schema": 1, "key": {}}', "is JSON (a result file? its codes are in the *.codes.npz beside it), not an .npz"),
        ("query,db\n1,2\n", "is a text file, not an .npz of codes"),
        (b"", "is an empty file"),
        (b"\x93NUMPY\x01\x00", "is a single .npy array"),
    ],
)
def test_eval_on_a_file_that_is_not_an_npz_says_what_it_is(tmp_path, content, pattern):
    path = tmp_path / "codes.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    res = invoke("eval", str(path))
    assert_one_line_error(res, pattern, code=2)
    assert "pickle" not in res.output


def test_eval_on_a_folder(tmp_path):
    assert_one_line_error(invoke("eval", str(tmp_path)), "is a folder; give a codes .npz file", code=2)


@pytest.mark.parametrize("command", [["eval", "CODES", "--json"], ["eval", "CODES"], ["list"], ["show", "djsrh", "--json"]])
def test_output_into_a_closed_pipe_is_quiet(tmp_path, command):
    write_codes(tmp_path / "codes.npz", np.random.default_rng(0))
    argv = [str(tmp_path / "codes.npz") if a == "CODES" else a for a in command]
    # `cmhbench ... | head -c 1`: the reader leaves before the output is written.
    proc = subprocess.Popen([str(VENV_BIN / "cmhbench"), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "BrokenPipe" not in err and "error" not in err and "Traceback" not in err, err


def test_sweep_errors_keep_their_brackets(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text("[[grid]]\ndatasets=['synthetic']\nbits=[8]\nteacher=['cvh']\n")
    res = invoke("sweep", str(grid))
    assert_one_line_error(res, "[[grid]] #1: unknown key 'teacher'; did you mean teachers, teacher_bits?", code=2)


def test_a_missing_dataset_says_how_to_get_it(tmp_path):
    res = invoke("run", "--teacher", "cvh", "--student", "none", "--dataset", "wiki", "--data-dir", str(tmp_path), "--bits", "8")
    assert_one_line_error(res, "`cmhbench data fetch wiki` downloads them", code=2)
    res = invoke("run", "--teacher", "cvh", "--student", "none", "--dataset", "nus-wide-tc10", "--data-dir", str(tmp_path),
                 "--bits", "8")
    assert_one_line_error(res, "`cmhbench data info nus-wide-tc10` lists the files it needs", code=2)


def test_data_info_on_a_corrupt_file_fails(tmp_path):
    (tmp_path / "wikiData.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    res = invoke("data", "info", "wiki", "--data-dir", str(tmp_path))
    assert_one_line_error(res, "wiki: the files found cannot be loaded", code=2)
    res = invoke("data", "info", "wiki", "--data-dir", str(tmp_path), "--json")
    assert res.exit_code == 2


def test_data_info_prints_urls_and_checksums_on_one_line_each(tmp_path):
    res = cli("data", "info", "wiki", "--data-dir", str(tmp_path), env={"COLUMNS": "60"})
    url_lines = [line for line in res.stdout.splitlines() if " url " in line]
    sha_lines = [line for line in res.stdout.splitlines() if " sha256 " in line]
    assert url_lines and sha_lines
    for line in url_lines:
        assert line.split(" url ")[1].startswith("https://") and line.rstrip().endswith(".mat")
    for line in sha_lines:
        digest = line.split(" sha256 ")[1].strip()
        assert len(digest) == 64 or digest == "not published"


def test_version():
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("cmhbench ") and res.stdout.split()[1][0].isdigit()


def test_show_prints_a_methods_hyperparameters():
    res = invoke("show", "djsrh", "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    fields = {f["name"]: f for f in info["hyperparameters"]}
    assert fields["beta"] == {**fields["beta"], "type": "float", "bounds": ">= 0, <= 1"}
    assert fields["epochs"]["type"] == "int" and fields["epochs"]["default"] >= 1
    features = {f["name"]: f for f in json.loads(invoke("list", "features", "--json").output)["hyperparameters"]}
    assert features["projection"]["choices"] == ["pca", "random"] and features["projection"]["default"] == "pca"
    table = invoke("show", "ucch")
    assert table.exit_code == 0 and "temperature" in table.output and "bounds" in table.output
    assert_one_line_error(invoke("show", "ucchh"), "no method or dataset is called 'ucchh'; did you mean ucch", code=2)


def test_show_with_a_dataset_gives_its_official_settings():
    from cmhbench.plugins import get_registry

    spec = next((s for s in get_registry().teachers.list() if s.dataset_defaults), None)
    if spec is None:
        pytest.skip("no teacher has per-dataset defaults")
    dataset, values = next(iter(spec.dataset_defaults.items()))
    info = json.loads(invoke("show", spec.name, "--dataset", dataset, "--json").output)
    shown = {f["name"]: f["default"] for f in info["hyperparameters"]}
    for key, value in values.items():
        assert shown[key] == (list(value) if isinstance(value, tuple) else value)


def test_list_pattern_prints_only_tables_with_matches():
    res = invoke("list", "--pattern", "dj*")
    assert res.exit_code == 0 and "teachers" in res.output
    assert "students" not in res.output and "datasets" not in res.output
    assert_one_line_error(invoke("list", "--pattern", "zz*"), "match 'zz*'", code=2)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_get_the_usual_mode_under_the_umask(tmp_path, test_plugins):
    old = os.umask(0o022)
    try:
        res = CliRunner().invoke(app, ["run", "--dataset", "tiny", "--teacher", "cvh", "--student", "none", "--bits", "8",
                                       "--results", str(tmp_path / "res"), "-q"])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(app, ["leaderboard", "--results", str(tmp_path / "res"), "--format", "md,csv,html",
                                       "--out", str(tmp_path / "board")])
        assert res.exit_code == 0, res.output
        written = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert {p.suffix for p in written} >= {".json", ".npz", ".md", ".csv", ".html", ".png", ".svg"}
        assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in written} == {
            str(p.relative_to(tmp_path)): "0o644" for p in written}
        os.umask(0o027)
        res = CliRunner().invoke(app, ["leaderboard", "--results", str(tmp_path / "res"), "--format", "md",
                                       "--out", str(tmp_path / "private")])
        assert res.exit_code == 0 and _mode(tmp_path / "private" / "tiny" / "leaderboard.md") == 0o640
    finally:
        os.umask(old)


def test_results_record_whether_the_checkout_had_uncommitted_changes(tmp_path, test_plugins):
    from cmhbench.environment import git_commit

    res = CliRunner().invoke(app, ["run", "--dataset", "tiny", "--teacher", "cvh", "--student", "none", "--bits", "8",
                                   "--results", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    env = json.loads(next(tmp_path.rglob("*bits-seed0-*.json")).read_text())["environment"]
    commit = git_commit()
    if commit is None:
        assert env["git_dirty"] is None
    else:
        assert env["git_dirty"] is commit.endswith("+dirty") and env["git_commit"] == commit

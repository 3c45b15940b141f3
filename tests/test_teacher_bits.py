"""The teacher's own code length: ``--teacher-bits``, a strategy's ``teacher_bits`` field, sweep files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmhbench.cli import app
from cmhbench.errors import ConfigError
from cmhbench.plugins import get_registry
from cmhbench.runner import Pipeline, RunRequest, Runner, teacher_code_length
from cmhbench.sweep.spec import load_sweep

FAST = (("student.epochs", "2"),)


def _request(tmp_path: Path, **kw) -> RunRequest:
    base = dict(teacher="features", strategy="codes", student="linear", dataset="tiny", bits=(8,),
                results_dir=tmp_path, overrides=FAST, device="cpu")
    return RunRequest(**{**base, **kw})


def test_the_teacher_is_trained_at_teacher_bits_and_the_run_records_it(tmp_path, test_plugins):
    runner = Runner(get_registry())
    outcome = runner.run(_request(tmp_path, teacher_bits=24))[0]
    teacher = runner._teacher_cache[1]
    data = runner.load_data(_request(tmp_path))
    import torch

    assert teacher.encode(torch.as_tensor(data.image[:5]), "image").shape == (5, 24)
    result = outcome.result
    assert result["teacher_bits"] == 24 and result["key"]["teacher_bits"] == 24 and result["key"]["bits"] == 8
    assert result["non_default"]["teacher_bits"] == 24
    with __import__("numpy").load(outcome.path.with_name(result["codes_file"])) as z:
        assert z["query_image_codes"].shape[1] == 8  # the student's codes keep --bits


def test_without_teacher_bits_the_teacher_takes_the_students_length_and_the_key_is_unchanged(tmp_path, test_plugins):
    runner = Runner(get_registry())
    plain = _request(tmp_path)
    outcome = runner.run(plain)[0]
    assert outcome.result["teacher_bits"] == 8 and "teacher_bits" not in outcome.result["key"]
    assert "teacher_bits" not in outcome.result["non_default"]
    # asking for the student's own length explicitly is another variant (it is recorded as asked)
    explicit = runner.key_for(dataclasses.replace(plain, teacher_bits=8), 8)
    assert explicit.variant != runner.key_for(plain, 8).variant
    assert runner.key_for(plain, 8) == runner.key_for(dataclasses.replace(plain), 8)


@dataclasses.dataclass(frozen=True)
class _StrategyConfig:
    teacher_bits: int = 128


def test_a_strategy_field_sets_the_default_and_the_request_overrides_it():
    registry = get_registry()
    teacher, strategy, student = (registry.method(r, n) for r, n in (("teacher", "features"), ("strategy", "codes"), ("student", "linear")))
    pipeline = Pipeline(teacher, strategy, student, {"teacher": None, "strategy": _StrategyConfig(), "student": None})
    request = RunRequest(teacher="features", strategy="codes", student="linear")
    assert teacher_code_length(request, pipeline, 16) == 128
    assert teacher_code_length(dataclasses.replace(request, teacher_bits=32), pipeline, 16) == 32
    unset = Pipeline(teacher, strategy, student, {"teacher": None, "strategy": _StrategyConfig(0), "student": None})
    assert teacher_code_length(request, unset, 16) == 16
    alone = Pipeline(teacher, None, None, {"teacher": None})
    assert teacher_code_length(request, alone, 16) == 16
    assert teacher_code_length(request, Pipeline(None, strategy, student, {}), 16) is None


@pytest.mark.parametrize("argv, message", [
    (["--teacher", "features", "--student", "none", "--teacher-bits", "16"], "no student"),
    (["--strategy", "labels", "--student", "linear", "--teacher-bits", "16"], "no teacher"),
    (["--teacher", "features", "--strategy", "codes", "--student", "linear", "--teacher-bits", "0"], "must be positive"),
])
def test_teacher_bits_where_it_cannot_apply_is_one_clear_error(tmp_path, test_plugins, argv, message):
    res = CliRunner().invoke(app, ["run", "--dataset", "tiny", "--bits", "8", "--results", str(tmp_path), "-q", *argv])
    assert res.exit_code != 0 and message in res.output, res.output
    assert "Traceback" not in res.output
    assert not list(tmp_path.rglob("*.json"))


def test_cli_teacher_bits(tmp_path, test_plugins):
    res = CliRunner().invoke(app, ["run", "--dataset", "tiny", "--teacher", "features", "--strategy", "codes",
                                   "--student", "linear", "--bits", "8", "--teacher-bits", "12", "--set",
                                   "student.epochs=2", "--results", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.rglob("*.json")
    assert json.loads(path.read_text())["teacher_bits"] == 12


def test_sweep_files_take_teacher_bits_for_distilled_teachers_only(tmp_path, test_plugins):
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        'name = "s"\n[defaults]\ndatasets = ["tiny"]\nbits = [8]\nteacher_bits = [24, 32]\n'
        '[[grid]]\nteachers = ["features"]\nstudents = ["none"]\n'
        '[[grid]]\nteachers = ["features"]\nstrategies = ["codes"]\nstudents = ["linear"]\n'
        '[[grid]]\nstrategies = ["labels"]\nstudents = ["linear"]\n'
    )
    runs = load_sweep(sweep, get_registry()).runs
    by_pipeline = {}
    for r in runs:
        by_pipeline.setdefault((r.teacher, r.strategy, r.student), set()).add(r.teacher_bits)
    assert by_pipeline[("features", "codes", "linear")] == {24, 32}
    assert by_pipeline[("features", "ukd", "none")] == {None}  # the teacher alone: --bits is its length
    assert by_pipeline[("none", "labels", "linear")] == {None}
    sweep.write_text(sweep.read_text().replace("[24, 32]", "[0]"))
    with pytest.raises(ConfigError, match="teacher_bits must be positive"):
        load_sweep(sweep, get_registry())

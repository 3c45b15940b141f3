"""The command line through typer's test runner: run, list, eval and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cmhbench.cli import app
from reference_metrics import reference_metrics

runner = CliRunner()
FAST = ["--set", "teacher.epochs=2", "--set", "teacher.hidden=32", "--set", "student.epochs=2",
        "--set", "student.image_hidden=32", "--set", "student.text_hidden=32"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_one_line_error(result, pattern: str, code: int | None = None):
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert pattern in errors[0], result.output


def test_run_end_to_end_on_tiny_data_writes_results_and_table(tmp_path, test_plugins):
    res = invoke("run", "--teacher", "djsrh", "--dataset", "tiny", "--bits", "8,16", "--results", str(tmp_path), "-q", *FAST)
    assert res.exit_code == 0, res.output
    assert "djsrh -> ukd -> dcmh on tiny" in res.output and "i2t mAP" in res.output
    results = sorted(tmp_path.rglob("*.json"))
    assert len(results) == 2
    data = json.loads(results[0].read_text())
    assert data["key"]["teacher"] == "djsrh" and data["key"]["strategy"] == "ukd" and data["key"]["student"] == "dcmh"
    assert data["config"]["teacher"]["epochs"] == 2 and data["config"]["student"]["text_hidden"] == 32
    assert set(data["timings"]) >= {"teacher_fit_s", "distill_s", "student_fit_s", "encode_s", "evaluate_s", "total_s"}
    assert data["environment"]["plugins"]["djsrh"].startswith("cmhbench ")
    assert data["dataset"]["split_checksum"] and data["dataset"]["protocol"] == "tiny"
    # The stored codes evaluate to the stored numbers under the reference implementation.
    codes = np.load(results[0].with_name(data["codes_file"]))
    want = reference_metrics(codes["query_image_codes"], codes["db_text_codes"], codes["query_labels"], codes["db_labels"])
    assert data["metrics"]["i2t"]["map"] == pytest.approx(want["map"], abs=1e-12)
    # A second run skips, --force recomputes.
    again = invoke("run", "--teacher", "djsrh", "--dataset", "tiny", "--bits", "8,16", "--results", str(tmp_path), "-q", *FAST)
    assert again.exit_code == 0 and again.output.count("skipped") >= 2
    forced = invoke("run", "--teacher", "djsrh", "--dataset", "tiny", "--bits", "8", "--results", str(tmp_path), "-q", "--force", *FAST)
    assert forced.exit_code == 0 and "done" in forced.output


def test_teacher_alone_and_labels_strategy(tmp_path, test_plugins):
    res = invoke("run", "--teacher", "djsrh", "--student", "none", "--dataset", "tiny", "--bits", "8", "--results", str(tmp_path), "-q", *FAST[:4])
    assert res.exit_code == 0, res.output
    res = invoke("run", "--strategy", "labels", "--dataset", "tiny", "--bits", "8", "--results", str(tmp_path), "-q", *FAST[4:])
    assert res.exit_code == 0, res.output
    names = sorted(p.parent.name for p in tmp_path.rglob("*.json"))
    assert names == ["djsrh+none+none", "none+labels+dcmh"]


def test_list_json_has_every_kind_with_metadata():
    res = invoke("list", "--json")
    assert res.exit_code == 0, res.output
    listing = json.loads(res.output)
    assert set(listing) == {"teachers", "strategies", "students", "datasets"}
    for kind, items in listing.items():
        assert items, kind
        for item in items:
            assert {"name", "kind", "paper", "source"} <= set(item)
    assert {t["name"] for t in listing["teachers"]} >= {"djsrh"}
    one = json.loads(invoke("list", "students", "--json").output)
    assert list(one) == ["students"]


def test_list_tables_and_bad_kind():
    assert "djsrh" in invoke("list", "teachers").output
    assert_one_line_error(invoke("list", "widgets"), "unknown kind or name 'widgets'")


def write_codes(path: Path, rng, bits=16, n_q=20, n_db=100, dtype=np.float32, **replace):
    arrays = {
        "query_image_codes": np.where(rng.random((n_q, bits)) < 0.5, -1, 1).astype(dtype),
        "query_text_codes": np.where(rng.random((n_q, bits)) < 0.5, -1, 1).astype(dtype),
        "db_image_codes": np.where(rng.random((n_db, bits)) < 0.5, -1, 1).astype(dtype),
        "db_text_codes": np.where(rng.random((n_db, bits)) < 0.5, -1, 1).astype(dtype),
        "query_labels": (rng.random((n_q, 5)) < 0.3).astype(np.uint8),
        "db_labels": (rng.random((n_db, 5)) < 0.3).astype(np.uint8),
    }
    arrays.update(replace)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.int64, np.float64])
def test_eval_json_matches_reference(tmp_path, dtype):
    a = write_codes(tmp_path / "codes.npz", np.random.default_rng(0), dtype=dtype)
    res = invoke("eval", str(tmp_path / "codes.npz"), "--topk", "50,500", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out) == {"i2t", "t2i"}
    i2t = reference_metrics(a["query_image_codes"], a["db_text_codes"], a["query_labels"], a["db_labels"], topk=(50, 500))
    t2i = reference_metrics(a["query_text_codes"], a["db_image_codes"], a["query_labels"], a["db_labels"], topk=(50, 500))
    for key in ("map", "map@50", "map@500"):
        assert out["i2t"][key] == pytest.approx(i2t[key], abs=1e-12)
        assert out["t2i"][key] == pytest.approx(t2i[key], abs=1e-12)
    assert out["i2t"]["seconds"] >= 0 and out["t2i"]["seconds"] >= 0
    torch_out = json.loads(invoke("eval", str(tmp_path / "codes.npz"), "--engine", "torch", "--json").output)
    for direction in ("i2t", "t2i"):
        torch_out[direction].pop("seconds")
        out[direction].pop("seconds")
    assert torch_out == out  # bit-identical across engines


def test_eval_table(tmp_path):
    write_codes(tmp_path / "codes.npz", np.random.default_rng(1))
    res = invoke("eval", str(tmp_path / "codes.npz"))
    assert res.exit_code == 0 and "i2t" in res.output and "map@500" in res.output


@pytest.mark.parametrize(
    "replace, pattern",
    [
        ({"db_text_codes": None}, "missing array(s): db_text_codes"),
        ({"query_image_codes": np.full((20, 16), 0.5)}, "query_image_codes: values must be -1 or +1"),
        ({"query_text_codes": np.full((20, 16), np.nan)}, "query_text_codes: holds NaN"),
        ({"db_image_codes": np.ones((100, 8))}, "code lengths differ"),
        ({"db_labels": np.ones((99, 5))}, "db_image_codes has 100 rows but db_labels has 99"),
        ({"query_labels": np.full((20, 5), 2)}, "query_labels: labels must be 0 or 1"),
        ({"query_image_codes": np.ones(16)}, "query_image_codes: expected a 2-D"),
    ],
)
def test_eval_bad_codes(tmp_path, replace, pattern):
    write_codes(tmp_path / "codes.npz", np.random.default_rng(2), **replace)
    assert_one_line_error(invoke("eval", str(tmp_path / "codes.npz")), pattern, code=2)


def test_eval_missing_and_corrupt_file(tmp_path):
    assert_one_line_error(invoke("eval", str(tmp_path / "nope.npz")), "codes file not found")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert_one_line_error(invoke("eval", str(tmp_path / "bad.npz")), "not a readable .npz file")
    write_codes(tmp_path / "ok.npz", np.random.default_rng(3))
    assert_one_line_error(invoke("eval", str(tmp_path / "ok.npz"), "--topk", "0"), "--topk: values must be positive")


@pytest.mark.parametrize(
    "args, pattern, code",
    [
        (["--teacher", "djsrhh"], "unknown teacher 'djsrhh'; did you mean djsrh, jdsh, dsah?", 2),
        (["--teacher", "djsrh", "--student", "dcmhh"], "unknown student 'dcmhh'; did you mean dcmh?", 2),
        (["--teacher", "djsrh", "--strategy", "ukdd"], "unknown strategy 'ukdd'", 2),
        (["--teacher", "djsrh", "--dataset", "wikii"], "unknown dataset 'wikii'; did you mean wiki?", 2),
        (["--student", "dcmh"], "strategy 'ukd' distils a teacher: give --teacher NAME", 2),
        (["--student", "none"], "--student none evaluates a teacher", 2),
        (["--teacher", "djsrh", "--strategy", "labels"], "strategy 'labels' does not use a teacher", 2),
        (["--teacher", "djsrh", "--bits", "0"], "code length must be positive", 2),
        (["--teacher", "djsrh", "--bits", "-16"], "code length must be positive", 2),
        (["--teacher", "djsrh", "--bits", "16,abc"], "'abc' is not an integer", 2),
        (["--teacher", "djsrh", "--set", "epochs"], "--set expects key=value", 2),
        (["--teacher", "djsrh", "--set", "teacher.epochz=3"], "djsrh has no hyperparameter 'epochz'; did you mean epochs?", 2),
        (["--teacher", "djsrh", "--set", "teacher.epochs=0"], "djsrh.epochs: 0 must be >= 1", 2),
        (["--teacher", "djsrh", "--set", "teacher.epochs=two"], "djsrh.epochs: 'two' is not a valid int", 2),
        (["--teacher", "djsrh", "--set", "epochs=3"], "several methods have 'epochs'; write teacher.epochs=3 or student.epochs=3", 2),
        (["--teacher", "djsrh", "--set", "nonsense=3"], "no selected method has a hyperparameter 'nonsense'", 2),
        (["--teacher", "djsrh", "--set", "ukd.mode=maybe"], "ukd.mode: 'maybe' is not one of knn, sim", 2),
        (["--teacher", "djsrh", "--device", "tpu"], "--device must be auto, cpu or cuda", 2),
        (["--teacher", "djsrh", "--dataset", "wiki", "--data-dir", "/nonexistent/dir"], "not found in /nonexistent/dir", 2),
    ],
)
def test_run_bad_input_is_one_line_and_writes_nothing(tmp_path, args, pattern, code):
    res = invoke("run", *args, "--results", str(tmp_path / "results"), "-q")
    assert_one_line_error(res, pattern, code)
    assert not (tmp_path / "results").exists()


def test_cuda_requested_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_one_line_error(invoke("run", "--teacher", "djsrh", "--device", "cuda", "--results", str(tmp_path)), "no CUDA device")


@pytest.mark.parametrize(
    "teacher, pattern",
    [
        ("raising", "teacher 'raising' failed during fit: RuntimeError: boom in fit"),
        ("nancodes", "teacher 'nancodes' encode() returned NaN"),
        ("wrongshape", "teacher 'wrongshape' encode() returned (60, 9), expected (n, 8)"),
    ],
)
def test_faulty_plugins_leave_existing_results_untouched(tmp_path, test_plugins, teacher, pattern):
    results = tmp_path / "results"
    ok = invoke("run", "--teacher", "djsrh", "--student", "none", "--dataset", "tiny", "--bits", "8", "--results", str(results), "-q", *FAST[:4])
    assert ok.exit_code == 0, ok.output
    before = tree(results)
    res = invoke("run", "--teacher", teacher, "--student", "none", "--dataset", "tiny", "--bits", "8", "--results", str(results), "-q")
    assert_one_line_error(res, pattern, code=3)
    assert tree(results) == before
    assert not list(results.rglob("*.tmp"))


def test_corrupt_wiki_file_via_cli(tmp_path):
    (tmp_path / "wikiData.mat").write_text("this is not a MAT file")
    res = invoke("run", "--teacher", "djsrh", "--dataset", "wiki", "--data-dir", str(tmp_path), "--results", str(tmp_path / "r"))
    assert_one_line_error(res, "not a readable MAT file", code=2)

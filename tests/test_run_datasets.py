"""`cmhbench run --dataset mirflickr25k --data-dir DIR` on every supported layout, and --protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cmh_files import mir_arrays, pascal_subset, write_mirflickr, write_raw_folder
from cmhbench.cli import app
from cmhbench.results.frame import results_frame
from test_cli import FAST, assert_one_line_error

runner = CliRunner()
SMALL = "dcmh:query=20,train=60"
PIXELS = ["--image-encoder", "test_resnet", "--image-weights", "random"]


@pytest.mark.parametrize(
    "layout, version, columns",
    [
        ("vgg", "v5", False),
        ("ugach", "", False),
        ("flickr25k-features", "v73", True),
        ("flickr25k", "v73", False),
        ("iall", "v5", True),
    ],
)
def test_run_mirflickr_on_each_layout(tmp_path, layout, version, columns):
    pixels = layout in ("flickr25k", "iall")
    arrays = mir_arrays(np.random.default_rng(0), pixels=(16, 12) if pixels else (0, 0))
    write_mirflickr(tmp_path / "data", layout, version, arrays, columns)
    args = ["run", "--teacher", "djsrh", "--dataset", "mirflickr25k", "--data-dir", str(tmp_path / "data"),
            "--protocol", SMALL, "--bits", "8", "--results", str(tmp_path / "results"), "-q", *FAST]
    if pixels:
        args += [*PIXELS, "--feature-cache", str(tmp_path / "cache")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "protocol dcmh-query20-train60" in res.output
    result = json.loads(next((tmp_path / "results").rglob("*.json")).read_text())
    ds = result["dataset"]
    assert ds["name"] == "mirflickr25k" and ds["items"] == 113 and ds["details"]["layout"] == layout.split("-")[0]
    assert ds["protocol"] == "dcmh-query20-train60" and ds["protocol_version"] == 1 and ds["split_seed"] == 0
    assert ds["split_sizes"] == {"query": 20, "database": 93, "train": 60} and len(ds["split_checksum"]) == 16
    assert ds["image_dim"] == (96 if pixels else 32)
    if pixels:
        assert ds["details"]["features"]["image"]["model"] == "test_resnet"


def test_pixels_without_network_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arrays = mir_arrays(np.random.default_rng(1), n=30, unlabelled=0, untagged=0, pixels=(8, 8))
    write_mirflickr(tmp_path / "data", "iall", "v73", arrays)
    res = runner.invoke(app, ["run", "--teacher", "djsrh", "--dataset", "mirflickr25k", "--data-dir", str(tmp_path / "data"),
                              "--protocol", "dcmh:query=5,train=10", "--results", str(tmp_path / "results"),
                              "--feature-cache", str(tmp_path / "cache"), "-q"])
    assert_one_line_error(res, "cannot load timm's pretrained weights for 'vgg19.tv_in1k'", code=2)
    assert not (tmp_path / "results").exists()


def test_protocols_never_share_a_result_folder(tmp_path):
    arrays = mir_arrays(np.random.default_rng(2))
    write_mirflickr(tmp_path / "data", "vgg", "v73", arrays)
    base = ["run", "--teacher", "djsrh", "--student", "none", "--dataset", "mirflickr25k", "--data-dir", str(tmp_path / "data"),
            "--bits", "8", "--results", str(tmp_path / "results"), "-q", *FAST[:4]]
    for protocol in (SMALL, "djsrh:query=24,train=48", "ucch:query=20"):
        res = runner.invoke(app, [*base, "--protocol", protocol])
        assert res.exit_code == 0, res.output
    folders = sorted(p.name for p in (tmp_path / "results" / "mirflickr25k").iterdir())
    assert folders == ["dcmh-query20-train60", "djsrh-query24-train48", "ucch-query20"]
    frame = results_frame(tmp_path / "results")
    assert frame.groupby("protocol")["split_checksum"].nunique().tolist() == [1, 1, 1]
    assert frame["split_checksum"].nunique() == 3
    bad = runner.invoke(app, [*base, "--protocol", "dcmh"])
    assert_one_line_error(bad, "protocol 'dcmh' needs at least 12000 items", code=2)
    bad = runner.invoke(app, [*base, "--protocol", "djsrhh"])
    assert_one_line_error(bad, "unknown protocol 'djsrhh'; did you mean djsrh?", code=2)


def test_data_info_json_on_a_folder(tmp_path):
    arrays = mir_arrays(np.random.default_rng(3), n=200)
    write_mirflickr(tmp_path, "vgg", "v73", arrays)
    res = runner.invoke(app, ["data", "info", "mirflickr25k", "--data-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    complete = [e for e in info["looked"] if e["complete"]]
    assert [e["layout"] for e in complete] == ["vgg"] and complete[0]["folder"] == str(tmp_path)
    assert info["loaded"]["items"] == 193 and info["loaded"]["details"]["filtered_out"] == 7
    rows = {r["protocol"]: r for r in info["protocols"]}
    assert rows["dcmh"]["default"] and rows["dcmh"]["error"] == "needs >= 12000 items"
    assert rows["ucch"]["error"] == "needs >= 2001 items"
    assert {s["name"] for s in info["sources"]} == {"dcmh", "ugach-sample"}
    table = runner.invoke(app, ["data", "info", "mirflickr25k", "--data-dir", str(tmp_path)])
    assert table.exit_code == 0 and "files found" in table.output and "vgg (complete)" in table.output
    listing = json.loads(runner.invoke(app, ["data", "list", "--json"]).output)
    assert {d["name"]: d["default_protocol"] for d in listing}["mirflickr25k"] == "dcmh"
    assert {d["name"]: d["default_protocol"] for d in listing}["nus-wide-tc10"] == "djsrh"


def test_run_on_a_raw_folder_with_its_own_split(tmp_path, shared_data):
    write_raw_folder(tmp_path / "raw", pascal_subset(shared_data, per_category=10, categories=4), 40,
                     np.random.default_rng(4), split=True)
    res = runner.invoke(app, ["run", "--teacher", "djsrh", "--dataset", "raw", "--data-dir", str(tmp_path / "raw"), *PIXELS,
                              "--text-encoder", "bow", "--feature-cache", str(tmp_path / "cache"), "--bits", "8",
                              "--results", str(tmp_path / "results"), "-q", *FAST])
    assert res.exit_code == 0, res.output
    ds = json.loads(next((tmp_path / "results").rglob("*.json")).read_text())["dataset"]
    assert ds["protocol"] == "given" and ds["split_sizes"] == {"query": 8, "database": 32, "train": 32}
    assert ds["classes"] == 4 and ds["details"]["features"]["text"]["kind"] == "bow"


def test_image_encoder_on_a_features_folder_says_it_is_unused(tmp_path):
    write_mirflickr(tmp_path / "data", "vgg", "v5", mir_arrays(np.random.default_rng(5)))
    res = runner.invoke(app, ["run", "--teacher", "djsrh", "--student", "none", "--dataset", "mirflickr25k",
                              "--data-dir", str(tmp_path / "data"), "--protocol", SMALL, *PIXELS, "--bits", "8",
                              "--results", str(tmp_path / "results"), "-q", *FAST[:4]])
    assert res.exit_code == 0, res.output
    assert "the files hold image features already; --image-encoder is not used" in res.output

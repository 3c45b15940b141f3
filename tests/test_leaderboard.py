"""Leaderboards: aggregation, refusals, duplicates, reported rows, rendering and determinism."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cmhbench.cli import app
from cmhbench.errors import DataError
from cmhbench.leaderboard import build_leaderboards
from cmhbench.leaderboard.render import to_csv, to_markdown
from cmhbench.results.store import SCHEMA_VERSION, ResultStore, RunKey


def fake_result(root: Path, teacher, strategy, student, bits, seed, i2t, t2i, *, dataset="wiki", protocol="wiki",
                revision="rev1", split="split1", variant="v1", config=None):
    key = RunKey(dataset, protocol, teacher, strategy, student, bits, seed, f"{variant}-{bits}-{seed}", variant)
    curve = lambda v: {"map": v, "map@50": v / 2, "pr_curve": {"radius": list(range(bits + 1)), "precision": [v] * (bits + 1), "recall": [0.5] * (bits + 1)},  # noqa: E731
                       "pk_curve": {"k": [1, 10, 100], "precision": [v, v, v]}}
    result = {
        "schema": SCHEMA_VERSION,
        "key": {**key.__dict__},
        "config": config or {"student": {"epochs": 1}},
        "dataset": {"name": dataset, "synthetic": False, "revision": revision, "split_checksum": split},
        "metrics": {"i2t": curve(i2t), "t2i": curve(t2i)},
    }
    return ResultStore(root).write(key, result, None)


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "res"
    for seed, (a, b) in enumerate([(0.20, 0.30), (0.22, 0.34)]):
        for bits in (16, 32):
            fake_result(root, "djsrh", "ukd", "dcmh", bits, seed, a + bits / 1000, b)
            fake_result(root, "djsrh", "ukd", "none", bits, seed, a - 0.05, b - 0.05)
            fake_result(root, "none", "labels", "dcmh", bits, seed, 0.9, 0.9)
    return root


def test_cells_are_mean_and_sample_std_over_seeds(store):
    (board,) = build_leaderboards(store)
    rows = {r.label: r for r in board.rows}
    mean, std, n = rows["djsrh → ukd → dcmh"].cells[("i2t", 16)]
    assert n == 2 and mean == pytest.approx(np.mean([0.216, 0.236])) and std == pytest.approx(np.std([0.216, 0.236], ddof=1))
    assert [r.kind for r in board.rows] == ["teacher", "distilled", "upper-bound"]
    md = to_markdown(board)
    # The upper bound is higher but not bold: the best label-free value is.
    assert "| *labels → dcmh (supervised upper bound)* | 0.9000 ± 0.0000" in md
    assert "**0.2260 ± 0.0141**" in md


def test_exact_duplicates_count_once(store, tmp_path):
    shutil.copytree(store / "wiki", store / "copy" / "wiki")
    (board,) = build_leaderboards(store)
    assert all(c[2] == 2 for r in board.rows for c in r.cells.values())


def test_mixed_protocols_and_revisions_are_refused(store):
    fake_result(store, "djsrh", "ukd", "dcmh", 16, 5, 0.1, 0.1, protocol="other")
    with pytest.raises(DataError, match="mix protocols other, wiki; choose one with --protocol"):
        build_leaderboards(store)
    (board,) = build_leaderboards(store, protocol="wiki")
    assert board.protocol == "wiki"
    fake_result(store, "djsrh", "ukd", "dcmh", 16, 6, 0.1, 0.1, revision="rev2")
    with pytest.raises(DataError, match="different data or splits"):
        build_leaderboards(store, protocol="wiki")


def test_variants_get_labels_from_their_differing_settings(store):
    for seed in (0, 1):
        fake_result(store, "djsrh", "ukd", "dcmh", 16, seed, 0.5, 0.5, variant="v2", config={"student": {"epochs": 9}})
    (board,) = build_leaderboards(store)
    labels = sorted(r.label for r in board.rows if r.student == "dcmh" and r.teacher == "djsrh")
    assert labels == ["djsrh → ukd → dcmh [student.epochs=1]", "djsrh → ukd → dcmh [student.epochs=9]"]


def test_reported_rows_are_separate_and_cited(tmp_path):
    root = tmp_path / "res"
    fake_result(root, "ucch", "ukd", "none", 16, 0, 0.7, 0.7, dataset="mirflickr25k", protocol="ucch")
    (board,) = build_leaderboards(root)
    md = to_markdown(board)
    assert "## Reported in papers (not reproduced here)" in md and "Unsupervised Contrastive Cross-modal Hashing" in md
    assert "| ucch (reported) | 0.739 | 0.744 | 0.754 | 0.760 | 0.725 | 0.725 | 0.743 | 0.747 |" in md
    assert "reported:ucch_tpami2022" in to_csv(board)


def test_html_is_one_static_file_with_inline_figures(store, tmp_path):
    res = CliRunner().invoke(app, ["leaderboard", "--results", str(store), "-f", "md,csv,html", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "out" / "wiki" / "leaderboard.html").read_text()
    assert page.count("<svg") == 3 and "src=" not in page and "<link" not in page and "<script" not in page
    assert (tmp_path / "out" / "wiki" / "plots" / "wiki-map-vs-bits.png").is_file()
    again = CliRunner().invoke(app, ["leaderboard", "--results", str(store), "-f", "md,csv,html", "-o", str(tmp_path / "again")])
    assert again.exit_code == 0
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "plots/wiki-map-vs-bits.svg"):
        assert (tmp_path / "out" / "wiki" / name).read_bytes() == (tmp_path / "again" / "wiki" / name).read_bytes(), name


def test_cli_errors_are_one_line(store, tmp_path):
    runner = CliRunner()
    for args, pattern in (
        (["--results", str(tmp_path / "none")], "no results under"),
        (["--results", str(store), "--dataset", "coco"], "no results for dataset 'coco'"),
        (["--results", str(store), "--metric", "nope"], "metric 'nope' is not stored"),
        (["--results", str(store), "-f", "pdf"], "--format must be md, csv or html"),
        (["--results", str(store), "-f", "html"], "give --out DIR"),
        (["--results", str(store), "--bits", "128"], "no wiki results at 128 bits"),
    ):
        res = runner.invoke(app, ["leaderboard", *args])
        assert res.exit_code == 2 and res.output.strip().startswith("error:") and pattern in res.output, res.output


def test_plot_command_writes_png_and_svg(store, tmp_path):
    res = CliRunner().invoke(app, ["plot", "--results", str(store), "--bits", "32", "-o", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "p" / "wiki").iterdir())
    assert names == ["wiki-map-vs-bits.png", "wiki-map-vs-bits.svg", "wiki-pk-32bits.png", "wiki-pk-32bits.svg",
                     "wiki-pr-32bits.png", "wiki-pr-32bits.svg"]

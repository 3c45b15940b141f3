"""benchmarks/scale.py and benchmarks/gpu_check.py at tiny size: the NUS-WIDE TC-10 file writer
reads back through the real ``nus-wide-tc10`` loader, a scale run prints every stage and a memory
figure, and the GPU check says plainly when there is no CUDA device."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


scale = _load("scale")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return env


def test_writer_layout_is_read_by_the_nus_wide_loader(tmp_path):
    from cmhbench.data.nuswide import load_tc10

    paths = scale.write_nus_tc10(tmp_path, size=300, seed=3)
    assert sorted(paths) == ["nus-wide-tc10-lall.mat", "nus-wide-tc10-xall-vgg.mat", "nus-wide-tc10-yall.mat"]
    for name in ("nus-wide-tc10-xall-vgg.mat", "nus-wide-tc10-yall.mat"):  # MAT v7.3: HDF5 with MATLAB's header
        assert h5py.is_hdf5(paths[name])
        assert paths[name].read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(paths["nus-wide-tc10-xall-vgg.mat"]) as f:  # MATLAB's 300 x 4096 is h5py's 4096 x 300
        assert f["XAll"].shape == (4096, 300) and f["XAll"].dtype == np.float32

    data = load_tc10(tmp_path, protocol="djsrh:query=100,train=100")
    assert data.image.shape == (300, 4096) and data.image.dtype == np.float32
    assert data.text.shape == (300, 1000) and data.labels.shape == (300, 10)
    assert data.details["filtered_out"] == 0  # every item labelled
    assert (data.image >= 0).all() and data.image.max() > 0
    assert set(np.unique(data.text)) == {0.0, 1.0} and (data.text.sum(1) > 0).all()
    assert len(data.splits.query) == 100 and len(data.splits.train) == 100

    # the stamp makes a second call reuse the files; another seed rewrites them
    mtime = paths["nus-wide-tc10-xall-vgg.mat"].stat().st_mtime_ns
    scale.write_nus_tc10(tmp_path, size=300, seed=3)
    assert paths["nus-wide-tc10-xall-vgg.mat"].stat().st_mtime_ns == mtime
    first = data.image.copy()
    scale.write_nus_tc10(tmp_path, size=300, seed=4)
    assert not np.array_equal(load_tc10(tmp_path, protocol="ucch:query=100").image, first)


def test_writer_chunks_do_not_depend_on_chunk_boundaries_in_shape(tmp_path):
    """A size that is not a multiple of the chunk writes every item (the last chunk is partial)."""
    from cmhbench.data.nuswide import load_tc10

    size = scale.CHUNK + 7
    scale.write_nus_tc10(tmp_path, size=size)
    data = load_tc10(tmp_path, protocol="ucch:query=100")
    assert data.image.shape == (size, 4096)
    assert (data.image[-7:].sum(1) > 0).all() and (data.text[-7:].sum(1) > 0).all()


def test_protocol_sizes_and_epoch_overrides():
    assert scale.protocol_for("djsrh", scale.FULL_SIZE) == "djsrh"
    assert scale.protocol_for("ucch", 20000) == "ucch"
    assert scale.protocol_for("ucch", 300) == "ucch:query=100"
    assert scale.protocol_for("dadh", 300) == "dadh:query=100,train=100"
    ucch = scale.epoch_overrides(scale.PipelineSpec("ucch"), 3)
    assert "teacher.epochs=3" in ucch and "teacher.warmup_epochs=1" in ucch  # min(default 1, 3)
    pair = scale.epoch_overrides(scale.PipelineSpec(None, "labels", "linear"), 2)
    assert pair == ["student.epochs=2"]
    spec = scale.PipelineSpec(None, "labels", "linear")
    assert scale.applicable(spec, ("teacher.projection=random", "linear.lr=0.1")) == ["linear.lr=0.1"]


def test_scale_script_at_tiny_size_prints_stages_and_memory(tmp_path):
    data_dir, out = tmp_path / "nus", tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--data-dir", str(data_dir), "--size", "300", "--protocols", "djsrh",
         "--teachers", "features", "--strategies", "labels", "--students", "linear", "--epochs", "1",
         "--set", "teacher.projection=random", "--json", str(out)],
        env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout
    assert "### protocol `djsrh:query=100,train=100`" in table
    for column in ("peak RSS MiB", "peak / features", "peak reached in", *scale.STAGES):
        assert column in table
    assert "| features alone |" in table and "| none + labels -> linear |" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for r in rows:
        assert r["peak_rss"] > 100 * 2**20  # Python + torch alone hold more than 100 MiB
        assert r["baseline_rss"] < r["peak_rss"]
        assert r["stages"]["load"] > 0 and r["stages"]["encode"] > 0 and r["stages"]["evaluate"] > 0
        assert r["split_sizes"]["query"] == 100
        stages = [stage for stage, _ in r["marks"]]  # VmHWM at the end of each stage, in order
        assert stages[:2] == ["load", "copies to device"] and stages[-1] == "evaluate"
        assert r["peak_stage"] in [*stages, "after the last stage"]  # e.g. writing the result
    assert rows[0]["stages"]["teacher/epoch"] > 0 and rows[0]["stages"]["student/epoch"] is None
    assert rows[1]["stages"]["distill"] >= 0 and rows[1]["stages"]["student/epoch"] > 0
    # the features teacher tracks no epoch loop; linear (DCMH's loop) starts its one epoch within its fit
    assert [r["stages"]["teacher setup"] for r in rows] == [None, None] and rows[0]["stages"]["student setup"] is None
    assert 0 <= rows[1]["stages"]["student setup"] < rows[1]["stages"]["student/epoch"]
    progress = [line for line in proc.stderr.splitlines() if line.startswith("# djsrh:")]
    assert len(progress) == 2 and all(": ok, peak " in line and "(load " in line for line in progress)


def test_setup_clock_times_a_fit_up_to_its_first_tracked_step():
    from cmhbench.interfaces import NullProgress

    now = [0.0]
    clock = scale.SetupClock(lambda: now[0])
    progress = clock.progress(NullProgress())
    assert list(progress.track(range(2), 2, "outside a fit")) == [0, 1] and clock.setup == {}
    with clock.fit("teacher"):
        now[0] = 5.0  # a fit that tracks no loop gets no entry
    with clock.fit("student"):
        now[0] = 12.5  # the work before the first epoch
        steps = []
        for epoch in progress.track(range(3), 3, "epochs"):
            now[0] += 100.0
            steps.append(epoch)
        for _ in progress.track(range(2), 2, "a later loop"):  # only the first loop's start counts
            now[0] += 1.0
    assert steps == [0, 1, 2] and clock.setup == {"student": 7.5}
    assert list(progress.track(iter("ab"), None, "after the fit")) == ["a", "b"] and clock.setup == {"student": 7.5}


def test_scale_writes_the_measurements_after_every_run(tmp_path):
    import argparse

    out = tmp_path / "scale.json"
    args = argparse.Namespace(size=300, epochs=1, bits=32, device="cpu", threads=1)
    first = scale.Measurement("djsrh", "features alone", "ok", peak_rss=2**30, stages={"load": 1.5})
    scale.write_measurements(out, [first], args)
    assert [r["pipeline"] for r in json.loads(out.read_text())["rows"]] == ["features alone"]
    scale.write_measurements(out, [first, scale.Measurement("djsrh", "none + labels -> linear", "failed")], args)
    data = json.loads(out.read_text())
    assert [r["status"] for r in data["rows"]] == ["ok", "failed"] and data["size"] == 300
    assert data["rows"][0]["stages"] == {"load": 1.5} and [p.name for p in tmp_path.iterdir()] == ["scale.json"]


def test_scale_refuses_a_data_dir_inside_the_project(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "scale.py"), "--data-dir", str(ROOT / "nus-scale"), "--size", "300"],
                          env=_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "outside the project" in proc.stderr
    assert not (ROOT / "nus-scale").exists()


def test_gpu_check_without_cuda_says_so_and_exits_0():
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--methods", "features"], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "did not run" in lines[0]


def test_gpu_check_compares_every_scalar_metric():
    gpu_check = _load("gpu_check")
    cpu = {"i2t": {"map": 0.5, "p@50": 0.4, "pr_curve": {"radius": [0]}}, "t2i": {"map": 0.6}}
    cuda = {"i2t": {"map": 0.51, "p@50": 0.43, "pr_curve": {"radius": [1]}}, "t2i": {"map": 0.6}}
    assert gpu_check.flat_metrics(cpu) == {"i2t/map": 0.5, "i2t/p@50": 0.4, "t2i/map": 0.6}
    diff, where = gpu_check.compare(cpu, cuda)
    assert where == "i2t/p@50" and abs(diff - 0.03) < 1e-12


def test_gpu_check_on_demand_runs_hold_nothing_dense(tmp_path):
    gpu_check = _load("gpu_check")
    probe = ("from cmhbench import interfaces; "
             "print(interfaces.dense_is_cached(2), interfaces.data_relative_cache_bytes("
             "interfaces.PairedFeatures(*[__import__('torch').zeros(2, 1)] * 2)))")
    proc = subprocess.run([sys.executable, "-c", gpu_check.ON_DEMAND + probe], env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "0"]
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--cpu-only", "--on-demand", "--methods",
                           "features", "linear", "--epochs", "1"], env=_env(), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nothing held dense (--on-demand)" in proc.stdout
    assert "| none + labels -> linear |" in proc.stdout and "| features + ukd -> linear |" in proc.stdout


def test_knn_speed_prints_every_stage_at_tiny_size():
    proc = subprocess.run([sys.executable, str(BENCH / "knn_speed.py"), "--size", "3000", "--dim", "8", "--repeat", "1"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "n = 3,000, K = 1,665," in proc.stdout
    for stage in ("distill chunk", "products + keys", "kth_smallest", "among_k_smallest", "| block |", "| columns |",
                  "| range-finder block | 3000 rows x 2 spaces |", "|   whole keys |"):  # ROW_BLOCK_BYTES holds all 3,000 rows
        assert stage in proc.stdout


def test_subspace_speed_prints_every_strategy_and_restores_dadhs_blocks(capsys):
    import importlib

    dadh = importlib.import_module("cmhbench_plugins.students.dadh")
    every_block = dadh._row_blocks
    assert _load("subspace_speed").main(["--size", "3000", "--blocks", "2", "--repeat", "1"]) == 0
    assert dadh._row_blocks is every_block  # the first-blocks window is undone
    out = capsys.readouterr().out
    # 64 MiB row blocks of a 3,000-column S would hold 5,592 rows: one block of all 3,000 a pass
    assert "n = 3,000, x (3,000, 272), row blocks of 3000 rows (1 a pass, 1 timed)" in out
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:6]]
            for line in out.splitlines() if line.startswith("| sakdh") or line.startswith("| codes")}
    assert set(rows) == {"sakdh", "codes"}

    def half_unit(cell):  # the rounding of a printed figure: half a unit of its last decimal
        return 0.5 * 10.0 ** -len(cell.partition(".")[2])

    for cells in rows.values():
        block_ms, s_x, st_x, subspace = (float(c.replace(",", "")) for c in cells)
        assert block_ms > 0 and s_x > 0 and st_x > 0
        # subspace = 3 (S x + S^T x) of the unrounded seconds, each printed figure rounded on its own
        tolerance = 3 * (half_unit(cells[1]) + half_unit(cells[2])) + half_unit(cells[3]) + 1e-9
        assert abs(subspace - 3 * (s_x + st_x)) <= tolerance

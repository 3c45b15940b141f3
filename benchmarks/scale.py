"""Scale: peak memory and stage times of whole pipelines on NUS-WIDE TC-10-sized files, per protocol.

Writes, on demand, generated files in the layout the ``nus-wide-tc10`` dataset reads (DCMH
lineage, see :mod:`cmhbench.data.nuswide`), at NUS-WIDE TC-10 size unless ``--size`` says less:

- ``nus-wide-tc10-xall-vgg.mat``: ``XAll``, N x 4096 float32 "fc7-like" non-negative features,
  MAT v7.3 (HDF5 with the 512-byte MATLAB header; MATLAB's N x 4096 is h5py's 4096 x N, chunked
  by 256 items), as a 3 GB matrix must be stored by MATLAB (v5 holds at most 2 GB a variable);
- ``nus-wide-tc10-yall.mat``: ``YAll``, N x 1000 0/1 tags (uint8), MAT v7.3 (DJSRH reads it with
  h5py, ``datasets.py:200-201``);
- ``nus-wide-tc10-lall.mat``: ``LAll``, N x 10 0/1 labels (uint8), MAT v5 (DJSRH reads it with
  ``scipy.io.loadmat``, ``datasets.py:198``); every item has at least one label and one tag.

The values are generated chunk by chunk (labels drive the features and tags through fixed random
maps, plus noise, so the methods have something to learn) and written chunk by chunk: the writer
never holds more than one chunk of either matrix. A ``scale-data.json`` stamp records size and
seed, and files that match it are reused. Keep ``--data-dir`` outside the project (full size is
about 3.3 GB on disk: 3.06 GB of XAll, 0.19 GB of YAll).

Then, per protocol (``--protocols``; default ``djsrh dcmh ukd ucch dadh``) and pipeline (every
teacher alone and every strategy -> student pair unless ``--teachers`` / ``--strategies`` /
``--students`` narrow it; a strategy that reads a teacher distils ``--distil-teacher``,
default ``features``), one fresh ``cmhbench run`` process is started with every ``*epochs``
field of its methods set to ``--epochs`` (``--set role.epochs=E``; secondary counts such as
UCCH's ``warmup_epochs`` or UGACH's ``pretrain_epochs`` to ``min(default, E)``); ``--set
ROLE.KEY=VALUE`` adds an override to the runs whose pipeline has that role or method. Where the
files are too small for a protocol's official sizes, the sizes are scaled down
(``query = max(100, N/10)``, ``train = max(100, N/3)``) and the table says which sizes ran.

Measured per run:

- peak resident memory: ``ru_maxrss`` of that child alone, from ``os.wait4`` on its pid (the
  kernel's high-water mark of its resident set, Python, torch and every stage included); also
  the resident memory just before the dataset is loaded (``before load``: imports only), so that
  ``(peak - before) / features`` isolates what the data and training add, the high-water mark at
  the end of the load (``load peak``), and the stage at whose end the child's ``VmHWM``
  (/proc/self/status) first reached the peak (``peak reached in``: ``load``, ``copies to device``
  (the runner's per-split tensors), ``teacher fit``, ``strategy distill``, ``student fit``,
  ``encode``, ``evaluate``, or ``after the last stage``, e.g. while the result is written);
- ``features``: the size of the feature matrices as the loader holds them, N x (4096 + 1000)
  float32; the issue's goal is peak <= 2 x features;
- stage times from the result's ``timings`` (``teacher_fit_s`` and ``student_fit_s`` divided by
  the epochs where the method has an ``epochs`` field, else the whole fit; ``distill_s``,
  ``encode_s``, ``evaluate_s``) and ``load_s`` (the runner's ``Runner.load_data``: reading,
  checking and splitting the files; for results without one, the child's own timing of it);
- ``teacher setup`` and ``student setup``: the seconds from the start of that fit to the first
  step of the first loop it tracks with ``ctx.progress`` (every method with an ``epochs`` field
  tracks its epoch loop), i.e. the work done once per fit before the first epoch, such as DADH's
  leading subspace of S under an on-demand supervision (:class:`SetupClock`); "—" for a fit that
  tracks no loop. It is part of the fit, so ``X/epoch`` includes it (``fit / epochs``, as in every
  earlier table): the epochs alone take ``X/epoch * E - setup``.

    python benchmarks/scale.py --data-dir /scratch/nus-scale                      # full size, everything
    python benchmarks/scale.py --data-dir /tmp/nus --size 20000 --protocols djsrh \\
        --teachers features --strategies labels --students linear dcmh --epochs 1 --json out.json
    python benchmarks/scale.py --data-dir /tmp/nus --size 20000 --write-only      # just the files

Run it on an otherwise idle machine with ``--threads`` set to what the machine has.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATASET = "nus-wide-tc10"
FULL_SIZE = 186577  # NUS-WIDE TC-10 pairs (cmhbench/data/nuswide.py)
IMAGE_DIM = 4096
TEXT_DIM = 1000
CLASSES = 10
CHUNK = 4096  # items generated and written at a time
STAMP = "scale-data.json"
PROTOCOLS = ("djsrh", "dcmh", "ukd", "ucch", "dadh")
MAT73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
PROBE_ENV = "CMHBENCH_SCALE_PROBE"
LABEL_RATE = np.array([0.30, 0.25, 0.22, 0.18, 0.15, 0.13, 0.11, 0.10, 0.09, 0.08])  # skewed, as NUS-WIDE's


# ----------------------------------------------------------------------------------------- files


def feature_bytes(n: int) -> int:
    """Bytes of the feature matrices as the loader holds them: n x (4096 + 1000) float32."""
    return n * (IMAGE_DIM + TEXT_DIM) * 4


def _chunk(rng: np.random.Generator, rows: int, maps: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """One chunk: ``(labels (rows, 10) uint8, image (rows, 4096) float32, tags (rows, 1000) uint8)``."""
    image_map, text_map = maps
    labels = (rng.random((rows, CLASSES)) < LABEL_RATE).astype(np.uint8)
    empty = labels.sum(1) == 0
    labels[empty, rng.integers(0, CLASSES, int(empty.sum()))] = 1
    lab = labels.astype(np.float32)
    image = lab @ image_map
    image += rng.standard_normal((rows, IMAGE_DIM), dtype=np.float32)
    np.maximum(image, 0.0, out=image)  # fc7 features are post-ReLU
    logits = lab @ text_map - 4.0
    tags = (rng.random((rows, TEXT_DIM), dtype=np.float32) < 1.0 / (1.0 + np.exp(-logits))).astype(np.uint8)
    untagged = np.flatnonzero(tags.sum(1) == 0)
    tags[untagged, np.argmax(logits[untagged], axis=1)] = 1
    return labels, image, tags


def _mat73(path: Path) -> None:
    """Stamp an HDF5 file (written with a 512-byte user block) with MATLAB's v7.3 header."""
    with open(path, "r+b") as fh:
        fh.write(MAT73_HEADER.ljust(128, b" "))


def write_nus_tc10(folder: Path, size: int = FULL_SIZE, seed: int = 0) -> dict[str, Path]:
    """Write generated NUS-WIDE TC-10 files of ``size`` pairs into ``folder`` (reused when the stamp
    matches); returns file name -> path. Memory: one chunk of 4096 items at a time."""
    import h5py
    import scipy.io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = ("nus-wide-tc10-xall-vgg.mat", "nus-wide-tc10-yall.mat", "nus-wide-tc10-lall.mat")
    paths = {name: folder / name for name in names}
    stamp = {"size": size, "seed": seed, "image_dim": IMAGE_DIM, "text_dim": TEXT_DIM, "classes": CLASSES, "version": 1}
    stamp_path = folder / STAMP
    if stamp_path.is_file() and all(p.is_file() for p in paths.values()):
        if json.loads(stamp_path.read_text()) == stamp:
            return paths
    stamp_path.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    maps = (
        (rng.random((CLASSES, IMAGE_DIM), dtype=np.float32) < 0.1) * rng.gamma(2.0, 1.0, (CLASSES, IMAGE_DIM)).astype(np.float32),
        rng.standard_normal((CLASSES, TEXT_DIM)).astype(np.float32) * 1.5,
    )
    labels = np.empty((size, CLASSES), np.uint8)  # 10 bytes an item: kept whole, written as v5 at the end
    with h5py.File(paths[names[0]], "w", userblock_size=512) as fx, h5py.File(paths[names[1]], "w", userblock_size=512) as fy:
        # h5py shows MATLAB's axes reversed: MATLAB's N x d is h5py's d x N
        xall = fx.create_dataset("XAll", (IMAGE_DIM, size), np.float32, chunks=(IMAGE_DIM, min(256, size)))
        yall = fy.create_dataset("YAll", (TEXT_DIM, size), np.uint8, chunks=(TEXT_DIM, min(1024, size)))
        for start in range(0, size, CHUNK):
            stop = min(size, start + CHUNK)
            lab, image, tags = _chunk(rng, stop - start, maps)
            labels[start:stop] = lab
            xall[:, start:stop] = image.T
            yall[:, start:stop] = tags.T
    _mat73(paths[names[0]])
    _mat73(paths[names[1]])
    scipy.io.savemat(paths[names[2]], {"LAll": labels})
    stamp_path.write_text(json.dumps(stamp))
    return paths


# ------------------------------------------------------------------------------------- pipelines


@dataclass(frozen=True)
class PipelineSpec:
    """One pipeline: ``teacher`` alone (``strategy`` / ``student`` None) or strategy -> student."""

    teacher: Optional[str]
    strategy: Optional[str] = None
    student: Optional[str] = None

    @property
    def label(self) -> str:
        if self.student is None:
            return f"{self.teacher} alone"
        return f"{self.teacher or 'none'} + {self.strategy} -> {self.student}"

    def cli(self) -> list[str]:
        if self.student is None:
            return ["--teacher", str(self.teacher), "--student", "none"]
        return ["--teacher", self.teacher or "none", "--strategy", str(self.strategy), "--student", self.student]


def pipelines(teachers: list[str], strategies: list[str], students: list[str], distil_teacher: str,
              uses_teacher: dict[str, bool]) -> list[PipelineSpec]:
    """Every teacher alone, then every strategy -> student pair (its teacher: ``distil_teacher``)."""
    out = [PipelineSpec(t) for t in teachers]
    for strategy in strategies:
        for student in students:
            out.append(PipelineSpec(distil_teacher if uses_teacher[strategy] else None, strategy, student))
    return out


def epoch_overrides(spec: PipelineSpec, epochs: int, dataset: str = DATASET) -> list[str]:
    """``--set`` items putting each method's ``epochs`` field to ``epochs`` and its other
    ``*_epochs`` counts to ``min(default, epochs)`` (the default: the dataset's, else the config's)."""
    from cmhbench.plugins import get_registry

    registry = get_registry()
    out = []
    for role, name in (("teacher", spec.teacher), ("strategy", spec.strategy), ("student", spec.student)):
        if name is None:
            continue
        method = registry.method(role, name)
        base = dict(method.dataset_defaults.get(dataset, {}))
        for f in dataclasses.fields(method.config):
            if f.name == "epochs":
                out.append(f"{role}.epochs={epochs}")
            elif f.name.endswith("_epochs"):
                default = base.get(f.name, f.default)
                value = epochs if not isinstance(default, int) else min(default, epochs)
                out.append(f"{role}.{f.name}={value}")
    return out


def applicable(spec: PipelineSpec, items: tuple[str, ...]) -> list[str]:
    """The ``--set ROLE.KEY=VALUE`` / ``METHOD.KEY=VALUE`` items that name a role or method of ``spec``."""
    present = {role for role in ("teacher", "strategy", "student") if getattr(spec, role)}
    present |= {getattr(spec, role) for role in present}
    return [item for item in items if item.partition("=")[0].partition(".")[0] in present]


def protocol_for(name: str, size: int) -> str:
    """``name`` where its NUS-WIDE sizes fit ``size`` items, else ``name`` with scaled-down sizes."""
    from cmhbench.data.nuswide import NUS_PARAMS
    from cmhbench.data.protocols import resolve

    if resolve(name, NUS_PARAMS).needed_items <= size:
        return name
    query = max(100, size // 10)
    train = max(100, (size // 3) // 100 * 100)
    return f"{name}:query={query}" if name == "ucch" else f"{name}:query={query},train={train}"


# ------------------------------------------------------------------------------------ measuring


@dataclass
class Measurement:
    """One run: status, memory (bytes), stage seconds and the split sizes it ran on."""

    protocol: str
    pipeline: str
    status: str
    peak_rss: Optional[int] = None
    baseline_rss: Optional[int] = None
    load_peak_rss: Optional[int] = None
    process_s: Optional[float] = None
    stages: dict[str, Optional[float]] = field(default_factory=dict)
    split_sizes: dict[str, int] = field(default_factory=dict)
    marks: list = field(default_factory=list)  # [stage, VmHWM bytes at its end], in order

    @property
    def peak_stage(self) -> str:
        return peak_stage(self.marks, self.peak_rss)


def _status_bytes(key: str) -> Optional[int]:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (bytes), None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class SetupClock:
    """The seconds from the start of a teacher's or student's fit to the first step of the first loop
    that fit tracks with its ``ctx.progress``: what the method does once per fit before its first
    epoch. ``setup`` maps ``"teacher"`` / ``"student"`` to those seconds; a fit that tracks no loop
    gets no entry. ``clock`` gives seconds (``time.perf_counter``)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.setup: dict[str, float] = {}
        self._fit: Optional[tuple[str, float]] = None

    @contextmanager
    def fit(self, kind: str) -> Iterator[None]:
        """Time the fit of the ``kind`` method run inside this context."""
        self._fit = (kind, self.clock())
        try:
            yield
        finally:
            self._fit = None

    def progress(self, inner: Any) -> Any:
        """A progress that reports through ``inner`` and notes the first step of every tracked loop."""
        clock = self

        class TimedProgress:
            def track(self, iterable, total, description):
                for step, item in enumerate(inner.track(iterable, total, description)):
                    if step == 0:
                        clock._first_step()
                    yield item

        return TimedProgress()

    def _first_step(self) -> None:
        if self._fit is not None and self._fit[0] not in self.setup:
            kind, started = self._fit
            self.setup[kind] = self.clock() - started


def child(argv: list[str]) -> None:
    """Run ``cmhbench`` with ``argv`` and write, to the file named by ``$CMHBENCH_SCALE_PROBE``, the
    time of the dataset load (``Runner.load_data``), the resident memory before it, the peak
    resident memory (``VmHWM``) at the end of each stage (load, copies to the device, fit, distill,
    encode, evaluate), so that the stage where the peak is reached can be named, and the teacher's
    and student's setup seconds (:class:`SetupClock`)."""
    import cmhbench.runner as runner_mod
    from cmhbench.interfaces import NullProgress, RunContext

    probe = Path(os.environ[PROBE_ENV])
    clock = SetupClock()
    state: dict = {"marks": [], "setup": clock.setup}  # the clock's own dict: written as it fills

    def mark(stage: str) -> None:
        state["marks"].append([stage, _status_bytes("VmHWM")])
        probe.write_text(json.dumps(state))

    load_data, to_device, guard = runner_mod.Runner.load_data, runner_mod._to_device, runner_mod.plugin_guard
    encode, evaluate = runner_mod._encode, runner_mod.evaluate_code_set

    def timed_load(self, request):
        first = "load_s" not in state
        before = _status_bytes("VmRSS")
        t0 = time.perf_counter()
        data = load_data(self, request)
        if first:
            state.update(load_s=time.perf_counter() - t0, rss_before_load=before, peak_after_load=_status_bytes("VmHWM"))
            mark("load")
        return data

    def marked(name, fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            mark(name)
            return out
        return wrapper

    @contextmanager
    def marked_guard(spec, stage):
        timed = clock.fit(spec.kind) if stage == "fit" else nullcontext()
        with timed, guard(spec, stage):
            yield
        mark(f"{spec.kind} {stage}")

    def timed_context(*args, progress=None, **kwargs):
        return RunContext(*args, progress=clock.progress(NullProgress() if progress is None else progress), **kwargs)

    runner_mod.Runner.load_data = timed_load
    runner_mod.RunContext = timed_context
    runner_mod._to_device = marked("copies to device", to_device)
    runner_mod.plugin_guard = marked_guard
    runner_mod._encode = marked("encode", encode)
    runner_mod.evaluate_code_set = marked("evaluate", evaluate)
    from cmhbench.cli import main

    sys.argv = ["cmhbench", *argv]
    main()


def peak_stage(marks: list, peak: Optional[int]) -> str:
    """The first stage at whose end the peak resident memory had been reached (``after run``: later)."""
    for stage, hwm in marks:
        if hwm is not None and peak is not None and hwm >= peak * 0.995:
            return stage
    return "after the last stage" if marks else "—"


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run_pipeline(spec: PipelineSpec, protocol: str, data_dir: Path, epochs: int, bits: int, device: str,
                 threads: int, work: Path, seed: int = 0, extra: tuple[str, ...] = ()) -> tuple[Measurement, dict]:
    """Run one pipeline in a fresh process; returns its measurement and its result record ({} on failure)."""
    results = work / "results"
    probe = work / "probe.json"
    probe.unlink(missing_ok=True)
    args = ["run", "--dataset", DATASET, "--data-dir", str(data_dir), "--protocol", protocol, "--bits", str(bits),
            "--seed", str(seed), "--device", device, "--results", str(results), "--force", "--quiet", *spec.cli()]
    overrides = epoch_overrides(spec, epochs)
    for item in [*overrides, *applicable(spec, extra)]:
        args += ["--set", item]
    env = {**_env(threads), PROBE_ENV: str(probe)}
    out_path, err_path = work / "stdout.txt", work / "stderr.txt"
    start = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                                env=env, stdout=out, stderr=err, cwd=work)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    process_s = time.perf_counter() - start
    m = Measurement(protocol, spec.label, "ok", peak_rss=usage.ru_maxrss * 1024, process_s=process_s)
    if probe.is_file():
        p = json.loads(probe.read_text())
        m.baseline_rss, m.load_peak_rss = p.get("rss_before_load"), p.get("peak_after_load")
        m.stages["load"] = p.get("load_s")
        m.marks = p.get("marks", [])
        setup = p.get("setup", {})
        m.stages.update({"teacher setup": setup.get("teacher"), "student setup": setup.get("student")})
    record: dict = {}
    if proc.returncode != 0:
        lines = [ln for ln in (err_path.read_text() + out_path.read_text()).splitlines() if ln.strip()]
        m.status = f"failed (exit {proc.returncode}): {lines[-1][:200] if lines else 'no output'}"
        return m, record
    paths = [p for p in results.rglob("*.json") if ".sweeps" not in p.parts]
    if not paths:
        m.status = "failed: no result written"
        return m, record
    record = json.loads(max(paths, key=lambda p: p.stat().st_mtime).read_text())
    t = record.get("timings", {})
    if "load_s" in t:  # the runner's own figure, where it records one
        m.stages["load"] = t["load_s"]
    per = {role: epochs if f"{role}.epochs={epochs}" in overrides else 1 for role in ("teacher", "student")}
    m.stages.update({  # a method without an epochs field (features, cvh): its whole fit
        "teacher/epoch": t["teacher_fit_s"] / per["teacher"] if "teacher_fit_s" in t else None,
        "distill": t.get("distill_s"),
        "student/epoch": t["student_fit_s"] / per["student"] if "student_fit_s" in t else None,
        "encode": t.get("encode_s"),
        "evaluate": t.get("evaluate_s"),
    })
    m.split_sizes = dict(record.get("dataset", {}).get("split_sizes", {}))
    return m, record


# ---------------------------------------------------------------------------------------- table

STAGES = ("load", "teacher setup", "teacher/epoch", "distill", "student setup", "student/epoch", "encode", "evaluate")


def _mib(value: Optional[int]) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f}"


def _sec(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(rows: list[Measurement], size: int, epochs: int) -> str:
    """The markdown tables, one per protocol."""
    feats = feature_bytes(size)
    lines = []
    for protocol in dict.fromkeys(r.protocol for r in rows):
        group = [r for r in rows if r.protocol == protocol]
        sizes = next((r.split_sizes for r in group if r.split_sizes), {})
        size_text = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
        lines += [
            f"\n### protocol `{protocol}`: {size:,} pairs ({size_text}); features {feats / 2**20:,.0f} MiB; "
            f"{epochs} epoch(s); seconds\n",
            "| pipeline | peak RSS MiB | peak / features | before load MiB | (peak - before) / features | load peak MiB | "
            "peak reached in | " + " | ".join(STAGES) + " | process | status |",
            "|---|---:|---:|---:|---:|---:|---|" + "---:|" * len(STAGES) + "---:|---|",
        ]
        for r in group:
            ratio = f"{r.peak_rss / feats:.2f}" if r.peak_rss else "—"
            data_ratio = f"{(r.peak_rss - r.baseline_rss) / feats:.2f}" if r.peak_rss and r.baseline_rss else "—"
            lines.append(
                f"| {r.pipeline} | {_mib(r.peak_rss)} | {ratio} | {_mib(r.baseline_rss)} | {data_ratio} | "
                f"{_mib(r.load_peak_rss)} | {r.peak_stage} | " + " | ".join(_sec(r.stages.get(s)) for s in STAGES)
                + f" | {_sec(r.process_s)} | {r.status} |"
            )
    return "\n".join(lines)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="folder for the generated files (outside the project)")
    parser.add_argument("--size", type=int, default=FULL_SIZE, help=f"pairs to write (default {FULL_SIZE}, NUS-WIDE TC-10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data and of the runs")
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--teachers", nargs="*", default=None, help="teachers run alone (default: every one)")
    parser.add_argument("--strategies", nargs="*", default=None, help="strategies of the pairs (default: every one)")
    parser.add_argument("--students", nargs="*", default=None, help="students of the pairs (default: every one)")
    parser.add_argument("--distil-teacher", default="features", help="teacher of strategies that read one (default features)")
    parser.add_argument("--epochs", type=int, default=1, help="every method's epochs (default 1)")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (passed to cmhbench run)")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads of each run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="ROLE.KEY=VALUE",
                        help="extra override, passed to the runs whose pipeline has that role or method (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--write-only", action="store_true", help="write the files and stop")
    args = parser.parse_args(argv)
    if any("." not in item.partition("=")[0] or "=" not in item for item in args.overrides):
        parser.error("--set takes ROLE.KEY=VALUE or METHOD.KEY=VALUE")
    if args.size < 200:
        parser.error("--size must be at least 200 pairs")
    if _inside(args.data_dir, ROOT):
        parser.error(f"--data-dir must be outside the project ({ROOT})")

    t0 = time.perf_counter()
    write_nus_tc10(args.data_dir, args.size, args.seed)
    print(f"# files: {args.size:,} pairs in {args.data_dir} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    if args.write_only:
        return 0

    from cmhbench.plugins import get_registry

    registry = get_registry()
    teachers = list(registry.teachers) if args.teachers is None else args.teachers
    strategies = list(registry.strategies) if args.strategies is None else args.strategies
    students = list(registry.students) if args.students is None else args.students
    uses_teacher = {s: registry.method("strategy", s).uses_teacher for s in strategies}
    specs = pipelines(teachers, strategies, students, args.distil_teacher, uses_teacher)

    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="cmhbench-scale-") as tmp:
        for name in args.protocols:
            protocol = protocol_for(name, args.size)
            for spec in specs:
                work = Path(tmp) / f"{name}-{len(rows)}"
                work.mkdir()
                m, _ = run_pipeline(spec, protocol, args.data_dir, args.epochs, args.bits, args.device,
                                    args.threads, work, args.seed, tuple(args.overrides))
                rows.append(m)
                stages = ", ".join(f"{stage} {_sec(s)} s" for stage, s in m.stages.items() if s is not None)
                print(f"# {protocol} {spec.label}: {m.status}, peak {_mib(m.peak_rss)} MiB, "
                      f"{_sec(m.process_s)} s ({stages})", file=sys.stderr)
                if args.json:  # after every run: a long queue stopped half-way keeps what it measured
                    write_measurements(args.json, rows, args)
    print(f"\nNUS-WIDE TC-10 layout, generated; {args.bits} bits; device {args.device}; {args.threads} thread(s); "
          "peak RSS = ru_maxrss of the run's process (os.wait4); features = N x (4096 + 1000) float32.")
    print(table(rows, args.size, args.epochs))
    return 0 if all(r.status == "ok" for r in rows) else 1


def write_measurements(path: Path, rows: list[Measurement], args: argparse.Namespace) -> None:
    """Write the measurements so far to ``path`` as JSON, atomically (a reader never sees half a file)."""
    from cmhbench.files import atomic_open

    with atomic_open(path, fsync=False) as out:
        out.write(json.dumps({
            "size": args.size, "epochs": args.epochs, "bits": args.bits, "device": args.device, "threads": args.threads,
            "feature_bytes": feature_bytes(args.size),
            "rows": [{**dataclasses.asdict(r), "peak_stage": r.peak_stage} for r in rows],
        }, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())

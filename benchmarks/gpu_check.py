"""GPU check: every method's whole pipeline on CUDA against the same run on the CPU, then NUS-WIDE scale.

Part 1, small size: for every registered method, the whole pipeline (load, fit, distill, encode,
evaluate) on the offline ``synthetic`` dataset, with every ``*epochs`` field reduced to
``--epochs`` (as :mod:`benchmarks.scale` sets them) and a small split (``--protocol``, default
``dcmh:query=200,train=500,database=1500``):

- each teacher alone (``--teacher T --student none``);
- each student after ``labels`` and after ``ukd`` (whose teacher is ``--ukd-teacher``, default
  ``features``);

once with ``--device cpu`` and once with ``--device cuda``, each in a fresh process. With
``--on-demand`` both runs hold no similarity or graph dense (the dense-cache limits set to 0), so
the paths taken at NUS-WIDE scale (strategies' operators, ``dgcpn``'s graph rows on demand,
``dadh``'s low-rank update) are the ones compared. Every metric
the runs record (mAP@all, mAP@k, P@k, both directions) must agree within ``--tolerance``
(default 0.02 absolute): CUDA kernels sum in other orders than the CPU's, so a few code bits flip
and mAP moves by about 1e-3; a device-dependent bug (a step that does not run, data on the wrong
device, a host round trip that drops a gradient) moves it far more.

Part 2, scale: one NUS-WIDE TC-10-sized run on CUDA end to end (``--scale-pipeline``, default
``features`` + ``ukd`` -> ``dcmh``; files written by ``benchmarks/scale.py``'s writer into
``--data-dir``, ``--size`` pairs, default the full 186,577), timed per stage with its peak host
memory, as ``scale.py`` prints it.

Without a CUDA device the script prints one line saying so and exits 0 (nothing runs);
``--cpu-only`` runs the CPU half of part 1 alone (a smoke test of the script itself).

    python benchmarks/gpu_check.py --data-dir /scratch/nus-scale          # on a machine with a GPU
    python benchmarks/gpu_check.py --on-demand                            # part 1 again, nothing held dense
    python benchmarks/gpu_check.py --cpu-only --methods features linear --epochs 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
NO_CUDA = "gpu_check: no CUDA device available (torch.cuda.is_available() is False); the GPU check did not run."


def _scale():
    """``benchmarks/scale.py`` as a module (the file writer, epoch overrides and stage table)."""
    spec = importlib.util.spec_from_file_location("cmhbench_bench_scale", HERE / "scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


def small_pipelines(scale, registry, methods: Optional[list[str]], ukd_teacher: str) -> list:
    """Teachers alone, then each student after ``labels`` and after ``ukd`` (``methods`` filters by name)."""
    keep = (lambda name: True) if not methods else (lambda name: name in methods)
    out = [scale.PipelineSpec(t) for t in registry.teachers if keep(t)]
    for student in (s for s in registry.students if keep(s)):
        out.append(scale.PipelineSpec(None, "labels", student))
        out.append(scale.PipelineSpec(ukd_teacher, "ukd", student))
    return out


ON_DEMAND = ("import cmhbench.interfaces as interfaces; interfaces.DENSE_CACHE_BYTES = 0; "
             "interfaces.DENSE_FLOOR_BYTES = 0; ")


def run_small(scale, spec, device: str, protocol: str, epochs: int, bits: int, threads: int, work: Path,
              on_demand: bool = False) -> dict:
    """One synthetic run in a fresh process; returns ``{"metrics", "seconds", "error"}``. With
    ``on_demand`` the process holds no similarity or graph dense (:data:`ON_DEMAND`: the dense-cache
    limits of :mod:`cmhbench.interfaces` set to 0), so the paths that run at NUS-WIDE scale
    (strategies' operators, ``dgcpn``'s on-demand graph rows, ``dadh``'s low-rank update) run at
    small size."""
    results = work / "results"
    program = (ON_DEMAND if on_demand else "") + "from cmhbench.cli import main; main()"
    args = [sys.executable, "-c", program, "run", "--dataset", "synthetic",
            "--protocol", protocol, "--bits", str(bits), "--device", device, "--results", str(results),
            "--force", "--quiet", *spec.cli()]
    for item in scale.epoch_overrides(spec, epochs, dataset="synthetic"):
        args += ["--set", item]
    start = time.perf_counter()
    proc = subprocess.run(args, env=scale._env(threads), capture_output=True, text=True, cwd=work)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        return {"metrics": None, "seconds": seconds, "error": lines[-1][:200] if lines else f"exit {proc.returncode}"}
    path = max((p for p in results.rglob("*.json") if ".sweeps" not in p.parts), key=lambda p: p.stat().st_mtime)
    return {"metrics": json.loads(path.read_text())["metrics"], "seconds": seconds, "error": None}


def flat_metrics(metrics: dict) -> dict[str, float]:
    """``{direction: {name: value}}`` -> ``{"direction/name": value}`` for every numeric value."""
    out = {}
    for direction, values in metrics.items():
        if isinstance(values, dict):
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[f"{direction}/{name}"] = float(value)
    return out


def compare(cpu: dict, gpu: dict) -> tuple[float, str]:
    """Largest absolute difference over the metrics both runs hold, and its name."""
    a, b = flat_metrics(cpu), flat_metrics(gpu)
    common = sorted(set(a) & set(b))
    if not common:
        return float("inf"), "no common metric"
    worst = max(common, key=lambda k: abs(a[k] - b[k]))
    return abs(a[worst] - b[worst]), worst


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-only", action="store_true", help="run the CPU half of the small check only")
    parser.add_argument("--methods", nargs="*", help="teachers/students to check (default: every one)")
    parser.add_argument("--ukd-teacher", default="features", help="teacher the ukd strategy distils (default features)")
    parser.add_argument("--protocol", default="dcmh:query=200,train=500,database=1500", help="split of the synthetic runs")
    parser.add_argument("--epochs", type=int, default=2, help="every method's epochs in the small check (default 2)")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest |CPU - CUDA| of any metric (default 0.02)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each run")
    parser.add_argument("--data-dir", type=Path, help="folder for the NUS-WIDE-sized files (outside the project)")
    parser.add_argument("--size", type=int, default=None, help="pairs of the scale run (default: full NUS-WIDE TC-10)")
    parser.add_argument("--scale-protocol", default="djsrh", help="protocol of the scale run (default djsrh)")
    parser.add_argument("--scale-pipeline", nargs=3, default=["features", "ukd", "dcmh"],
                        metavar=("TEACHER", "STRATEGY", "STUDENT"), help="pipeline of the scale run (STUDENT none: teacher alone)")
    parser.add_argument("--scale-epochs", type=int, default=1)
    parser.add_argument("--on-demand", action="store_true",
                        help="small check with nothing held dense: operators and on-demand graphs at small size")
    args = parser.parse_args(argv)

    if not args.cpu_only and not cuda_available():
        print(NO_CUDA)
        return 0
    scale = _scale()
    from cmhbench.plugins import get_registry

    registry = get_registry()
    specs = small_pipelines(scale, registry, args.methods, args.ukd_teacher)
    devices = ["cpu"] if args.cpu_only else ["cpu", "cuda"]
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="cmhbench-gpu-check-") as tmp:
        for i, spec in enumerate(specs):
            runs = {}
            for device in devices:
                work = Path(tmp) / f"{i}-{device}"
                work.mkdir()
                runs[device] = run_small(scale, spec, device, args.protocol, args.epochs, args.bits, args.threads, work,
                                         args.on_demand)
            diff, where = (compare(runs["cpu"]["metrics"], runs["cuda"]["metrics"])
                           if len(devices) == 2 and all(r["metrics"] for r in runs.values()) else (None, ""))
            errors = "; ".join(f"{d}: {r['error']}" for d, r in runs.items() if r["error"])
            ok = not errors and (diff is None or diff <= args.tolerance)
            failed |= not ok
            rows.append((spec, runs, diff, where, ok, errors))
            print(f"# {spec.label}: " + ", ".join(f"{d} {r['seconds']:.1f} s" for d, r in runs.items())
                  + (f", max |diff| {diff:.2e} ({where})" if diff is not None else "") + (f" {errors}" if errors else ""),
                  file=sys.stderr)

    print(f"\nSmall check: synthetic, protocol {args.protocol}, {args.bits} bits, {args.epochs} epoch(s)"
          f"{', nothing held dense (--on-demand)' if args.on_demand else ''}; "
          f"tolerance {args.tolerance} on every metric (mAP@all, mAP@k, P@k, both directions).\n")
    print("| pipeline | " + " | ".join(f"{d} s" for d in devices) + " | cpu mAP i2t / t2i | max abs(cpu - cuda) | agree |")
    print("|---|" + "---:|" * len(devices) + "---|---|---|")
    for spec, runs, diff, where, ok, errors in rows:
        m = flat_metrics(runs["cpu"]["metrics"]) if runs["cpu"]["metrics"] else {}
        maps = " / ".join(f"{v:.4f}" for k, v in m.items() if k.endswith("/map"))
        print(f"| {spec.label} | " + " | ".join(f"{r['seconds']:.1f}" for r in runs.values())
              + f" | {maps or '—'} | " + (f"{diff:.2e} ({where})" if diff is not None else "—")
              + f" | {'yes' if ok else 'NO'}{' — ' + errors if errors else ''} |")

    if args.cpu_only:
        return 1 if failed else 0
    if args.data_dir is None:
        print("\nScale run skipped: give --data-dir for the NUS-WIDE-sized files.")
        return 1 if failed else 0
    size = args.size or scale.FULL_SIZE
    t0 = time.perf_counter()
    scale.write_nus_tc10(args.data_dir, size)
    print(f"# files: {size:,} pairs ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    teacher, strategy, student = args.scale_pipeline
    spec = scale.PipelineSpec(teacher) if student == "none" else scale.PipelineSpec(
        teacher if registry.method("strategy", strategy).uses_teacher else None, strategy, student)
    with tempfile.TemporaryDirectory(prefix="cmhbench-gpu-scale-") as tmp:
        m, _ = scale.run_pipeline(spec, scale.protocol_for(args.scale_protocol, size), args.data_dir,
                                  args.scale_epochs, args.bits, "cuda", args.threads, Path(tmp))
    print(f"\nScale run on CUDA: NUS-WIDE TC-10 layout, generated; {args.bits} bits; peak = host RSS (os.wait4).")
    print(scale.table([m], size, args.scale_epochs))
    return 1 if failed or m.status != "ok" else 0


if __name__ == "__main__":
    raise SystemExit(main())

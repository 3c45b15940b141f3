"""Training speed: each method's fit on Wiki at official settings, cmhbench next to its official code.

For every method whose official code can run here (PyTorch), the same fit runs twice on the same
machine, features and split (Wiki: train = database = the 2173 training pairs, the 693 test pairs
as queries), with the same number of torch threads:

- ``cmhbench``: ``cmhbench run --dataset wiki`` with the method's defaults (a teacher alone, or
  the ``labels`` strategy and the student); the fit time is the run's recorded
  ``teacher_fit_s`` / ``student_fit_s`` (training only), the process time is the whole command
  (start-up, data loading, fit, encoding, evaluation);
- ``official``: the official training code through its Wiki adapter (``<method>_wiki.py SEED BITS
  OUT.npz [--epochs N]``, as in ``../shared/peers``), timed as a whole process (start-up, data
  loading, fit, encoding). The official scripts do not report their training time alone, so the
  comparison that is fair to the official side is process against process.

Both sides' codes are scored with ``cmhbench eval`` so the table also shows that the two fits
learned comparable codes (a fast fit that learns nothing would show here). Adapters are searched
for in the ``--peers`` folders; they are measuring instruments kept outside the project (see
``benchmarks/fidelity.md`` for where each comes from). A method without an adapter in those
folders is timed on the cmhbench side only.

    PEERS_MIRROR=/path/to/mirrors python benchmarks/train_speed.py --peers ../shared/peers --peers /scratch/adapters
    python benchmarks/train_speed.py --methods djsrh jdsh --epochs dadh=10 --threads 1

``--epochs METHOD=N`` runs both sides of that method with N epochs (for official schedules too
long for the machine, e.g. DADH's 300 epochs of 8192-wide nets); the table says so in the
``epochs`` column. Nothing else runs during a measurement: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Method:
    """A method timed by this script: its kind and the file name of its official adapter."""

    name: str
    kind: str  # "teacher" or "student"
    adapter: Optional[str]  # e.g. "djsrh_wiki.py"; None where no official PyTorch code exists


METHODS = [
    Method("djsrh", "teacher", "djsrh_wiki.py"),
    Method("jdsh", "teacher", "jdsh_wiki.py"),
    Method("dgcpn", "teacher", "dgcpn_wiki.py"),
    Method("ucch", "teacher", "ucch_wiki.py"),
    Method("dsah", "teacher", "dsah_wiki.py"),
    Method("cvh", "teacher", None),  # no official code (IJCAI 2011)
    Method("ugach", "teacher", None),  # official code is TensorFlow 1
    Method("dcmh", "student", "dcmh_wiki.py"),  # the PyTorch port
    Method("ssah", "student", None),  # official code is TensorFlow 1
    Method("dadh", "student", "dadh_wiki.py"),
]


@dataclass
class Timing:
    """One side's measurement: seconds (``None`` where not measured) and the mAPs of its codes."""

    fit_s: Optional[float]
    process_s: float
    i2t: float
    t2i: float


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PEERS_THREADS"):
        env[var] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _cli() -> list[str]:
    return [sys.executable, "-c", "from cmhbench.cli import main; main()"]


def _evaluate(codes: Path, env: dict[str, str]) -> tuple[float, float]:
    """mAP@all (i2t, t2i) of a codes file, from ``cmhbench eval --json``."""
    out = subprocess.run([*_cli(), "eval", str(codes), "--json"], env=env, check=True,
                         capture_output=True, text=True).stdout
    metrics = json.loads(out)
    return _map_all(metrics, "i2t"), _map_all(metrics, "t2i")


def _map_all(metrics: dict, direction: str) -> float:
    for key, value in metrics.items():
        if direction in key and isinstance(value, dict):
            for name in ("map", "mAP", "map@all", "mAP@all"):
                if name in value:
                    return float(value[name])
        if key in (f"{direction}_map", f"map_{direction}", f"{direction}/map@all"):
            return float(value)
    raise KeyError(f"no mAP@all for {direction} in: {sorted(metrics)}")


def time_cmhbench(method: Method, seed: int, bits: int, epochs: Optional[int], data: str,
                  threads: int, work: Path) -> Timing:
    """Run cmhbench's fit of ``method`` on Wiki and return its timing and the mAPs of its codes."""
    results = work / f"cmhbench-{method.name}"
    args = [*_cli(), "run", "--dataset", "wiki", "--data-dir", f"{data}/wiki", "--bits", str(bits),
            "--seed", str(seed), "--results", str(results)]
    if method.kind == "teacher":
        args += ["--teacher", method.name, "--student", "none"]
    else:
        args += ["--strategy", "labels", "--student", method.name]
    if epochs is not None:
        args += ["--set", f"{method.kind}.epochs={epochs}"]
    env = _env(threads)
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True, text=True, cwd=work)
    process_s = time.perf_counter() - start
    record_path = next(p for p in results.rglob("*.json") if ".sweeps" not in p.parts)
    record = json.loads(record_path.read_text())
    fit_s = record["timings"][f"{method.kind}_fit_s"]
    metrics = record["metrics"]
    return Timing(fit_s, process_s, _map_all(metrics, "i2t"), _map_all(metrics, "t2i"))


def time_official(adapter: Path, seed: int, bits: int, epochs: Optional[int], threads: int,
                  work: Path) -> Timing:
    """Run an official adapter once and return its process time and the mAPs of its codes."""
    codes = work / f"official-{adapter.stem}.npz"
    args = [sys.executable, str(adapter), str(seed), str(bits), str(codes)]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    env = _env(threads)
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True, text=True, cwd=work)
    process_s = time.perf_counter() - start
    i2t, t2i = _evaluate(codes, env)
    return Timing(None, process_s, i2t, t2i)


def find_adapter(name: Optional[str], folders: list[Path]) -> Optional[Path]:
    """The first ``folders/name`` that exists, or ``None``."""
    if name is None:
        return None
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return None


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=[m.name for m in METHODS],
                        choices=[m.name for m in METHODS])
    parser.add_argument("--peers", action="append", type=Path, default=[],
                        help="folder holding official adapters <method>_wiki.py (repeatable)")
    parser.add_argument("--epochs", action="append", default=[], metavar="METHOD=N",
                        help="run both sides of METHOD with N epochs (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    parser.add_argument("--data", default=os.environ.get("CMHBENCH_DATA", str(ROOT.parent / "shared" / "data")),
                        help="folder holding wiki/ (default: $CMHBENCH_DATA)")
    args = parser.parse_args(argv)

    epochs: dict[str, int] = {}
    for item in args.epochs:
        name, _, value = item.partition("=")
        if name not in {m.name for m in METHODS} or not value.isdigit():
            parser.error(f"--epochs takes METHOD=N with a known method, got {item!r}")
        epochs[name] = int(value)
    if not (Path(args.data) / "wiki").is_dir():
        parser.error(f"no wiki/ folder under {args.data}: set CMHBENCH_DATA or --data")

    rows = []
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        work = Path(tmp)
        for method in (m for m in METHODS if m.name in args.methods):
            n = epochs.get(method.name)
            ours = time_cmhbench(method, args.seed, args.bits, n, args.data, args.threads, work)
            adapter = find_adapter(method.adapter, args.peers)
            theirs = time_official(adapter, args.seed, args.bits, n, args.threads, work) if adapter else None
            rows.append((method, n, ours, theirs))
            print(f"# {method.name}: cmhbench fit {ours.fit_s:.1f} s, process {ours.process_s:.1f} s"
                  + (f"; official process {theirs.process_s:.1f} s" if theirs else ""), file=sys.stderr)

    print(f"\nWiki, {args.bits} bits, seed {args.seed}, {args.threads} torch thread(s) per side; seconds.\n")
    print("| method | epochs | cmhbench fit | cmhbench process | official process | official / cmhbench "
          "| cmhbench mAP i2t / t2i | official mAP i2t / t2i |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for method, n, ours, theirs in rows:
        ratio = f"{theirs.process_s / ours.process_s:.2f}x" if theirs else "—"
        official_map = f"{theirs.i2t:.4f} / {theirs.t2i:.4f}" if theirs else "no official PyTorch code"
        print(f"| `{method.name}` | {n if n is not None else 'official'} | {_fmt(ours.fit_s)} | "
              f"{_fmt(ours.process_s)} | {_fmt(theirs.process_s if theirs else None)} | {ratio} | "
              f"{ours.i2t:.4f} / {ours.t2i:.4f} | {official_map} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

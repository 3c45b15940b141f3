"""Start-up time of each ``cmhbench`` command: wall time of the whole command on a small input.

Every command runs in a fresh process (the installed console script next to this Python), so
the time is what a user waits at the prompt: interpreter start, imports, plugin discovery and
the command's own (small) work. Inputs are tiny (a 5 x 50 codes file, the committed synthetic
results), so the figures are start-up, not work. ``import torch`` alone is shown for reference.

    python benchmarks/startup.py              # 5 repetitions, the median is printed
    python benchmarks/startup.py --repeat 9
    git worktree add /tmp/old <commit> && python benchmarks/startup.py --checkout /tmp/old   # an older version

Commands run as ``python -m cmhbench.cli ...``; with ``--checkout`` the modules of that checkout
(``cmhbench/`` and ``plugins/`` as ``cmhbench_plugins``) come first on ``PYTHONPATH``, so the
same installed environment measures another version of the code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _codes_file(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    codes = lambda n: np.where(rng.random((n, 16)) < 0.5, -1, 1).astype(np.int8)  # noqa: E731
    labels = lambda n: (rng.random((n, 4)) < 0.5).astype(np.uint8)  # noqa: E731
    path = folder / "codes.npz"
    np.savez(path, query_image_codes=codes(5), query_text_codes=codes(5), db_image_codes=codes(50),
             db_text_codes=codes(50), query_labels=labels(5), db_labels=labels(50))
    return path


def commands(folder: Path) -> list[tuple[str, list[str]]]:
    """(label, argv) of every command measured."""
    exe = [sys.executable, "-m", "cmhbench.cli"]
    synthetic = ROOT / "leaderboards" / "synthetic"
    return [
        ("python -c 'import torch' (reference)", [sys.executable, "-c", "import torch"]),
        ("cmhbench --version", [*exe, "--version"]),
        ("cmhbench --help", [*exe, "--help"]),
        ("cmhbench run --help", [*exe, "run", "--help"]),
        ("cmhbench list", [*exe, "list"]),
        ("cmhbench show djsrh", [*exe, "show", "djsrh"]),
        ("cmhbench data list", [*exe, "data", "list"]),
        ("cmhbench data info synthetic", [*exe, "data", "info", "synthetic"]),
        ("cmhbench eval (5 x 50 codes)", [*exe, "eval", str(_codes_file(folder)), "--json"]),
        ("cmhbench leaderboard (synthetic, md)", [*exe, "leaderboard", "--results", str(synthetic / "results")]),
        ("cmhbench sweep --dry-run (synthetic)", [*exe, "sweep", str(synthetic / "sweep.toml"), "--dry-run",
                                                  "--results", str(folder / "empty")]),
    ]


def measure(argv: list[str], repeat: int, pythonpath: str = "") -> tuple[float, float, int]:
    """Median and minimum wall seconds over ``repeat`` runs, and the last exit status."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    times, status = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        # From a neutral folder: the working folder would otherwise come first on sys.path.
        status = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                cwd=tempfile.gettempdir()).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (the median is printed)")
    parser.add_argument("--checkout", type=Path, help="measure the code of another checkout of cmhbench")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pythonpath = ""
        if args.checkout:
            shim = Path(tmp) / "shim"
            shim.mkdir()
            (shim / "cmhbench").symlink_to(args.checkout.resolve() / "cmhbench")
            (shim / "cmhbench_plugins").symlink_to(args.checkout.resolve() / "plugins")
            pythonpath = str(shim)
        rows = [(label, *measure(argv, args.repeat, pythonpath)) for label, argv in commands(Path(tmp))]
    width = max(len(r[0]) for r in rows)
    print(f"{'command':<{width}}  median s   min s  exit")
    print("-" * (width + 23))
    for label, median, fastest, status in rows:
        print(f"{label:<{width}}  {median:8.2f}  {fastest:6.2f}  {status:4d}")


if __name__ == "__main__":
    main()

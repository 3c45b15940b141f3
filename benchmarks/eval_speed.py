"""Evaluation speed and memory: cmhbench's engine against the field's per-query loop.

Generates structured codes (labels drive a random projection, plus noise, so distances carry
signal and many ties) at the sizes of MIRFlickr-25K, NUS-WIDE and MS-COCO, for several code
lengths, and times one retrieval direction computing mAP@all, mAP@50, mAP@500 and P@{50,100,500,1000}:

- ``cmhbench``: :func:`cmhbench.evaluation.retrieval_metrics` (numba counting sort on the CPU;
  ``--torch`` adds the torch path, on CUDA when available);
- ``loop``: a faithful re-implementation of the per-query loop of DJSRH's / DCMH-pytorch's
  ``calc_map`` (torch, one query at a time: Hamming by matrix product, sort, cumulative hits),
  with a stable sort so that both implement the same tie order and must agree.

Every measurement runs in a fresh subprocess that loads the codes from a temporary file, so the
peak RSS it reports is that of one evaluation (Python, torch and numba included); kernel
compilation is excluded from the times. Values are checked to agree within 1e-9.

    python benchmarks/eval_speed.py                      # all sizes, bits 16 32 64 128
    python benchmarks/eval_speed.py --sizes nuswide --bits 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {  # name: (queries, database, classes, label density)
    "mirflickr": (2000, 18015, 24, 0.15),
    "nuswide": (2100, 190000, 21, 0.10),
    "coco": (5000, 117218, 80, 0.035),
    "large": (5000, 200000, 21, 0.10),  # the memory bound of issue 6: 5000 queries x 200k items
}
TOPK = (50, 500)
PRECISION_AT = (50, 100, 500, 1000)


def make_codes(path: Path, size: str, bits: int, seed: int = 0) -> None:
    """Write query/database codes (int8 +-1) and labels (uint8) for one size and code length."""
    n_q, n_db, classes, density = SIZES[size]
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((classes, bits)).astype(np.float32)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = (rng.random((n, classes)) < density).astype(np.uint8)
        empty = labels.sum(1) == 0
        labels[empty, rng.integers(0, classes, empty.sum())] = 1
        codes = np.empty((n, bits), np.int8)
        for s in range(0, n, 20000):
            z = labels[s : s + 20000].astype(np.float32) @ proj
            z += 1.5 * rng.standard_normal(z.shape).astype(np.float32)
            codes[s : s + 20000] = np.where(z >= 0, 1, -1)
        return codes, labels

    qc, ql = part(n_q)
    dc, dl = part(n_db)
    np.savez(path, qc=qc, dc=dc, ql=ql, dl=dl)


def loop_metrics(qc, dc, ql, dl) -> dict[str, float]:
    """The per-query loop (DJSRH/DCMH calc_map style), torch on the CPU, stable tie order,
    float64 sums (the originals sum in float32, which alone moves mAP by ~1e-9)."""
    import torch

    qb, rb = torch.from_numpy(qc).float(), torch.from_numpy(dc).float()
    qL, rL = torch.from_numpy(ql).float(), torch.from_numpy(dl).float()
    bits = qb.shape[1]
    n = rb.shape[0]
    sums = {"map": 0.0, **{f"map@{k}": 0.0 for k in TOPK}, **{f"p@{k}": 0.0 for k in PRECISION_AT}}
    for i in range(qb.shape[0]):
        gnd = (qL[i] @ rL.T > 0).float()
        hamm = 0.5 * (bits - qb[i] @ rb.T)
        ind = torch.sort(hamm, stable=True).indices
        gnd = gnd[ind].double()
        hits = torch.cumsum(gnd, 0)
        pos = torch.arange(1, n + 1, dtype=torch.float64)
        tsum = float(gnd.sum())
        if tsum > 0:
            sums["map"] += float(((hits / pos) * gnd).sum() / tsum)
        for k in TOPK:
            rk = float(gnd[:k].sum())
            if rk > 0:
                sums[f"map@{k}"] += float(((hits[:k] / pos[:k]) * gnd[:k]).sum() / rk)
        for k in PRECISION_AT:
            sums[f"p@{k}"] += float(gnd[: min(k, n)].sum()) / min(k, n)
    return {key: value / qb.shape[0] for key, value in sums.items()}


def worker(path: str, method: str) -> None:
    """Run one measurement and print a JSON line (seconds, peak RSS in MiB, metric values)."""
    import torch

    from cmhbench.evaluation import retrieval_metrics
    from cmhbench.evaluation.engine import warm_up

    data = np.load(path)
    qc, dc, ql, dl = data["qc"], data["dc"], data["ql"], data["dl"]
    if method == "cmhbench":
        warm_up()
        start = time.perf_counter()
        out = retrieval_metrics(qc, dc, ql, dl, topk=TOPK, precision_at=PRECISION_AT, engine="cpu")
    elif method == "torch":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        small = [torch.from_numpy(a[:4]).to(device) for a in (qc, dc, ql, dl)]
        retrieval_metrics(*small, engine="torch", device=device)  # CUDA context and kernels
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = retrieval_metrics(qc, dc, ql, dl, topk=TOPK, precision_at=PRECISION_AT, engine="torch", device=device)
        method = f"torch-{device}"
    else:
        start = time.perf_counter()
        out = loop_metrics(qc, dc, ql, dl)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    keys = ["map", *[f"map@{k}" for k in TOPK], *[f"p@{k}" for k in PRECISION_AT]]
    print(json.dumps({"method": method, "seconds": seconds, "peak_mib": peak, "values": {k: out[k] for k in keys}}))


def measure(path: Path, method: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(path), method], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker {method} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["mirflickr", "nuswide", "coco"], choices=list(SIZES))
    parser.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64, 128])
    parser.add_argument("--no-loop", action="store_true", help="skip the (slow) per-query loop")
    parser.add_argument("--torch", action="store_true", help="also time the torch path (CUDA when available)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    import torch

    print(f"cpu threads: {torch.get_num_threads()}, cuda: {torch.cuda.is_available()}")
    header = f"{'size':<10}{'queries x database':>20}{'bits':>6}{'method':>14}{'seconds':>10}{'peak MiB':>10}{'speed-up':>10}{'max |diff|':>12}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for bits in args.bits:
                path = Path(tmp, f"{size}-{bits}.npz")
                make_codes(path, size, bits)
                rows = [measure(path, "cmhbench")]
                if args.torch:
                    rows.append(measure(path, "torch"))
                if not args.no_loop:
                    rows.append(measure(path, "loop"))
                base = rows[0]
                loop = next((r for r in rows if r["method"] == "loop"), None)
                n_q, n_db = SIZES[size][:2]
                for row in rows:
                    diff = max(abs(row["values"][k] - base["values"][k]) for k in base["values"])
                    speed = f"{loop['seconds'] / row['seconds']:.1f}x" if loop else "-"
                    print(
                        f"{size:<10}{f'{n_q} x {n_db}':>20}{bits:>6}{row['method']:>14}{row['seconds']:>10.3f}"
                        f"{row['peak_mib']:>10.0f}{speed:>10}{diff:>12.1e}"
                    )
                    if diff > 1e-9:
                        raise SystemExit(f"values disagree by {diff} for {row['method']}")


if __name__ == "__main__":
    main()

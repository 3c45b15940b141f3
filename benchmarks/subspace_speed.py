"""Speed of DADH's leading subspace of an on-demand S (``plugins/students/dadh.py``), at NUS-WIDE scale.

Above 8,192 training pairs DADH's discrete update keeps S's leading ``PROJECTION_RANK`` (256)
singular subspace, found once per fit by a randomised range finder
(:func:`~cmhbench_plugins.students.dadh.leading_singular_subspace`) that reads S by row blocks of
``ROW_BLOCK_BYTES`` (64 MiB): three passes of ``S x`` and three of ``S^T x`` with ``(n, 272)`` x,
each pass a read of all ``n^2`` entries. This script times, for the on-demand S that a strategy
hands over at that size (built from random teacher outputs, without a distill):

- ``sakdh``: the binary reconstructed similarity (``ReconstructedSimilarity`` from the strategy's
  own ``factors``), its threshold the ``similar_fraction`` (5%) quantile of a sample of entries;
- ``codes``: the graded Hamming affinity of the codes (``CodeAffinity``, the strategy's default).

(``ukd``'s on-demand kNN blocks are timed per block by ``benchmarks/knn_speed.py``; building them
here would be ``ukd``'s whole distill, about 20 minutes at full size.)

Per strategy: ``block`` (one row block computed, no product), and DADH's own ``_s_times`` and
``_st_times`` run over the first ``--blocks`` row blocks; the pass columns scale those to all
``n / rows`` blocks, and ``subspace`` is ``3 x S x + 3 x S^T x``, the range finder's six passes
(its QR factorisations and small SVD are not included: seconds at this size). Times are process
CPU seconds (a busy machine inflates them less than wall time), the best of ``--repeat`` runs.

    OMP_NUM_THREADS=1 python benchmarks/subspace_speed.py                 # n = 184,477
    OMP_NUM_THREADS=1 python benchmarks/subspace_speed.py --size 60000 --strategies sakdh
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Callable

FULL_SIZE = 186577 - 2100  # NUS-WIDE TC-10 database: the UCCH protocol's training set


def best_seconds(call: Callable[[], object], repeat: int) -> float:
    """The least process CPU time of ``repeat`` calls of ``call``, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        call()
        times.append(time.process_time() - t0)
    return min(times)


def seconds(value: float) -> str:
    """``value`` seconds with the decimals of ``scale.py``'s ``_sec`` (3 below 1 s, 2 below 10 s, 1 above),
    plus thousands separators, which ``_sec`` does not print."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def on_demand_similarity(strategy: str, n: int, bits: int, seed: int):
    """The operator ``strategy`` hands over for ``n`` pairs, from random ``(n, bits)`` teacher outputs."""
    import torch

    from cmhbench.interfaces import RunContext
    from cmhbench_plugins.strategies.codes import CodeAffinity
    from cmhbench_plugins.strategies.sakdh import ReconstructedSimilarity, SAKDHConfig, SAKDHStrategy

    g = torch.Generator().manual_seed(seed)
    out_image, out_text = (torch.tanh(torch.randn(n, bits, generator=g)) for _ in range(2))
    if strategy == "codes":
        return CodeAffinity([out_image.sign(), out_text.sign()])
    config = SAKDHConfig()
    reconstruction = ReconstructedSimilarity(*SAKDHStrategy(config, RunContext()).factors(out_image, out_text))
    sample = reconstruction.reconstructed_block(torch.randperm(n, generator=g)[:64]).flatten()
    threshold = float(sample.quantile(1.0 - config.similar_fraction))
    return reconstruction.with_threshold(threshold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE, help=f"training pairs n (default {FULL_SIZE:,})")
    parser.add_argument("--strategies", nargs="+", default=["sakdh", "codes"], choices=["sakdh", "codes"])
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=12, help="row blocks timed per pass (default 12)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from cmhbench.interfaces import Supervision, row_slices
    from cmhbench_plugins.students import dadh

    torch.set_num_threads(args.threads)
    n = args.size
    width = dadh.PROJECTION_RANK + 16  # the range finder's columns (256 + its oversampling)
    blocks = row_slices(n, dadh.ROW_BLOCK_BYTES // 4)  # the row blocks dadh._row_blocks reads
    rows, per_pass = blocks[0].stop, len(blocks)
    timed = min(args.blocks, per_pass)
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(1))
    first = torch.arange(rows)
    every_block = dadh._row_blocks
    print(f"n = {n:,}, x ({n:,}, {width}), row blocks of {rows} rows ({per_pass:,} a pass, {timed} timed), "
          f"{args.threads} thread(s), process CPU seconds, best of {args.repeat}\n")
    print("| strategy | block ms | S x pass s | S^T x pass s | subspace s (3 + 3 passes) |")
    print("|---|---:|---:|---:|---:|")
    try:
        dadh._row_blocks = lambda supervision: itertools.islice(every_block(supervision), timed)
        for strategy in args.strategies:
            supervision = Supervision(on_demand_similarity(strategy, n, args.bits, seed=0), cache_bytes=0)
            block_s = best_seconds(lambda: supervision.block(first), args.repeat)
            s_x = best_seconds(lambda: dadh._s_times(supervision, x), args.repeat) * per_pass / timed
            st_x = best_seconds(lambda: dadh._st_times(supervision, x), args.repeat) * per_pass / timed
            cells = [f"{1000 * block_s:,.1f}", *(seconds(v) for v in (s_x, st_x, 3 * (s_x + st_x)))]
            print(f"| {strategy} | " + " | ".join(cells) + " |", flush=True)
    finally:
        dadh._row_blocks = every_block
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

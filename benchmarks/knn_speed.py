"""Speed of the ``ukd`` strategy's on-demand kNN similarity (:class:`cmhbench.neighbours.KnnRadiusSimilarity`)
at NUS-WIDE scale, per stage and per block, without building it whole (a full build at 184,477 pairs
takes about half an hour of one CPU thread).

On random teacher outputs (``tanh`` of Gaussians, two spaces of ``--dim`` columns, float32, as a
128-bit teacher gives), K = ``--k-share`` of n (UKD's 10000 / 18015 by default), one thread:

- ``distill chunk``: one :data:`~cmhbench.neighbours.KEY_CHUNK_ROWS`-row chunk of the radii pass
  (keys of both spaces, their k-th selection with ties, the union mask): the build costs n / 64 of these;
- ``products``, ``products + keys``, ``kth_smallest``, ``among_k_smallest``: its parts, for one space;
- ``block`` (a 128-row minibatch against all n, what a student reads per step) and ``columns``
  (the same for ``M^T``, ``dcmh``'s text step): a student epoch costs n / 128 of each it reads;
- ``range-finder block``: the row block ``dadh``'s leading subspace reads (``ROW_BLOCK_BYTES`` of float32,
  90 rows at full size): each of its six passes over S reads n / rows of them, plus a product with
  an ``(n, 272)`` matrix per block that this script does not time (``benchmarks/subspace_speed.py`` does);
- ``  whole keys``: the same block read as before the panel reads (whole ``(rows, n)`` float64 keys per
  space, then :func:`~cmhbench.neighbours.among_k_smallest` over them; reused arrays), the same entries.

Reads need the radii of every row; here those of the first 512 rows are repeated down the rows (the
cost of a read does not depend on which radius a row has, except for rows with ties at the k-th key).
Times are medians of ``--repeat`` calls, in process CPU seconds (so that a busy machine inflates them
less than wall time), after one warm-up call.

    OMP_NUM_THREADS=1 python benchmarks/knn_speed.py                    # n = 184,477, 128-d
    OMP_NUM_THREADS=1 python benchmarks/knn_speed.py --size 30000 --dim 64
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

FULL_SIZE = 186577 - 2100  # NUS-WIDE TC-10 database: the UCCH protocol's training set


def median_ms(call: Callable[[], object], repeat: int) -> float:
    """Median process CPU time of ``repeat`` calls of ``call`` after one warm-up, in milliseconds."""
    call()
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        call()
        times.append(time.process_time() - t0)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE, help=f"training pairs n (default {FULL_SIZE:,})")
    parser.add_argument("--dim", type=int, default=128, help="teacher output width per space (default 128)")
    parser.add_argument("--k-share", type=float, default=10000 / 18015, help="K / n (default UKD's 10000 / 18015)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from cmhbench import neighbours as nb
    from cmhbench.training import fill_block_diagonal_
    from cmhbench_plugins.students.dadh import ROW_BLOCK_BYTES

    torch.set_num_threads(args.threads)
    n, k = args.size, max(1, round(args.k_share * args.size))
    g = torch.Generator().manual_seed(args.seed)
    spaces = [torch.tanh(2 * torch.randn(n, args.dim, generator=g)) for _ in range(2)]
    prepared = [nb._knn_space(z, "euclidean") for z in spaces]
    every = torch.arange(n)
    chunk = every[: nb._tile_chunk(None)]
    known = every[: min(n, 512)]

    def distill_chunk() -> None:
        for _ in nb._knn_member_chunks(prepared, k, "euclidean", len(chunk)):
            break

    z, sq = prepared[0]
    keys = nb._tiled_keys(z, sq, chunk, "euclidean")
    kth = nb.kth_smallest(keys, k)
    radii = [nb.kth_smallest(nb._tiled_keys(z, sq, known, "euclidean"), k) for z, sq in prepared]
    repeat_rows = lambda t: t.repeat(n // len(known) + 1)[:n]  # noqa: E731
    operator = nb.KnnRadiusSimilarity.__new__(nb.KnnRadiusSimilarity)  # radii filled in below, not built
    operator.n, operator.k, operator.metric, operator._floor = n, k, "euclidean", 0.0
    operator._buffers = nb.Buffers()
    operator.spaces = [(z, sq, *map(repeat_rows, r)) for (z, sq), r in zip(prepared, radii)]
    batch = every[:128]
    buffers = nb.Buffers()

    def whole_keys_block(rows):
        member = buffers.get("member", len(rows), n, torch.bool, rows.device)
        for s, (z, sq, radius, last, tied) in enumerate(operator.spaces):
            keys = nb._tiled_keys(z, sq, rows, "euclidean", clamp=False, buffers=buffers)
            into = member if s == 0 else buffers.get("space", len(rows), n, torch.bool, rows.device)
            nb.among_k_smallest(keys, radius[rows], last[rows], tied[rows], floor=0.0, out=into)
            if s:
                member.logical_or_(into)
        return fill_block_diagonal_(member, rows).float()

    assert torch.equal(whole_keys_block(every[:40]), operator.block(every[:40]))
    finder_rows = every[: max(1, ROW_BLOCK_BYTES // 4 // n)]

    rows = [
        ("distill chunk", f"{len(chunk)} rows x 2 spaces", median_ms(distill_chunk, args.repeat), n / len(chunk)),
        ("  products", f"{len(chunk)} rows, 1 space", median_ms(lambda: nb._tiled_products(z, chunk), args.repeat), None),
        ("  products + keys", f"{len(chunk)} rows, 1 space", median_ms(lambda: nb._tiled_keys(z, sq, chunk, "euclidean"), args.repeat), None),
        ("  kth_smallest", f"{len(chunk)} rows, 1 space", median_ms(lambda: nb.kth_smallest(keys, k), args.repeat), None),
        ("  among_k_smallest", f"{len(chunk)} rows, 1 space", median_ms(lambda: nb.among_k_smallest(keys, *kth), args.repeat), None),
        ("block", "128 rows x 2 spaces", median_ms(lambda: operator.block(batch), args.repeat), n / 128),
        ("columns", "128 columns x 2 spaces", median_ms(lambda: operator.columns(batch), args.repeat), n / 128),
        ("range-finder block", f"{len(finder_rows)} rows x 2 spaces", median_ms(lambda: operator.block(finder_rows), args.repeat),
         n / len(finder_rows)),
        ("  whole keys", f"{len(finder_rows)} rows x 2 spaces", median_ms(lambda: whole_keys_block(finder_rows), args.repeat),
         n / len(finder_rows)),
    ]
    print(f"n = {n:,}, K = {k:,}, 2 spaces of {args.dim} float32 columns, {args.threads} thread(s); "
          f"process CPU ms, median of {args.repeat}")
    print()
    print("| stage | unit | ms per unit | units per pass over n | s per pass |")
    print("|---|---|---:|---:|---:|")
    for stage, unit, ms, units in rows:
        per_pass = f"{ms * units / 1000:,.0f}" if units else ""
        print(f"| {stage} | {unit} | {ms:,.1f} | {f'{units:,.0f}' if units else ''} | {per_pass} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The training step's GEMM shapes at 2 threads: one np.matmul on one thread, minillm's split over
its kernel pool (`kernels._matmul.matmul`), np.matmul on OpenBLAS's own threads, and torch.mm
(MKL) when torch is installed. All in one process, each timed as a block (median of --repeats
after two warm-up calls) after a 0.3 s pause, since OpenBLAS's and torch's threads keep spinning
after their calls.

    python benchmarks/gemm_split.py
    python benchmarks/gemm_split.py --json

Shapes (M, K, N) are the tiny model's linear layers at B·T = 2048 tokens: forward x @ Wᵀ, and
backward dX = dY @ W and dW = dYᵀ @ X (benchmarks/README.md, "Round 5").
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time  # noqa: E402  (a 0.3 s pause first: the previous contender's threads stop spinning)

SHAPES = [(2048, 128, 128), (2048, 128, 384), (2048, 384, 128), (128, 2048, 128), (128, 2048, 384),
          (384, 2048, 128), (2048, 128, 2048), (128, 2048, 2048)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--quick", action="store_true", help="two shapes, 3 repeats (the test suite's run)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON results instead of the table")
    args = p.parse_args(argv)

    import minillm  # noqa: F401  (first: it picks Numba's threading layer before set_num_threads starts it)
    import numba
    from threadpoolctl import threadpool_limits

    from minillm.kernels import _matmul

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    rng = np.random.default_rng(0)
    rows = []
    repeats = 3 if args.quick else args.repeats
    for m, k, n in SHAPES[:2] if args.quick else SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        row = dict(M=m, K=k, N=n, same_result=bool(np.allclose(_matmul.matmul(a, b), a @ b, rtol=1e-4, atol=1e-4)))
        with threadpool_limits(1, "blas"):
            row["numpy_1_thread_ms"] = 1e3 * median_time(lambda: np.matmul(a, b, out=c), repeats)
        row["minillm_split_ms"] = 1e3 * median_time(lambda: _matmul.matmul(a, b), repeats)
        if torch is not None:
            ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.empty(m, n)
            row["torch_ms"] = 1e3 * median_time(lambda: torch.mm(ta, tb, out=tc), repeats)
        with threadpool_limits(args.threads, "blas"):
            row["openblas_threads_ms"] = 1e3 * median_time(lambda: np.matmul(a, b, out=c), repeats)
        rows.append(row)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.json:
        print(json.dumps(dict(threads=args.threads, load_average=load, rows=rows), indent=1))
        return
    print(f"GEMM at {args.threads} threads, ms (median of {repeats}), load average {load:.1f}")
    print(f"{'M, K, N':>16} {'np 1 thread':>12} {'minillm split':>14} {'OpenBLAS threads':>17} {'torch.mm':>9} {'split speed-up':>15} {'= np.matmul':>11}")
    for r in rows:
        torch_ms = f"{r['torch_ms']:9.3f}" if "torch_ms" in r else f"{'-':>9}"
        print(f"{r['M']:>5}, {r['K']:>4}, {r['N']:>4} {r['numpy_1_thread_ms']:12.3f} {r['minillm_split_ms']:14.3f} "
              f"{r['openblas_threads_ms']:17.3f} {torch_ms} {r['numpy_1_thread_ms'] / r['minillm_split_ms']:14.2f}x {str(r['same_result']):>11}")


if __name__ == "__main__":
    main()

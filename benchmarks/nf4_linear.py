"""NF4 ``Linear``: dequantize-to-scratch + BLAS against the fused kernel that multiplies from the codes.

    python benchmarks/nf4_linear.py            # the tiny LLaMA's projection shapes, 1..256 rows
    python benchmarks/nf4_linear.py --quick    # one shape, few repeats (its test)

Prints microseconds per call of: the fused Numba kernel (``kernels._quant.nf4_linear``), the
Numba dequantize + ``x @ Ŵᵀ`` (what ``Linear4bit`` does), the NumPy dequantize + BLAS
(``MINILLM_KERNELS=numpy``), and float32 BLAS on the unquantized weight. Both Numba paths are
checked equal to the reference first.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from minillm import nn  # noqa: E402
from minillm.kernels import _quant, reference  # noqa: E402
from minillm.nn.quant import NF4_CODE, Linear4bit, nf4_scales  # noqa: E402


def per_call_us(fn, repeats):
    fn()  # compile / warm up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    shapes = [(128, 128)] if args.quick else [(128, 128), (384, 128), (128, 384)]  # (out, in): wq, w1/w3, w2 of "tiny"
    row_counts = [1, 16] if args.quick else [1, 4, 16, 256]
    repeats = 3 if args.quick else 200
    print(f"{'W (out, in)':<14}{'rows':>6}{'fused':>12}{'numba dequant+BLAS':>20}{'numpy dequant+BLAS':>20}{'float32 BLAS':>14}   (us/call)")
    for out_f, in_f in shapes:
        lin = nn.Linear(in_f, out_f, bias=False)
        st = Linear4bit(lin).quant_state()
        packed, scales = st["packed"], nf4_scales(st)
        for rows in row_counts:
            x = np.random.default_rng(0).standard_normal((rows, in_f)).astype(np.float32)
            want = reference.nf4_linear(x, packed, scales, NF4_CODE, 64, out_f)
            fused = lambda: _quant.nf4_linear(x, packed, scales, NF4_CODE, 64, out_f)  # noqa: E731
            scratch = lambda: x @ _quant.nf4_dequantize(packed, scales, NF4_CODE, 64).reshape(out_f, in_f).T  # noqa: E731
            np.testing.assert_allclose(fused(), want, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(scratch(), want, rtol=1e-4, atol=1e-4)
            r = [per_call_us(f, repeats) for f in (fused, scratch, lambda: reference.nf4_linear(x, packed, scales, NF4_CODE, 64, out_f),
                                                   lambda: x @ lin.weight.data.T)]
            print(f"{str((out_f, in_f)):<14}{rows:>6}{r[0]:>12.1f}{r[1]:>20.1f}{r[2]:>20.1f}{r[3]:>14.1f}")


if __name__ == "__main__":
    main()

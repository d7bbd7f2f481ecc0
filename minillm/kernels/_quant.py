"""Numba kernels for NF4 weights (``nn/quant.py``): dequantize to a scratch array, or
multiply without ever forming the float weight (each output row decodes its own codes).

Measured on the tiny LLaMA's shapes (docs/lora.md, benchmarks/nf4_linear.py): dequantizing
into a scratch array and calling BLAS beat the fused ``nf4_linear`` at every shape, from one
row (decoding) to 256 rows (training), so ``Linear4bit`` dequantizes; ``nf4_linear`` stays as
the measured alternative (like ``matmul_numba``). Both are serial: parallel versions were
slower still on the shapes of a tiny model.
"""
import numpy as np
from numba import njit

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)


@njit(cache=CACHE)
def _dequantize(packed, scales, code, blocksize, out):
    half = blocksize // 2
    for b in range(scales.shape[0]):
        s = scales[b]
        for j in range(half):
            byte = np.int64(packed[b * half + j])
            out[b * blocksize + 2 * j] = code[byte >> 4] * s
            out[b * blocksize + 2 * j + 1] = code[byte & 15] * s


def nf4_dequantize(packed, scales, code, blocksize):
    out = np.empty(packed.size * 2, dtype=np.float32)
    _dequantize(packed, scales.astype(np.float32), code.astype(np.float32), int(blocksize), out)
    return out


@njit(cache=CACHE)
def _nf4_linear(x, packed, scales, code, blocksize, out_features, y):
    N, K = x.shape
    for o in range(out_features):
        acc = np.zeros(N, dtype=np.float32)
        base = o * K  # flat index of W[o, 0]
        for i in range(K):
            j = base + i
            byte = np.int64(packed[j >> 1])
            c = (byte >> 4) if (j & 1) == 0 else (byte & 15)  # even index: high nibble
            w = code[c] * scales[j // blocksize]  # W[o, i], decoded once for every row
            for r in range(N):
                acc[r] += x[r, i] * w
        for r in range(N):
            y[r, o] = acc[r]


def nf4_linear(x, packed, scales, code, blocksize, out_features):
    y = np.empty((x.shape[0], out_features), dtype=np.float32)
    _nf4_linear(np.ascontiguousarray(x, dtype=np.float32), packed, scales.astype(np.float32), code.astype(np.float32),
                int(blocksize), int(out_features), y)
    return y

"""Numba kernels: RMSNorm forward and backward (rows in parallel)."""
import math

import numpy as np
from numba import njit, prange

from ._mathutil import typed

REDUCE = {"reassoc", "nsz", "contract"}
N_CHUNKS = 16  # weight-gradient partial sums: fixed count, so results do not depend on the thread count


@njit(cache=True, parallel=True, fastmath=REDUCE)
def rmsnorm_forward_rows(x, w, eps, y, rstd):
    N, C = x.shape
    for r in prange(N):
        ss = typed(x, 0.0)
        for c in range(C):
            ss += x[r, c] * x[r, c]
        rs = typed(x, 1.0) / math.sqrt(ss / typed(x, C) + eps)
        rstd[r] = rs
        for c in range(C):
            y[r, c] = x[r, c] * rs * w[c]


@njit(cache=True, parallel=True, fastmath=REDUCE)
def rmsnorm_backward_rows(x, w, rstd, gy, gx, gw):
    N, C = x.shape
    nch = min(N, N_CHUNKS)
    partial = np.zeros((nch, C), x.dtype)
    for ch in prange(nch):
        r0 = ch * N // nch
        r1 = (ch + 1) * N // nch
        for r in range(r0, r1):
            rs = rstd[r]
            dot = typed(x, 0.0)
            for c in range(C):
                xh = x[r, c] * rs
                partial[ch, c] += gy[r, c] * xh
                dot += gy[r, c] * w[c] * xh
            dot = dot / typed(x, C)
            for c in range(C):
                xh = x[r, c] * rs
                gx[r, c] = rs * (gy[r, c] * w[c] - xh * dot)
    gw[:] = 0
    for ch in range(nch):
        for c in range(C):
            gw[c] += partial[ch, c]


def rmsnorm_forward(x, weight, eps):
    x = np.ascontiguousarray(x)
    C = x.shape[-1]
    x2 = x.reshape(-1, C)  # (..., C) -> (N, C)
    y = np.empty_like(x)
    rstd = np.empty(x.shape[:-1], x.dtype)
    rmsnorm_forward_rows(x2, np.ascontiguousarray(weight, dtype=x.dtype), x.dtype.type(eps), y.reshape(x2.shape), rstd.reshape(-1))
    return y, rstd


def rmsnorm_backward(x, weight, rstd, gy):
    x = np.ascontiguousarray(x)
    dt = x.dtype
    C = x.shape[-1]
    x2 = x.reshape(-1, C)
    gx = np.empty_like(x)
    gw = np.empty(C, dt)
    rmsnorm_backward_rows(
        x2, np.ascontiguousarray(weight, dtype=dt), np.ascontiguousarray(rstd, dtype=dt).reshape(-1),
        np.ascontiguousarray(gy, dtype=dt).reshape(x2.shape), gx.reshape(x2.shape), gw,
    )
    return gx, gw

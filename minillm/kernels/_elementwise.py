"""Numba kernels: RoPE, SwiGLU, embedding backward (one pass over memory each)."""
import numpy as np
from numba import njit, prange

from ._mathutil import fast_exp, typed


@njit(cache=True, parallel=True)
def rope_kernel(x, cos, sin, y):
    # x, y (B, T, H, D); cos, sin (T, D/2).  Interleaved pairs (2i, 2i+1).
    B, T, H, D = x.shape
    for bt in prange(B * T):
        b = bt // T
        t = bt % T
        for h in range(H):
            for i in range(D // 2):
                x0 = x[b, t, h, 2 * i]
                x1 = x[b, t, h, 2 * i + 1]
                c = cos[t, i]
                s = sin[t, i]
                y[b, t, h, 2 * i] = x0 * c - x1 * s
                y[b, t, h, 2 * i + 1] = x0 * s + x1 * c


@njit(cache=True, parallel=True)
def swiglu_forward_kernel(a, b, y):
    one = typed(a, 1.0)
    for i in prange(a.shape[0]):
        sig = one / (one + fast_exp(-a[i]))
        y[i] = a[i] * sig * b[i]


@njit(cache=True, parallel=True)
def swiglu_backward_kernel(a, b, gy, ga, gb):
    one = typed(a, 1.0)
    for i in prange(a.shape[0]):
        sig = one / (one + fast_exp(-a[i]))
        ga[i] = gy[i] * b[i] * sig * (one + a[i] * (one - sig))
        gb[i] = gy[i] * a[i] * sig


COL_BLOCK = 64


@njit(cache=True, parallel=True)
def embedding_backward_kernel(ids, gout, gw):
    # Threads split the columns, so two equal ids never race for one row.
    N, C = gout.shape
    nblk = (C + COL_BLOCK - 1) // COL_BLOCK
    for cb in prange(nblk):
        c0 = cb * COL_BLOCK
        c1 = min(C, c0 + COL_BLOCK)
        gw[:, c0:c1] = 0
        for n in range(N):
            row = ids[n]
            for c in range(c0, c1):
                gw[row, c] += gout[n, c]


def rope_forward(x, cos, sin):
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    rope_kernel(x, np.ascontiguousarray(cos, dtype=x.dtype), np.ascontiguousarray(sin, dtype=x.dtype), y)
    return y


def rope_backward(gy, cos, sin):
    gy = np.ascontiguousarray(gy)
    gx = np.empty_like(gy)
    rope_kernel(gy, np.ascontiguousarray(cos, dtype=gy.dtype), np.negative(sin, dtype=gy.dtype), gx)
    return gx


def swiglu_forward(a, b):
    a = np.ascontiguousarray(a)
    y = np.empty_like(a)
    swiglu_forward_kernel(a.reshape(-1), np.ascontiguousarray(b, dtype=a.dtype).reshape(-1), y.reshape(-1))
    return y


def swiglu_backward(a, b, gy):
    a = np.ascontiguousarray(a)
    ga = np.empty_like(a)
    gb = np.empty_like(a)
    swiglu_backward_kernel(
        a.reshape(-1), np.ascontiguousarray(b, dtype=a.dtype).reshape(-1),
        np.ascontiguousarray(gy, dtype=a.dtype).reshape(-1), ga.reshape(-1), gb.reshape(-1),
    )
    return ga, gb


def embedding_backward(ids, gout, num_embeddings):
    gout = np.ascontiguousarray(gout)
    gw = np.empty((num_embeddings, gout.shape[1]), gout.dtype)
    embedding_backward_kernel(np.ascontiguousarray(ids, dtype=np.int64).reshape(-1), gout, gw)
    return gw

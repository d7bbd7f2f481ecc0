"""Numba kernels: RMSNorm and LayerNorm, forward and backward.

Each pass reads every input once from memory and writes every output once: a row
(C <= a few thousand floats) stays in L1 between its two loops.

Serial or split.  Each kernel does blocks of ROW_BLOCK rows first, first + step, ...: on the
thread pool (`_threads.run_items`) from PARALLEL_MIN elements, else every block on the
calling thread (first = 0, step = 1: one compiled function either way).  The blocks'
weight-gradient rows are added in block order afterwards, so the result depends neither on
the thread count nor on the path (tests/test_kernels_parallel.py: bit for bit).
"""
import math

import numpy as np
from numba import njit

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)
from ._mathutil import typed
from ._threads import run_items_above

# Reductions (sum of squares, dot products) vectorise only if LLVM may reassociate them;
# "contract" allows fused multiply-adds.  No nnan/ninf: infinities and NaNs propagate.
REDUCE = {"reassoc", "nsz", "contract"}
# error_model="numpy": 1/sqrt(...) does not check for division by zero (a Python-style
# check inside a loop also blocks vectorisation).
OPTS = dict(cache=CACHE, error_model="numpy", fastmath=REDUCE)

# The block functions are Numba-IR inlined into their `*_items` drivers (same flags): compiled
# apart, each driver linked its block in and LLVM optimised it a second time (~0.1 CPU s each on a
# cold start). Same bits, same speed (benchmarks/README.md, "Cold start").
ROW_BLOCK = 128  # rows per block: a fixed count, so the weight-gradient sum order is fixed
# Below this many elements the calling thread does every block.  A forward over the tiny /
# small models' (8, 256, 128) / (8, 256, 288) activations takes ~0.05-0.2 ms on one core: half
# of that is not worth a hand-off (~5-10 us on an idle machine, milliseconds when the worker
# waits for a core under other jobs' load, benchmarks/README.md "Round 4"), so both stay serial.
PARALLEL_MIN = {"forward": 1_048_576, "backward": 1_048_576}


# ------------------------------------------------------------------------- forward
@njit(inline="always", **OPTS)
def _forward_block(x, w, eps, y, rstd, r0, r1):
    """Rows r0..r1-1 of x (N, C): rstd[r] = 1 / sqrt(mean(x[r]^2) + eps), y[r] = x[r] * rstd[r] * w."""
    C = x.shape[1]
    for r in range(r0, r1):
        ss = typed(x, 0.0)
        for c in range(C):
            ss += x[r, c] * x[r, c]
        rs = typed(x, 1.0) / math.sqrt(ss / typed(x, C) + eps)
        rstd[r] = rs
        for c in range(C):
            y[r, c] = x[r, c] * rs * w[c]


@njit(nogil=True, **OPTS)
def rmsnorm_forward_items(x, w, eps, y, rstd, first, step):
    """x, y (N, C); w (C,); rstd (N,).  Blocks of ROW_BLOCK rows first, first + step, ..."""
    N = x.shape[0]
    for blk in range(first, (N + ROW_BLOCK - 1) // ROW_BLOCK, step):
        _forward_block(x, w, eps, y, rstd, blk * ROW_BLOCK, min(N, (blk + 1) * ROW_BLOCK))


# ------------------------------------------------------------------------ backward
@njit(inline="always", **OPTS)
def _backward_block(x, w, rstd, gy, gx, gw_part, r0, r1):
    """Rows r0..r1-1: gx[r] = rstd * (g - xhat * mean(g * xhat)) with xhat = x * rstd,
    g = gy * w; and this block's share of the weight gradient, gw_part (C,) = sum_r gy[r] * xhat[r]
    (overwritten, not added to)."""
    C = x.shape[1]
    gw_part[:] = 0
    for r in range(r0, r1):
        rs = rstd[r]
        dot = typed(x, 0.0)
        for c in range(C):  # one pass: weight-gradient share and the row's dot(g, xhat)
            gxh = gy[r, c] * (x[r, c] * rs)
            gw_part[c] += gxh
            dot += gxh * w[c]
        m = dot / typed(x, C)  # mean(g * xhat)
        for c in range(C):  # the row is still in L1: xhat recomputed, not stored
            gx[r, c] = rs * (gy[r, c] * w[c] - x[r, c] * rs * m)


@njit(nogil=True, **OPTS)
def rmsnorm_backward_items(x, w, rstd, gy, gx, parts, first, step):
    """x, gy, gx (N, C); w (C,); rstd (N,); parts (nblk, C).  Blocks first, first + step, ...,
    each writing its own weight-gradient row parts[blk] (folded afterwards by `_fold_parts`)."""
    N = x.shape[0]
    for blk in range(first, parts.shape[0], step):
        _backward_block(x, w, rstd, gy, gx, parts[blk], blk * ROW_BLOCK, min(N, (blk + 1) * ROW_BLOCK))


@njit(**OPTS)
def _fold_parts(parts, gw):
    """gw = the blocks' rows added in block order (the same sums whichever thread did each block)."""
    gw[:] = 0
    for blk in range(parts.shape[0]):
        for c in range(parts.shape[1]):
            gw[c] += parts[blk, c]


# ------------------------------------------------------------------------ wrappers
def rmsnorm_forward(x, weight, eps):
    """x (..., C), weight (C,) -> y (..., C), rstd (...)."""
    x = np.ascontiguousarray(x)
    C = x.shape[-1]
    y = np.empty_like(x)
    rstd = np.empty(x.shape[:-1], x.dtype)
    w = np.ascontiguousarray(weight, dtype=x.dtype)
    args = (x.reshape(-1, C), w, x.dtype.type(eps), y.reshape(-1, C), rstd.reshape(-1))  # (..., C) -> (N, C); rstd (...) -> (N,)
    nblk = (args[0].shape[0] + ROW_BLOCK - 1) // ROW_BLOCK
    run_items_above(PARALLEL_MIN["forward"], x.size, rmsnorm_forward_items, nblk, *args)
    return y, rstd


def rmsnorm_backward(x, weight, rstd, gy):
    """x, gy (..., C), weight (C,), rstd (...) -> gx (..., C), gweight (C,)."""
    x = np.ascontiguousarray(x)
    dt = x.dtype
    C = x.shape[-1]
    gx = np.empty_like(x)
    gw = np.empty(C, dt)
    args = (x.reshape(-1, C), np.ascontiguousarray(weight, dtype=dt),  # (..., C) -> (N, C)
            np.ascontiguousarray(rstd, dtype=dt).reshape(-1),  # (...) -> (N,)
            np.ascontiguousarray(gy, dtype=dt).reshape(-1, C), gx.reshape(-1, C))  # (..., C) -> (N, C)
    nblk = (args[0].shape[0] + ROW_BLOCK - 1) // ROW_BLOCK
    parts = np.empty((nblk, C), dt)  # (nblk, C): one weight-gradient row per block, every row written
    run_items_above(PARALLEL_MIN["backward"], x.size, rmsnorm_backward_items, nblk, *args, parts)
    _fold_parts(parts, gw)  # in block order, whichever thread did each block
    return gx, gw


# ------------------------------------------------------------------------ LayerNorm
# The same shape as RMSNorm's kernels, with the mean taken out first. Serial only: every
# LayerNorm of the models here (BERT, GPT-2, the ch.2 Transformer) is far below PARALLEL_MIN.
# No "contract": gx = rstd·(g - mean(g) - ...) subtracts nearly equal numbers, and a fused
# multiply-add that skips rounding g = gy·w (but not mean(g)) leaves an error rstd times larger
# than the reference's (seen at C = 1, where the exact answer is 0).
LN_OPTS = dict(cache=CACHE, error_model="numpy", fastmath={"reassoc", "nsz"})


@njit(**LN_OPTS)
def layernorm_forward_serial(x, w, b, eps, y, mean, rstd):
    """x, y (N, C); w, b (C,); mean, rstd (N,): y[r] = (x[r] - mean[r]) * rstd[r] * w + b."""
    N, C = x.shape
    for r in range(N):
        s = typed(x, 0.0)
        for c in range(C):
            s += x[r, c]
        mu = s / typed(x, C)
        ss = typed(x, 0.0)
        for c in range(C):  # two passes (mean, then squares about it): no cancellation
            d = x[r, c] - mu
            ss += d * d
        rs = typed(x, 1.0) / math.sqrt(ss / typed(x, C) + eps)
        mean[r], rstd[r] = mu, rs
        for c in range(C):
            y[r, c] = (x[r, c] - mu) * rs * w[c] + b[c]


@njit(**LN_OPTS)
def layernorm_backward_serial(x, w, mean, rstd, gy, gx, gw, gb):
    """x, gy, gx (N, C); w, gw, gb (C,); mean, rstd (N,):
    gx[r] = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = gy * w, xhat = (x - mean) * rstd."""
    N, C = x.shape
    gw[:] = 0
    gb[:] = 0
    for r in range(N):
        mu, rs = mean[r], rstd[r]
        sg = typed(x, 0.0)
        sgx = typed(x, 0.0)
        for c in range(C):  # one pass: parameter gradients and the row's two means
            xh = (x[r, c] - mu) * rs
            gw[c] += gy[r, c] * xh
            gb[c] += gy[r, c]
            g = gy[r, c] * w[c]
            sg += g
            sgx += g * xh
        mg, mgx = sg / typed(x, C), sgx / typed(x, C)
        for c in range(C):
            gx[r, c] = rs * (gy[r, c] * w[c] - mg - (x[r, c] - mu) * rs * mgx)


def layernorm_forward(x, weight, bias, eps):
    """x (..., C), weight, bias (C,) -> y (..., C), mean (...), rstd (...)."""
    x = np.ascontiguousarray(x)
    C = x.shape[-1]
    y = np.empty_like(x)
    mean = np.empty(x.shape[:-1], x.dtype)
    rstd = np.empty(x.shape[:-1], x.dtype)
    layernorm_forward_serial(x.reshape(-1, C), np.ascontiguousarray(weight, dtype=x.dtype),  # (..., C) -> (N, C)
                             np.ascontiguousarray(bias, dtype=x.dtype), x.dtype.type(eps), y.reshape(-1, C),
                             mean.reshape(-1), rstd.reshape(-1))
    return y, mean, rstd


def layernorm_backward(x, weight, mean, rstd, gy):
    """x, gy (..., C), weight (C,), mean, rstd (...) -> gx (..., C), gweight (C,), gbias (C,)."""
    x = np.ascontiguousarray(x)
    dt = x.dtype
    C = x.shape[-1]
    gx = np.empty_like(x)
    gw, gb = np.empty(C, dt), np.empty(C, dt)
    layernorm_backward_serial(x.reshape(-1, C), np.ascontiguousarray(weight, dtype=dt),  # (..., C) -> (N, C)
                              np.ascontiguousarray(mean, dtype=dt).reshape(-1), np.ascontiguousarray(rstd, dtype=dt).reshape(-1),
                              np.ascontiguousarray(gy, dtype=dt).reshape(-1, C), gx.reshape(-1, C), gw, gb)
    return gx, gw, gb

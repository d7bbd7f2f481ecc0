"""Numba kernels: softmax, log-softmax and cross-entropy (row-wise, numerically stable).

Rows in spans, on the kernel thread pool above a size.  Each row is read at most three times
(max, sum of exp, write) and no (N, V) temporary is allocated.
Reductions use `fastmath=REDUCE` = reassociation only (no 'nnan'/'ninf', so
+-inf and NaN keep their IEEE meaning): that lets LLVM vectorise the sums; the
tests against `reference.py` bound the rounding difference it causes.
"""
import math

import numpy as np
from numba import njit

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)
from ._mathutil import fast_exp, typed
from ._threads import run_items_above

REDUCE = {"reassoc", "nsz", "contract"}


# Numba-IR inlined, unlike fast_exp/typed (benchmarks/README.md, "Cold start" round 3): measured without it,
# softmax forward ran ~1 % slower in 6 of 6 runs (an identical copy of it: 0.999-1.002x) to save
# 0.15 of ~2.4 CPU s of compilation (cross_entropy_forward_span only; the softmax kernel, then a prange
# `softmax_rows`, compiled no faster).
@njit(cache=CACHE, fastmath=REDUCE, inline="always")
def _row_max(x, r):
    # 8 independent running maxima, so the compare/select chain is not one long dependency
    C = x.shape[1]
    m = np.empty(8, x.dtype)
    m[:] = x[r, 0]
    c = 0
    while c + 8 <= C:
        for l in range(8):
            v = x[r, c + l]
            m[l] = v if v > m[l] else m[l]
        c += 8
    out = m[0]
    for l in range(1, 8):
        out = m[l] if m[l] > out else out
    for cc in range(c, C):
        out = x[r, cc] if x[r, cc] > out else out
    return out


# Softmax and cross-entropy alike: a row-span function (serial) and a `nogil` driver that does the
# spans of ROW_SPAN rows first, first + step, ... (`_threads.run_items` hands them out). The
# wrappers call the span function on all rows directly below *_PARALLEL_MIN elements, where starting
# the second share (~5-10 us) would cost more than half the work saves. Not `prange`: a parfor body
# is compiled twice (~1.8 CPU s for the softmax kernel on a cold start).
#
# The cross-entropy spans are Numba-IR inlined into their drivers (`inline="always"`, and the driver
# takes the span's fastmath flags, which change nothing in its integer loop): a driver compiled on
# its own links its span in and runs LLVM over it a second time, ~0.1 CPU s per driver on a cold
# start; inlined, the span is compiled once, inside the driver. Same bits, same speed (measured,
# benchmarks/README.md "Cold start"). Not done for softmax (not in a training step; its forward
# measured 1.5-2.7 % slower inlined) nor for SwiGLU, RoPE and AdamW (3-10 % slower).
SOFTMAX_PARALLEL_MIN = 65_536
CE_PARALLEL_MIN = 65_536
ROW_SPAN = 64


@njit(cache=CACHE, fastmath=REDUCE)
def softmax_span(x, y, log, r0, r1):
    """Rows r0..r1-1 of a 2-D array: y = softmax(x) (log=False) or log_softmax(x) (log=True)."""
    C = x.shape[1]
    for r in range(r0, r1):
        m = _row_max(x, r)
        s = typed(x, 0.0)
        if log:
            for c in range(C):
                s += fast_exp(x[r, c] - m)
            ls = math.log(s)
            for c in range(C):
                y[r, c] = (x[r, c] - m) - ls
        else:
            for c in range(C):
                e = fast_exp(x[r, c] - m)
                y[r, c] = e
                s += e
            inv = typed(x, 1.0) / s
            for c in range(C):
                y[r, c] *= inv


@njit(cache=CACHE, nogil=True)
def softmax_items(x, y, log, first, step):
    """Row spans first, first + step, ... of ROW_SPAN rows (one share of `run_items`)."""
    N = x.shape[0]
    for i in range(first, (N + ROW_SPAN - 1) // ROW_SPAN, step):
        r0 = i * ROW_SPAN
        softmax_span(x, y, log, r0, min(r0 + ROW_SPAN, N))


@njit(cache=CACHE, fastmath=REDUCE)
def softmax_backward_span(y, gy, gx, log, r0, r1):
    """Rows r0..r1-1. softmax: gx = y * (gy - sum(gy*y));  log-softmax: gx = gy - exp(y) * sum(gy)."""
    C = y.shape[1]
    for r in range(r0, r1):
        s = typed(y, 0.0)
        if log:
            for c in range(C):
                s += gy[r, c]
            for c in range(C):
                gx[r, c] = gy[r, c] - fast_exp(y[r, c]) * s
        else:
            for c in range(C):
                s += gy[r, c] * y[r, c]
            for c in range(C):
                gx[r, c] = y[r, c] * (gy[r, c] - s)


@njit(cache=CACHE, nogil=True)
def softmax_backward_items(y, gy, gx, log, first, step):
    """Row spans first, first + step, ... of ROW_SPAN rows (one share of `run_items`)."""
    N = y.shape[0]
    for i in range(first, (N + ROW_SPAN - 1) // ROW_SPAN, step):
        r0 = i * ROW_SPAN
        softmax_backward_span(y, gy, gx, log, r0, min(r0 + ROW_SPAN, N))




@njit(cache=CACHE, fastmath=REDUCE, inline="always")
def cross_entropy_forward_span(x, target, ignore_index, eps, loss, lse, r0, r1):
    """Rows r0..r1-1: loss = lse - x[target] (label smoothing: mixed with the mean), lse saved."""
    V = x.shape[1]
    one = typed(x, 1.0)
    for r in range(r0, r1):
        m = _row_max(x, r)
        s = typed(x, 0.0)
        sx = typed(x, 0.0)
        for c in range(V):
            s += fast_exp(x[r, c] - m)
            sx += x[r, c]
        L = m + math.log(s)
        lse[r] = L
        t = target[r]
        if t == ignore_index:
            loss[r] = 0
        else:
            loss[r] = (one - eps) * (L - x[r, t]) + eps * (L - sx / typed(x, V))


@njit(cache=CACHE, fastmath=REDUCE, nogil=True)
def cross_entropy_forward_items(x, target, ignore_index, eps, loss, lse, first, step):
    """Row spans first, first + step, ... of ROW_SPAN rows (one share of `run_items`)."""
    N = x.shape[0]
    for i in range(first, (N + ROW_SPAN - 1) // ROW_SPAN, step):
        r0 = i * ROW_SPAN
        cross_entropy_forward_span(x, target, ignore_index, eps, loss, lse, r0, min(r0 + ROW_SPAN, N))


@njit(cache=CACHE, fastmath=REDUCE, inline="always")
def cross_entropy_backward_span(x, target, lse, grad, ignore_index, eps, g, r0, r1):
    """Rows r0..r1-1: g = (softmax(x) - smoothed onehot(target)) * grad."""
    V = x.shape[1]
    one = typed(x, 1.0)
    u = eps / typed(x, V)
    for r in range(r0, r1):
        t = target[r]
        if t == ignore_index:
            for c in range(V):
                g[r, c] = 0
            continue
        L = lse[r]
        gr = grad[r]
        for c in range(V):
            g[r, c] = (fast_exp(x[r, c] - L) - u) * gr
        g[r, t] = (fast_exp(x[r, t] - L) - u - (one - eps)) * gr


@njit(cache=CACHE, fastmath=REDUCE, nogil=True)
def cross_entropy_backward_items(x, target, lse, grad, ignore_index, eps, g, first, step):
    """Row spans first, first + step, ... of ROW_SPAN rows (one share of `run_items`)."""
    N = x.shape[0]
    for i in range(first, (N + ROW_SPAN - 1) // ROW_SPAN, step):
        r0 = i * ROW_SPAN
        cross_entropy_backward_span(x, target, lse, grad, ignore_index, eps, g, r0, min(r0 + ROW_SPAN, N))


# ------------------------------------------------------------------ array-level API
def _n_spans(x2):
    """Work items of a (N, C) array: spans of ROW_SPAN rows."""
    return (x2.shape[0] + ROW_SPAN - 1) // ROW_SPAN


def _rows(x):
    x = np.ascontiguousarray(x)
    return x, x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)


def _softmax(x, log):
    x, x2 = _rows(x)
    y = np.empty_like(x)
    run_items_above(SOFTMAX_PARALLEL_MIN, x2.size, softmax_items, _n_spans(x2), x2, y.reshape(x2.shape), log)
    return y


def _softmax_backward(y, gy, log):
    y, y2 = _rows(y)
    gy = np.ascontiguousarray(gy, dtype=y.dtype)
    gx = np.empty_like(y)
    args = (y2, gy.reshape(y2.shape), gx.reshape(y2.shape), log)
    run_items_above(SOFTMAX_PARALLEL_MIN, y2.size, softmax_backward_items, _n_spans(y2), *args)
    return gx


def softmax_forward(x):
    return _softmax(x, False)


def log_softmax_forward(x):
    return _softmax(x, True)


def softmax_backward(y, gy):
    return _softmax_backward(y, gy, False)


def log_softmax_backward(y, gy):
    return _softmax_backward(y, gy, True)


def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    x = np.ascontiguousarray(logits)
    t = np.ascontiguousarray(target, dtype=np.int64)
    loss = np.empty(x.shape[0], x.dtype)
    lse = np.empty(x.shape[0], x.dtype)
    args = (x, t, int(ignore_index), x.dtype.type(label_smoothing), loss, lse)
    run_items_above(CE_PARALLEL_MIN, x.size, cross_entropy_forward_items, _n_spans(x), *args)
    return loss, lse


def cross_entropy_backward(logits, target, lse, grad_losses, ignore_index, label_smoothing):
    x = np.ascontiguousarray(logits)
    dt = x.dtype
    t = np.ascontiguousarray(target, dtype=np.int64)
    g = np.empty_like(x)
    args = (x, t, np.ascontiguousarray(lse, dtype=dt), np.ascontiguousarray(grad_losses, dtype=dt),
            int(ignore_index), dt.type(label_smoothing), g)
    run_items_above(CE_PARALLEL_MIN, x.size, cross_entropy_backward_items, _n_spans(x), *args)
    return g

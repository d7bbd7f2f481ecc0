"""Numba kernels: RoPE, SwiGLU, erf, embedding backward (one pass over memory each).

Serial or split.  RoPE and SwiGLU are `nogil` kernels that run a span function on spans
first, first + step, ...: on the thread pool (`_threads.run_items` starts one share per
thread, ~5-10 us) from PARALLEL_MIN elements (measured), else as one span on the calling
thread.  Elementwise results do not depend on how the work is cut, so they are the same
whatever the thread count.
"""
import math

import numpy as np
from numba import njit

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)
from ._mathutil import fast_exp, typed
from ._threads import run_items, run_items_above

# "contract" lets LLVM fuse a * b + c into one FMA (fast_exp's polynomial, the SwiGLU
# products, the RoPE rotations): SwiGLU ~1.4x faster, and an FMA rounds once, not twice.
# No other fast-math flag: nnan/ninf would break sigmoid(-1e4) = 1 / (1 + inf) = 0 (tested).
# error_model="numpy": no Python-style division-by-zero check, which would keep LLVM from
# vectorising the 1 / (1 + exp(-a)) loop.
OPTS = dict(cache=CACHE, error_model="numpy", fastmath={"contract"})

# Below this many elements the calling thread does every span.  Round 2 measured a `prange`
# launch at 30-110 us and kept everything below 3-4M elements serial; a pool hand-off costs
# ~5-10 us on an idle machine (`_threads.py`; milliseconds when the worker waits for a core
# under other jobs' load).  SwiGLU (exp-bound, ~0.5 ms at the tiny model's 786k elements on one
# core) is split; RoPE (~0.1 ms at 262k) only from 1M elements.
PARALLEL_MIN = {"rope": 1_048_576, "swiglu_forward": 262_144, "swiglu_backward": 262_144}
SPAN = 16_384  # elements per work item (SwiGLU), passed to the kernel (the tests shrink it)
ROPE_SPAN = 32  # positions per work item (RoPE)


# ------------------------------------------------------------------------------ RoPE
@njit(**OPTS)
def _rope_span(x, cos, sin, y, bt0, bt1):
    """Positions bt0..bt1-1 of the flattened (B*T) axis.  x, y (B, T, H, D); cos, sin (T, D/2).
    Interleaved pairs (2i, 2i+1): y0 = x0 cos - x1 sin, y1 = x0 sin + x1 cos."""
    B, T, H, D = x.shape
    for bt in range(bt0, bt1):
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


@njit(nogil=True, **OPTS)
def rope_items(x, cos, sin, y, span, first, step):
    """x, y (B, T, H, D); cos, sin (T, D/2).  Spans of `span` positions first, first + step, ..."""
    n = x.shape[0] * x.shape[1]
    for k in range(first, (n + span - 1) // span, step):
        _rope_span(x, cos, sin, y, k * span, min(n, (k + 1) * span))


# ---------------------------------------------------------------------------- SwiGLU
@njit(**OPTS)
def _swiglu_forward_span(a, b, y):
    """y = silu(a) * b = a / (1 + exp(-a)) * b; a, b, y (n,) contiguous (views of one span)."""
    # The loop runs from 0: with range(lo, hi) Numba's negative-index wraparound check on
    # a[i] stays in, and LLVM vectorises with gathers/scatters (5x slower).
    one = typed(a, 1.0)
    for i in range(a.shape[0]):
        # a / (1 + e) rather than a * (1 / (1 + e)): one division, no extra product.  Dividing
        # before multiplying by b keeps a = -1e4 (e = inf) at 0 for any finite b, as the reference.
        y[i] = a[i] / (one + fast_exp(-a[i])) * b[i]


@njit(nogil=True, **OPTS)
def swiglu_forward_items(a, b, y, span, first, step):
    """a, b, y (n,), contiguous.  Spans of `span` elements first, first + step, ..."""
    n = a.shape[0]
    for k in range(first, (n + span - 1) // span, step):
        lo, hi = k * span, min(n, (k + 1) * span)
        _swiglu_forward_span(a[lo:hi], b[lo:hi], y[lo:hi])


@njit(**OPTS)
def _swiglu_backward_span(a, b, gy, ga, gb):
    """With sig = sigmoid(a):  ga = gy * b * sig * (1 + a * (1 - sig)),  gb = gy * a * sig;
    all (n,) contiguous (views of one span; the loop runs from 0, see _swiglu_forward_span)."""
    one = typed(a, 1.0)
    for i in range(a.shape[0]):
        sig = one / (one + fast_exp(-a[i]))
        gs = gy[i] * sig
        ga[i] = gs * b[i] * (one + a[i] * (one - sig))
        gb[i] = gs * a[i]


@njit(nogil=True, **OPTS)
def swiglu_backward_items(a, b, gy, ga, gb, span, first, step):
    """a, b, gy, ga, gb (n,), contiguous.  Spans of `span` elements first, first + step, ..."""
    n = a.shape[0]
    for k in range(first, (n + span - 1) // span, step):
        lo, hi = k * span, min(n, (k + 1) * span)
        _swiglu_backward_span(a[lo:hi], b[lo:hi], gy[lo:hi], ga[lo:hi], gb[lo:hi])


# ------------------------------------------------------------------------- embedding
COL_BLOCK = 64


@njit(cache=CACHE, nogil=True)
def embedding_backward_kernel(ids, gout, gw, first, step):
    # Threads split the columns (column blocks first, first + step, ...: `_threads.run_items`),
    # so two equal ids never race for one row.
    N, C = gout.shape
    V = gw.shape[0]
    nblk = (C + COL_BLOCK - 1) // COL_BLOCK
    for cb in range(first, nblk, step):
        c0 = cb * COL_BLOCK
        w = min(C, c0 + COL_BLOCK) - c0
        for v in range(V):  # a loop, not `gw[:, c0:c1] = 0` (slow outside a parallel function)
            gw_v = gw[v, c0:]
            for c in range(w):
                gw_v[c] = 0
        for n in range(N):
            gw_row = gw[ids[n], c0:]  # sliced from c0, so the inner index starts at 0 (no wrap-around check)
            go_n = gout[n, c0:]
            for c in range(w):
                gw_row[c] += go_n[c]


# -------------------------------------------------------------------------- wrappers
def _run(kernel, which, n, span, *args):
    """kernel(*args, span, first, step) over n elements / positions, in spans of `span`: on the
    thread pool from PARALLEL_MIN[which] elements, else on this thread."""
    run_items_above(PARALLEL_MIN[which], args[0].size, kernel, (n + span - 1) // span, *args, span)


def _rope(x, cos, sin):
    y = np.empty_like(x)
    _run(rope_items, "rope", x.shape[0] * x.shape[1], ROPE_SPAN, x, cos, sin, y)
    return y


def rope_forward(x, cos, sin):
    """x (B, T, H, D), cos, sin (T, D/2) -> (B, T, H, D)."""
    x = np.ascontiguousarray(x)
    return _rope(x, np.ascontiguousarray(cos, dtype=x.dtype), np.ascontiguousarray(sin, dtype=x.dtype))


def rope_backward(gy, cos, sin):
    """A rotation's gradient is the rotation by the opposite angle.  gy (B, T, H, D) -> (B, T, H, D)."""
    gy = np.ascontiguousarray(gy)
    return _rope(gy, np.ascontiguousarray(cos, dtype=gy.dtype), np.negative(sin, dtype=gy.dtype))


def swiglu_forward(a, b):
    """a, b (...) -> silu(a) * b (...)."""
    a = np.ascontiguousarray(a)
    y = np.empty_like(a)
    flat = (a.reshape(-1), np.ascontiguousarray(b, dtype=a.dtype).reshape(-1), y.reshape(-1))  # (...) -> (n,)
    _run(swiglu_forward_items, "swiglu_forward", a.size, SPAN, *flat)
    return y


def swiglu_backward(a, b, gy):
    """a, b, gy (...) -> ga, gb (...)."""
    a = np.ascontiguousarray(a)
    ga = np.empty_like(a)
    gb = np.empty_like(a)
    flat = (a.reshape(-1), np.ascontiguousarray(b, dtype=a.dtype).reshape(-1),  # (...) -> (n,)
            np.ascontiguousarray(gy, dtype=a.dtype).reshape(-1), ga.reshape(-1), gb.reshape(-1))
    _run(swiglu_backward_items, "swiglu_backward", a.size, SPAN, *flat)
    return ga, gb


@njit(cache=CACHE)
def _erf_flat(x, out):
    for i in range(x.size):
        out[i] = math.erf(x[i])


def erf(x):
    """x (...) -> erf(x) (...) in x's dtype: math.erf in a compiled loop (serial: one libm call
    per element, far cheaper than waking threads for the sizes exact GELU sees)."""
    flat = np.ascontiguousarray(x).reshape(-1)  # (...) -> (n,)
    out = np.empty_like(flat)
    _erf_flat(flat, out)
    return out.reshape(x.shape)  # (n,) -> (...)


def embedding_backward(ids, gout, num_embeddings):
    """ids (N,), gout (N, C) -> gweight (num_embeddings, C)."""
    gout = np.ascontiguousarray(gout)
    gw = np.empty((num_embeddings, gout.shape[1]), gout.dtype)
    run_items(embedding_backward_kernel, (gout.shape[1] + COL_BLOCK - 1) // COL_BLOCK,
              np.ascontiguousarray(ids, dtype=np.int64).reshape(-1), gout, gw)
    return gw

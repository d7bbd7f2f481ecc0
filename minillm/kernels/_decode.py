"""Numba kernel: one LLaMA2 decode step (one new token per row, all layers) in one call.

Decoding at batch 1 multiplies a handful of small matrices by one vector per layer. Through
the autograd ops that is ~100 Python-level calls per token, each costing more than its
arithmetic; here the whole step is one compiled function, so the time goes to reading the
weights (a matrix-vector product is memory bound: every weight is used once per row).

Same arithmetic and argument list as `reference.llama_decode_step` (read that first);
tested equal to it.

The kernel is single-threaded on purpose. A parallel version (`prange` over the output rows
of each matrix-vector product) was measured 3-25x *slower* here (tiny: 2.9 ms vs 0.12 ms
per token; small: 2.4-5.6 ms vs 0.8 ms, 1 or 2 threads): one step launches ~30 parallel
loops of a few microseconds of work each, and waking the worker threads for each costs
more than the loop.
"""
import math

import numpy as np
from numba import njit

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)
from ._mathutil import fast_exp, typed

# Reductions may be reordered (vectorised dot products); no 'nnan'/'ninf': masked keys are -inf.
# error_model="numpy" (on every function here): no Python division-by-zero checks inside loops.
REDUCE = {"reassoc", "nsz", "contract", "arcp"}


@njit(cache=CACHE, error_model="numpy", fastmath=REDUCE)
def _matvec(w, x, y):
    """y[b] = w @ x[b] for every row b.   w: (N, K); x: (B, K); y: (B, N).

    Batch 1 is memory bound (every weight is used once): one dot product per weight row.
    With several rows (batched generation) the same weights serve every row, and the loop
    becomes load bound: a 4 x 2 block (4 weight rows, 2 batch rows) loads 6 values per 8
    multiply-adds instead of 2 per 1, which measured ~2x faster at batch 8-32."""
    N, K = w.shape
    B = x.shape[0]
    if B == 1:
        for n in range(N):
            acc = typed(x, 0.0)
            for j in range(K):
                acc += w[n, j] * x[0, j]
            y[0, n] = acc
        return
    N4 = N - N % 4
    B2 = B - B % 2
    for n in range(0, N4, 4):
        for b in range(0, B2, 2):
            a00 = typed(x, 0.0)
            a01 = typed(x, 0.0)
            a10 = typed(x, 0.0)
            a11 = typed(x, 0.0)
            a20 = typed(x, 0.0)
            a21 = typed(x, 0.0)
            a30 = typed(x, 0.0)
            a31 = typed(x, 0.0)
            for j in range(K):
                x0 = x[b, j]
                x1 = x[b + 1, j]
                w0 = w[n, j]
                w1 = w[n + 1, j]
                w2 = w[n + 2, j]
                w3 = w[n + 3, j]
                a00 += w0 * x0
                a01 += w0 * x1
                a10 += w1 * x0
                a11 += w1 * x1
                a20 += w2 * x0
                a21 += w2 * x1
                a30 += w3 * x0
                a31 += w3 * x1
            y[b, n] = a00
            y[b + 1, n] = a01
            y[b, n + 1] = a10
            y[b + 1, n + 1] = a11
            y[b, n + 2] = a20
            y[b + 1, n + 2] = a21
            y[b, n + 3] = a30
            y[b + 1, n + 3] = a31
        for b in range(B2, B):  # an odd last row
            for i in range(4):
                acc = typed(x, 0.0)
                for j in range(K):
                    acc += w[n + i, j] * x[b, j]
                y[b, n + i] = acc
    for n in range(N4, N):  # the last N % 4 weight rows
        for b in range(B):
            acc = typed(x, 0.0)
            for j in range(K):
                acc += w[n, j] * x[b, j]
            y[b, n] = acc


@njit(cache=CACHE, error_model="numpy", fastmath=REDUCE)
def _rmsnorm(h, w, eps, x):
    """x[b] = h[b] / sqrt(mean(h[b]^2) + eps) * w.   h, x: (B, dim)."""
    B, C = h.shape
    for b in range(B):
        ss = typed(h, 0.0)
        for c in range(C):
            ss += h[b, c] * h[b, c]
        rstd = typed(h, 1.0) / math.sqrt(ss / typed(h, C) + eps)
        for c in range(C):
            x[b, c] = h[b, c] * rstd * w[c]


@njit(cache=CACHE, error_model="numpy")
def _rope(x, n_heads, head_dim, positions, cos, sin):
    """Rotate pairs (2i, 2i+1) of every head in place.   x: (B, n_heads*head_dim)."""
    for b in range(x.shape[0]):
        t = positions[b]
        for hd in range(n_heads):
            base = hd * head_dim
            for i in range(head_dim // 2):
                x0 = x[b, base + 2 * i]
                x1 = x[b, base + 2 * i + 1]
                c = cos[t, i]
                s = sin[t, i]
                x[b, base + 2 * i] = x0 * c - x1 * s
                x[b, base + 2 * i + 1] = x0 * s + x1 * c


@njit(cache=CACHE, error_model="numpy", fastmath=REDUCE, nogil=True)
def llama_decode_step(tokens, positions, cache_pos, key_valid, emb, attention_norm, wq, wk, wv, wo,
                      ffn_norm, w1, w2, w3, norm, output, cos, sin, k_cache, v_cache, eps, cache_row):
    # cache_row: the cache's batch row of tokens[0] (a thread's share of a batch: generation/fused.py)
    B = tokens.shape[0]
    L, Hkv, D = k_cache.shape[0], k_cache.shape[2], k_cache.shape[4]
    dim = emb.shape[1]
    H = wq.shape[1] // D
    G = H // Hkv
    P = cache_pos + 1
    hidden = w1.shape[1]
    scale = typed(emb, 1.0 / math.sqrt(D))
    eps = typed(emb, eps)

    h = np.empty((B, dim), emb.dtype)  # the residual stream
    x = np.empty((B, dim), emb.dtype)  # normalised input of a branch
    q = np.empty((B, H * D), emb.dtype)
    k = np.empty((B, Hkv * D), emb.dtype)
    v = np.empty((B, Hkv * D), emb.dtype)
    att = np.empty((B, H * D), emb.dtype)
    branch = np.empty((B, dim), emb.dtype)  # a branch's output before it joins the residual
    gate = np.empty((B, hidden), emb.dtype)
    up = np.empty((B, hidden), emb.dtype)
    scores = np.empty((B * H, P), emb.dtype)
    one = typed(emb, 1.0)

    for b in range(B):  # embedding lookup (element loop: a row assignment `h[b] = emb[t]` compiles a
        t = tokens[b]        # shape check whose error message alone costs ~1.5 CPU s of compiling)
        for c in range(dim):
            h[b, c] = emb[t, c]
    for layer in range(L):
        # ---- attention branch
        _rmsnorm(h, attention_norm[layer], eps, x)
        _matvec(wq[layer], x, q)  # (B, dim) -> (B, H*D)
        _matvec(wk[layer], x, k)  # (B, dim) -> (B, Hkv*D)
        _matvec(wv[layer], x, v)
        _rope(q, H, D, positions, cos, sin)
        _rope(k, Hkv, D, positions, cos, sin)
        for b in range(B):
            for j in range(Hkv):
                for d in range(D):
                    k_cache[layer, cache_row + b, j, cache_pos, d] = k[b, j * D + d]
                    v_cache[layer, cache_row + b, j, cache_pos, d] = v[b, j * D + d]
        for bh in range(B * H):  # one (row, query head) each: scores, softmax, weighted values
            b = bh // H
            hd = bh % H
            j = hd // G  # the kv head this query head reads
            # Row views, then 1-D loops: indexing the 5-D caches element by element in the loops
            # below kept them from vectorising (small, batch 16, 64 cached positions: the
            # attention took ~4 of a 10 ms step; views: ~1.3 ms less)
            keys = k_cache[layer, cache_row + b, j]  # (max_seq_len, D)
            values = v_cache[layer, cache_row + b, j]
            qh = q[b, hd * D:(hd + 1) * D]  # (D,)
            out = att[b, hd * D:(hd + 1) * D]
            row = scores[bh]  # (P,)
            m = typed(emb, -np.inf)
            for s in range(P):
                if key_valid[b, s]:
                    key = keys[s]
                    acc = typed(emb, 0.0)
                    for d in range(D):
                        acc += qh[d] * key[d]
                    acc *= scale
                    row[s] = acc
                    m = max(m, acc)
            total = typed(emb, 0.0)
            for s in range(P):
                if key_valid[b, s]:
                    e = fast_exp(row[s] - m)
                    row[s] = e
                    total += e
                else:
                    row[s] = 0
            for d in range(D):
                out[d] = 0
            for s in range(P):
                p = row[s] / total
                if p != 0:
                    value = values[s]
                    for d in range(D):
                        out[d] += p * value[d]
        _matvec(wo[layer], att, branch)  # (B, H*D) -> (B, dim)
        for b in range(B):
            for c in range(dim):
                h[b, c] += branch[b, c]
        # ---- feed-forward branch (SwiGLU)
        _rmsnorm(h, ffn_norm[layer], eps, x)
        _matvec(w1[layer], x, gate)  # (B, dim) -> (B, hidden)
        _matvec(w3[layer], x, up)
        for b in range(B):
            for i in range(hidden):
                a = gate[b, i]
                gate[b, i] = a / (one + fast_exp(-a)) * up[b, i]  # silu(w1 x) * w3 x
        _matvec(w2[layer], gate, branch)  # (B, hidden) -> (B, dim)
        for b in range(B):
            for c in range(dim):
                h[b, c] += branch[b, c]
    _rmsnorm(h, norm, eps, x)
    logits = np.empty((B, output.shape[0]), emb.dtype)
    _matvec(output, x, logits)  # (B, dim) -> (B, V)
    return logits

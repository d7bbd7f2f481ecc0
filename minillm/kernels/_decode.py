"""Numba kernel: one LLaMA2 decode step (one new token per row, all layers) in one call.

Decoding at batch 1 multiplies a handful of small matrices by one vector per layer. Through
the autograd ops that is ~100 Python-level calls per token, each costing more than its
arithmetic; here the whole step is one compiled function, so the time goes to reading the
weights (a matrix-vector product is memory bound: every weight is used once per row).

Same arithmetic and argument list as `reference.llama_decode_step` (read that first);
tested equal to it.

Threads. One call can be run by several threads at once (`decode_team`, `generation/fused.py`):
the step is a sequence of phases (the q/k/v products, attention, wo, ...), each cut into work
items (row ranges of the weight matrices, or (row, kv head) pairs) that the threads claim from a counter;
a thread waits at the end of a phase only for items another thread is running. An early parallel
version (`prange` per product) was measured 3-25x slower (tiny: 2.9 ms vs 0.12 ms per token):
~30 parallel loops of a few microseconds each woke the worker threads ~30 times. Here the threads
start once per step and only watch a counter between phases. Every item computes the same
elements with the same arithmetic whoever runs it, so the logits are the same bits for any
number of threads (tested).
"""
import math

import numpy as np
from numba import njit

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)
from ._mathutil import fast_exp, prefetch, typed
from ._spin import claim, count, wait_for

# Reductions may be reordered (vectorised dot products); no 'nnan'/'ninf': masked keys are -inf.
# error_model="numpy" (on every function here): no Python division-by-zero checks inside loops.
REDUCE = {"reassoc", "nsz", "contract", "arcp"}


@njit(cache=CACHE, error_model="numpy", fastmath=REDUCE)
def _matvec(w, x, y, stream):
    """y[b] = w @ x[b] for every row b.   w: (N, K); x: (B, K); y: (B, N); stream: the model's
    weights do not stay in the caches (`_streams`).

    Batch 1 is memory bound (every weight is used once): one dot product per weight row.
    With several rows (batched generation) the same weights serve every row, and the loop
    becomes load bound: a 4 x 2 block (4 weight rows, 2 batch rows) loads 6 values per 8
    multiply-adds instead of 2 per 1, which measured ~2x faster at batch 8-32.

    A block reads its 4 weight rows side by side, four short streams the hardware prefetcher
    hardly follows: a 27 MB matrix streamed from memory at 10 GB/s at batch 2 against 26-31 at
    batch 1. So each pass over a block first asks for a share of the next block's cache lines
    (`prefetch`, a hint: same arithmetic, same bits); the products of small's decode step at 1
    thread, AMD Zen 4: batch 8 3.47 -> 2.63-2.78 ms, 16 5.24-5.30 -> 4.14-4.41, 32 8.71-9.63 ->
    7.06-8.63 (benchmarks/README.md, "Round 8"). Only when `stream`:
    with weights that stay in the caches (the tiny model's 6 MB) the hints only cost time (batch 8
    0.45 -> 0.54 ms a step)."""
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
    step = max(1, 64 // w.itemsize)  # elements per 64-byte cache line
    per_pass = (4 * K + B2 // 2 - 1) // (B2 // 2)  # the next block's elements, spread over this block's passes
    for n in range(0, N4, 4):
        for b in range(0, B2, 2):
            if stream and n + 8 <= N:  # (no division per line: a 64-bit division costs more than the hint)
                first = (b // 2) * per_pass
                last = min(first + per_pass, 4 * K)
                row, col = first // K, first % K
                for _ in range(first, last, step):
                    prefetch(w, n + 4 + row, col)
                    col += step
                    if col >= K:
                        row += 1
                        col -= K
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
def _rope_heads(x, b, h0, h1, head_dim, t, cos, sin):
    """Rotate pairs (2i, 2i+1) of heads h0 .. h1-1 of row b in place, at position t.   x: (B, heads*head_dim)."""
    for hd in range(h0, h1):
        base = hd * head_dim
        for i in range(head_dim // 2):
            x0 = x[b, base + 2 * i]
            x1 = x[b, base + 2 * i + 1]
            c = cos[t, i]
            s = sin[t, i]
            x[b, base + 2 * i] = x0 * c - x1 * s
            x[b, base + 2 * i + 1] = x0 * s + x1 * c


@njit(cache=CACHE, error_model="numpy", fastmath=REDUCE)
def _attend(q, att, scores, k_cache, v_cache, key_valid, layer, row, b, j, G, P, scale):
    """Attention of row b's query heads j*G .. (j+1)*G-1, which read kv head j of the cache's batch
    row `row`, over its first P positions: att[b, head] = softmax(q . keys * scale) @ values.
    q, att: (B, H*D); scores: (B*H, >= P) scratch; k_cache, v_cache: (L, B_all, Hkv, S, D).

    Keys and values are taken four at a time. A head is short (D = 32 or 48 in the presets), shorter
    than the 64 elements LLVM's vectorised loop takes per pass, so a loop over one key's D elements
    ran in its 8-wide remainder loop: one chain of dependent adds, then a horizontal sum, per key.
    Four dot products in one loop are four independent chains (and the weighted sum of four values
    loads and stores `out` once for four): 11-13 -> 6.7-7.1 ns a key at D = 48, 19-20 -> 14 at D = 32
    with two query heads a kv head (AMD Zen 4, one thread, keys in the caches; benchmarks/README.md,
    "Round 9"). Masked keys get a score too, then weight 0, as in the reference. An item's arithmetic
    depends only on P, not on who runs it: the bits still do not depend on the thread count."""
    D = k_cache.shape[4]
    H = q.shape[1] // D
    # Row views, then 1-D loops: indexing the 5-D caches element by element in the loops below kept
    # them from vectorising (small, batch 16, 64 cached positions: the attention took ~4 of a 10 ms
    # step; views: ~1.3 ms less)
    keys = k_cache[layer, row, j]  # (max_seq_len, D)
    values = v_cache[layer, row, j]
    P4 = P - P % 4
    for hd in range(j * G, (j + 1) * G):
        qh = q[b, hd * D:(hd + 1) * D]  # (D,)
        out = att[b, hd * D:(hd + 1) * D]
        p_row = scores[b * H + hd]  # (P,)
        for s in range(0, P4, 4):  # scores, four keys at a time
            k0, k1, k2, k3 = keys[s], keys[s + 1], keys[s + 2], keys[s + 3]
            a0, a1, a2, a3 = typed(q, 0.0), typed(q, 0.0), typed(q, 0.0), typed(q, 0.0)
            for d in range(D):
                x = qh[d]
                a0 += x * k0[d]
                a1 += x * k1[d]
                a2 += x * k2[d]
                a3 += x * k3[d]
            p_row[s], p_row[s + 1], p_row[s + 2], p_row[s + 3] = a0 * scale, a1 * scale, a2 * scale, a3 * scale
        for s in range(P4, P):  # the last P % 4 keys
            key = keys[s]
            acc = typed(q, 0.0)
            for d in range(D):
                acc += qh[d] * key[d]
            p_row[s] = acc * scale
        m = typed(q, -np.inf)  # softmax over the visible keys
        for s in range(P):
            if key_valid[b, s]:
                m = max(m, p_row[s])
        total = typed(q, 0.0)
        for s in range(P):
            if key_valid[b, s]:
                e = fast_exp(p_row[s] - m)
                p_row[s] = e
                total += e
            else:
                p_row[s] = 0
        inv = typed(q, 1.0) / total
        for d in range(D):
            out[d] = 0
        for s in range(0, P4, 4):  # out = p . values, four values at a time
            v0, v1, v2, v3 = values[s], values[s + 1], values[s + 2], values[s + 3]
            p0, p1, p2, p3 = p_row[s] * inv, p_row[s + 1] * inv, p_row[s + 2] * inv, p_row[s + 3] * inv
            for d in range(D):
                out[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d]
        for s in range(P4, P):
            value = values[s]
            p = p_row[s] * inv
            for d in range(D):
                out[d] += p * value[d]


@njit(cache=CACHE)
def _item_rows(rest, members):
    """Rows of the next work item of a product with `rest` rows left: a 2 * members-th of them
    (items shrink as the product goes on, so the last ones are short and a slow member holds the
    others up for little), on a multiple of 4, at least 32 (fewer: the claim and call cost more).
    Equal items (4 per member) left the other thread waiting for a member's last one: of a
    ~14M-cycle step (small, batch 32, 2 threads, AMD Zen 4) the members waited 1.0-1.8M cycles
    in all, now 0.35-0.46M; at batch 1, 8, 16 about half as long as before too."""
    return min(rest, max(32, (rest // (2 * members) + 3) // 4 * 4))


@njit(cache=CACHE)
def _parts(n, members):
    """How many work items a product with n output rows is cut into for a team of `members`
    threads: one alone (one call, as a serial kernel), else items of `_item_rows`."""
    if members == 1:
        return 1
    parts, start = 0, 0
    while start < n:
        start += _item_rows(n - start, members)
        parts += 1
    return parts


@njit(cache=CACHE, error_model="numpy", fastmath=REDUCE)
def _part(w, x, y, i, members, stream):
    """y[:, n0:n1] = x @ w[n0:n1].T for work item i (`_parts`), returns (n0, n1); edges on
    multiples of 4 (_matvec's row blocks), so every element gets the same arithmetic however the
    rows are cut. w: (N, K); x: (B, K); y: (B, N)."""
    N = w.shape[0]
    n0, n1 = 0, N
    if members > 1:
        for _ in range(i):
            n0 += _item_rows(N - n0, members)
        n1 = n0 + _item_rows(N - n0, members)
    _matvec(w[n0:n1], x, y[:, n0:n1], stream)
    return n0, n1


@njit(cache=CACHE, error_model="numpy")
def _add_columns(h, branch, n0, n1):
    """h[:, n0:n1] += branch[:, n0:n1] (a branch joins the residual), through row views that
    loop from 0: a range(n0, n1) loop keeps Numba's negative-index checks and does not vectorise."""
    for b in range(h.shape[0]):
        hb = h[b, n0:n1]
        bb = branch[b, n0:n1]
        for c in range(n1 - n0):
            hb[c] += bb[c]


@njit(cache=CACHE)
def step_buffers(B, dim, q_dim, kv_dim, hidden, heads, P, dtype_like):
    """The arrays `decode_team`'s threads share: h, branch (B, dim); q, att (B, q_dim); k, v
    (B, kv_dim); gate, up (B, hidden); attention scores (B * heads, P); the dtype of `dtype_like`.
    Separate allocations: views of one workspace ran the step 1.25x slower (AMD Zen 4, one
    thread; padding between the views did not help)."""
    return (np.empty((B, dim), dtype_like.dtype), np.empty((B, dim), dtype_like.dtype),
            np.empty((B, q_dim), dtype_like.dtype), np.empty((B, q_dim), dtype_like.dtype),
            np.empty((B, kv_dim), dtype_like.dtype), np.empty((B, kv_dim), dtype_like.dtype),
            np.empty((B, hidden), dtype_like.dtype), np.empty((B, hidden), dtype_like.dtype),
            np.empty((B * heads, P), dtype_like.dtype))


@njit(cache=CACHE)
def counters_size(n_layers):
    """Length of `decode_team`'s counters: two per phase (embedding, 5 per layer, output)."""
    return 2 * (5 * n_layers + 2)


# From this many bytes of weights (every matrix a step multiplies) `_matvec` prefetches: the weights
# then stream from memory each step (the small model's 31 MB on a 2-core machine with 32 MB of L3
# for everything), while the tiny model's 6 MB stay in the caches, where the hints only cost time.
STREAM_MIN_BYTES = 16 << 20


@njit(cache=CACHE)
def _streams(wq, wk, wv, wo, w1, w2, w3, output):
    """Whether a step's weights stream from memory (STREAM_MIN_BYTES)."""
    return wq.nbytes + wk.nbytes + wv.nbytes + wo.nbytes + w1.nbytes + w2.nbytes + w3.nbytes + output.nbytes >= STREAM_MIN_BYTES


@njit(cache=CACHE, error_model="numpy", fastmath=REDUCE, nogil=True)
def llama_decode_step(tokens, positions, cache_pos, key_valid, emb, attention_norm, wq, wk, wv, wo,
                      ffn_norm, w1, w2, w3, norm, output, cos, sin, k_cache, v_cache, eps, cache_row):
    """The step on this thread (`reference.llama_decode_step` has the arguments). cache_row: the
    cache's batch row of tokens[0] (a thread's share of a batch: generation/fused.py)."""
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
    stream = _streams(wq, wk, wv, wo, w1, w2, w3, output)

    for b in range(B):  # embedding lookup (element loop: a row assignment `h[b] = emb[t]` compiles a
        t = tokens[b]        # shape check whose error message alone costs ~1.5 CPU s of compiling)
        for c in range(dim):
            h[b, c] = emb[t, c]
    for layer in range(L):
        # ---- attention branch
        _rmsnorm(h, attention_norm[layer], eps, x)
        _matvec(wq[layer], x, q, stream)  # (B, dim) -> (B, H*D)
        _matvec(wk[layer], x, k, stream)  # (B, dim) -> (B, Hkv*D)
        _matvec(wv[layer], x, v, stream)
        for b in range(B):
            _rope_heads(q, b, 0, H, D, positions[b], cos, sin)
            _rope_heads(k, b, 0, Hkv, D, positions[b], cos, sin)
        for b in range(B):
            for j in range(Hkv):
                for d in range(D):
                    k_cache[layer, cache_row + b, j, cache_pos, d] = k[b, j * D + d]
                    v_cache[layer, cache_row + b, j, cache_pos, d] = v[b, j * D + d]
        for b in range(B):
            for j in range(Hkv):
                _attend(q, att, scores, k_cache, v_cache, key_valid, layer, cache_row + b, b, j, G, P, scale)
        _matvec(wo[layer], att, branch, stream)  # (B, H*D) -> (B, dim)
        for b in range(B):
            for c in range(dim):
                h[b, c] += branch[b, c]
        # ---- feed-forward branch (SwiGLU)
        _rmsnorm(h, ffn_norm[layer], eps, x)
        _matvec(w1[layer], x, gate, stream)  # (B, dim) -> (B, hidden)
        _matvec(w3[layer], x, up, stream)
        for b in range(B):
            for i in range(hidden):
                a = gate[b, i]
                gate[b, i] = a / (one + fast_exp(-a)) * up[b, i]  # silu(w1 x) * w3 x
        _matvec(w2[layer], gate, branch, stream)  # (B, hidden) -> (B, dim)
        for b in range(B):
            for c in range(dim):
                h[b, c] += branch[b, c]
    _rmsnorm(h, norm, eps, x)
    logits = np.empty((B, output.shape[0]), emb.dtype)
    _matvec(output, x, logits, stream)  # (B, dim) -> (B, V)
    return logits


@njit(cache=CACHE, error_model="numpy", fastmath=REDUCE, nogil=True)
def decode_team(tokens, positions, cache_pos, key_valid, emb, attention_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3,
                norm, output, cos, sin, k_cache, v_cache, eps, cache_row, logits, bufs, counters, members):
    """`llama_decode_step` (same arguments) run by every thread that calls it with the same
    `logits` (B, V), `bufs` (step_buffers), `counters` (counters_size zeros) and
    `members` (the threads expected: how finely the products are cut; the bits do not depend on
    it): each phase's items are claimed from `counters`, so the threads share the work, and one
    thread alone does all of it."""
    B = tokens.shape[0]
    L, Hkv, D = k_cache.shape[0], k_cache.shape[2], k_cache.shape[4]
    dim = emb.shape[1]
    H = wq.shape[1] // D
    G = H // Hkv
    P = cache_pos + 1
    hidden = w1.shape[1]
    scale = typed(emb, 1.0 / math.sqrt(D))
    eps = typed(emb, eps)
    one = typed(emb, 1.0)

    h, branch, q, att, k, v, gate, up, scores = bufs  # the arrays every thread reads and writes
    # Each thread's own copy of a norm's output (B x dim, cheap to compute twice; no phase to wait
    # for). A member that arrives late computes it for phases already finished too, possibly while h
    # is being updated further on; it never uses that x: it finds no item left in those phases, and
    # h does not change between a norm and the end of the phase that reads its x.
    x = np.empty((B, dim), emb.dtype)

    stream = _streams(wq, wk, wv, wo, w1, w2, w3, output)
    n_q, n_kv, n_dim, n_hidden = _parts(H * D, members), _parts(Hkv * D, members), _parts(dim, members), _parts(hidden, members)
    ph = 0  # phase: its items are claimed from counters[2 ph], counted done in counters[2 ph + 1]
    while True:  # embedding lookup, a row per item (element loop: a row assignment `h[b] = emb[t]`
        b = claim(counters, 2 * ph, B)  # compiles a shape check whose error message alone costs ~1.5 CPU s)
        if b < 0:
            break
        for c in range(dim):
            h[b, c] = emb[tokens[b], c]
        count(counters, 2 * ph + 1)
    wait_for(counters, 2 * ph + 1, B)
    ph += 1
    for layer in range(L):
        # ---- attention branch
        _rmsnorm(h, attention_norm[layer], eps, x)
        n = n_q + 2 * n_kv
        while True:  # wq, wk, wv: (B, dim) -> (B, H*D), (B, Hkv*D), (B, Hkv*D), a range of outputs per item
            i = claim(counters, 2 * ph, n)
            if i < 0:
                break
            if i < n_q:
                _part(wq[layer], x, q, i, members, stream)
            elif i < n_q + n_kv:
                _part(wk[layer], x, k, i - n_q, members, stream)
            else:
                _part(wv[layer], x, v, i - n_q - n_kv, members, stream)
            count(counters, 2 * ph + 1)
        wait_for(counters, 2 * ph + 1, n)
        ph += 1
        while True:  # one (row, kv head) per item: RoPE, the cache write, its G query heads' attention
            i = claim(counters, 2 * ph, B * Hkv)
            if i < 0:
                break
            b = i // Hkv
            j = i % Hkv
            t = positions[b]
            _rope_heads(q, b, j * G, (j + 1) * G, D, t, cos, sin)
            _rope_heads(k, b, j, j + 1, D, t, cos, sin)
            for d in range(D):
                k_cache[layer, cache_row + b, j, cache_pos, d] = k[b, j * D + d]
                v_cache[layer, cache_row + b, j, cache_pos, d] = v[b, j * D + d]
            _attend(q, att, scores, k_cache, v_cache, key_valid, layer, cache_row + b, b, j, G, P, scale)
            count(counters, 2 * ph + 1)
        wait_for(counters, 2 * ph + 1, B * Hkv)
        ph += 1
        while True:  # wo: (B, H*D) -> (B, dim), and the residual, a block of columns per item
            i = claim(counters, 2 * ph, n_dim)
            if i < 0:
                break
            n0, n1 = _part(wo[layer], att, branch, i, members, stream)
            _add_columns(h, branch, n0, n1)
            count(counters, 2 * ph + 1)
        wait_for(counters, 2 * ph + 1, n_dim)
        ph += 1
        # ---- feed-forward branch (SwiGLU)
        _rmsnorm(h, ffn_norm[layer], eps, x)
        while True:  # w1, w3: (B, dim) -> (B, hidden), then silu(w1 x) * w3 x, a block of hidden units per item
            i = claim(counters, 2 * ph, n_hidden)
            if i < 0:
                break
            n0, n1 = _part(w1[layer], x, gate, i, members, stream)
            _part(w3[layer], x, up, i, members, stream)
            for b in range(B):
                g = gate[b, n0:n1]  # row views, loops from 0: a range(n0, n1) loop keeps Numba's
                u = up[b, n0:n1]  # negative-index checks in and does not vectorise
                for c in range(n1 - n0):
                    g[c] = g[c] / (one + fast_exp(-g[c])) * u[c]  # silu(w1 x) * w3 x
            count(counters, 2 * ph + 1)
        wait_for(counters, 2 * ph + 1, n_hidden)
        ph += 1
        while True:  # w2: (B, hidden) -> (B, dim), and the residual
            i = claim(counters, 2 * ph, n_dim)
            if i < 0:
                break
            n0, n1 = _part(w2[layer], gate, branch, i, members, stream)
            _add_columns(h, branch, n0, n1)
            count(counters, 2 * ph + 1)
        wait_for(counters, 2 * ph + 1, n_dim)
        ph += 1
    _rmsnorm(h, norm, eps, x)
    n = _parts(output.shape[0], members)
    while True:  # the output head: (B, dim) -> (B, V)
        i = claim(counters, 2 * ph, n)
        if i < 0:
            break
        _part(output, x, logits, i, members, stream)
        count(counters, 2 * ph + 1)
    wait_for(counters, 2 * ph + 1, n)

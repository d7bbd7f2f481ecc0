"""Numba kernels: flash-style scaled-dot-product attention (forward and backward).

Two versions of each kernel live here:

* `*_rows_kernel` -- one query row at a time (the simplest flash attention;
  read it first).  Used when there are only a few query rows (Tq < ROWS_MAX,
  e.g. KV-cache decoding with Tq = 1), where blocking would only add padding.
* `*_kernel` -- blocks of BQ query rows against tiles of BK keys, so each
  loaded key or value is reused by BQ queries and the work becomes a handful of
  small matrix products per tile, done by one register-blocked micro-kernel.

Online softmax (both versions), for one query row: walk the visible keys tile
by tile, keeping a running max m, running sum l = sum exp(s - m) and running
output acc = sum exp(s - m) v_j.  When a tile raises the max, the old l and acc
are rescaled by exp(m_old - m_new).  At the end out = acc / l, and
lse = m + log(l) is saved for the backward.  The (Tq, Tk) probability matrix
never exists, only one tile of it.

Blocked forward, one work item = (batch, head, block of BQ query rows):

    Q_blk^T = (scale * Q_blk)^T                   (D, BQ), packed once
    for each key tile K_t, V_t (BK keys; causal: stop after the diagonal tile)
        S^T = K_t Q_blk^T (+ mask)                (BK, BQ) scores
        online softmax for the BQ rows at once     P^T = exp(S^T - m_new)
        acc^T = acc^T * alpha + V_t^T P^T          (D, BQ)
    out = acc / l,  lse = m + log(l)

The scores are kept transposed (queries along the last axis) so the softmax
statistics of all BQ rows update with SIMD along that axis.

Blocked backward (FlashAttention-2 style), one work item = (batch, kv head g):
it owns dK, dV of its kv head, so the G query heads that share g (grouped-query
attention) add into them without atomics and K/V are never repeated.  For every
query head of the group, every query block, every key tile (Qs = scale * Q):

    S  = Qs_blk K_t^T,   P = exp(S - lse)      (BQ, BK), recomputed, not stored
    dP = dO_blk V_t^T
    dS = P * (dP - delta),                      delta_i = rowsum(dO_i * O_i)
    dV_t^T += dO_blk^T P,   dK_t^T += Qs_blk^T dS,   dQ_blk += dS K_t   (dQ times scale at the end)

Every product is `_mm_acc`, C += A B.  Its innermost loop runs along a
contiguous row of B and C, so the layouts are chosen to make that row long and
its length known when compiling: in the forward B is Q_blk^T or P^T (rows of
BQ = 64 queries), in the backward K_t^T, V_t^T (packed once per work item), P
or dS (rows of BK = 64 keys) -- except dQ += dS K_t, whose rows are D.  A is
only read one element at a time, so it can be any view, e.g. a transpose
(V_t^T in the forward, dO_blk^T, Qs_blk^T in the backward) without a copy.
The forward always works on whole tiles of BK keys (the wrapper zero-pads K, V
when Tk is not a multiple of BK; the extra keys are masked): constant loop
bounds made it ~25 % faster.

Causal masking is bottom-right aligned: key j is visible to query i iff
j <= i + (Tk - Tq).  Key tiles wholly past a block's last visible key are
skipped; inside the diagonal tile the invisible scores are set to -inf (the
forward) or their P, dS to 0 (the backward).  Rows with no visible key give
out = 0, lse = -inf, and zero gradients.  (Computing only the visible part of a
diagonal tile measured not worth its code: in strips of 16 rows no faster, the
strips' variable widths cost the micro-kernel what the skipped work saved; by
quadrants of 32, 2-3 %.)
"""
import math

import numpy as np
from numba import njit

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)
from ._mathutil import fast_exp, typed
from ._threads import run_items

BQ = 64  # query rows per block (blocked kernels)
BK = 64  # keys per tile
ROWS_MAX = 16  # fewer query rows than this: use the row-at-a-time kernels
FM = {"reassoc", "nsz", "contract"}  # no nnan/ninf: -inf masks keep their meaning


@njit(cache=CACHE, fastmath=FM, inline="always")
def _mm_acc(c, a, b, ni, np_, nj):
    """c[:ni, :nj] += a[:ni, :np_] @ b[:np_, :nj]; c, b C-contiguous 2-D arrays, a any 2-D view
    (read one element at a time); ni and np_ multiples of 4.

    The micro-kernel: 4 rows of c times 4 steps of the reduction per pass over a
    row.  The 16 numbers a[i:i+4, p:p+4] are read into scalars (registers) once,
    then the innermost loop runs along contiguous rows of b and c, so LLVM turns
    it into full-width SIMD FMAs (16 float32 lanes with AVX-512); each c element
    is loaded and stored once per 4 reduction steps instead of once per step
    (about 2x the speed of that simple loop: ~100-130 GFLOP/s on one core here).
    Every product starts at row / column 0, so the rows are whole row views
    (`c[i]`) and the inner index starts at 0: Numba then knows it is not negative
    and skips the wrap-around check that would block SIMD (a loop starting at a
    variable j0 ran 5x slower).  Inlined at every call, so constant bounds (BQ, BK)
    become trip counts known when compiling, which LLVM schedules better (up to
    ~25 % faster than the same product with variable bounds; an LLVM-level
    `forceinline` of a separately compiled copy, or a plain call, ran 10-25 %
    slower: that copy is vectorised before it sees the constants).

    Written for the cold start too: each inlined copy is typed and lowered again
    (benchmarks/README.md, "Cold start").  Row views and 1-D reads (`ar0 = a[i]`,
    `ar0[p + 1]`) instead of 2-D slices and reads (`c[i, j0:]`, `a[i, p + 1]`) and
    no start offsets (always 0) halved a copy's compilation (0.42 -> 0.22 CPU s)
    and made the backward 5-7 % faster (the forward the same), with the same bits."""
    for i in range(0, ni, 4):
        c0 = c[i]
        c1 = c[i + 1]
        c2 = c[i + 2]
        c3 = c[i + 3]
        ar0 = a[i]
        ar1 = a[i + 1]
        ar2 = a[i + 2]
        ar3 = a[i + 3]
        for p in range(0, np_, 4):
            a00 = ar0[p]
            a01 = ar0[p + 1]
            a02 = ar0[p + 2]
            a03 = ar0[p + 3]
            a10 = ar1[p]
            a11 = ar1[p + 1]
            a12 = ar1[p + 2]
            a13 = ar1[p + 3]
            a20 = ar2[p]
            a21 = ar2[p + 1]
            a22 = ar2[p + 2]
            a23 = ar2[p + 3]
            a30 = ar3[p]
            a31 = ar3[p + 1]
            a32 = ar3[p + 2]
            a33 = ar3[p + 3]
            b0 = b[p]
            b1 = b[p + 1]
            b2 = b[p + 2]
            b3 = b[p + 3]
            for j in range(nj):
                x0 = b0[j]
                x1 = b1[j]
                x2 = b2[j]
                x3 = b3[j]
                c0[j] += a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
                c1[j] += a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
                c2[j] += a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
                c3[j] += a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3


@njit(cache=CACHE, fastmath=FM, nogil=True)
def attention_forward_kernel(q, k, v, Tk, mask, has_mask, is_causal, scale, out, lse, first, step):
    # q (B, H, Tq, D); k, v (B, Hkv, Tkp, D) with D a multiple of 4 and Tkp of BK (zero-padded by the
    # wrapper when needed); Tk = the real number of keys; mask (B, H, Tq, Tk) view.
    # Runs the work items first, first + step, ... (one per thread: `_threads.run_items`).
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    off = Tk - Tq
    nqb = (Tq + BQ - 1) // BQ
    ninf = typed(q, -np.inf)
    zero = typed(q, 0.0)
    qt = np.empty((D, BQ), q.dtype)  # scale * the query block, transposed, zero-padded
    st = np.empty((BK, BQ), q.dtype)  # scores, then probabilities, of one tile (transposed)
    acct = np.empty((D, BQ), q.dtype)  # running output (transposed)
    m = np.empty(BQ, q.dtype)  # running row max
    l = np.empty(BQ, q.dtype)  # running row sum of exp(s - m)
    mt = np.empty(BQ, q.dtype)
    alpha = np.empty(BQ, q.dtype)
    # Every fill below is a loop, not a slice assignment (`st[:, :] = 0`): outside a parallel
    # function Numba lowers those through a generic strided iterator, which made the kernel
    # 15-30 % slower once it was no longer `parallel=True` (benchmarks/README.md, cold start).
    for task in range(first, B * H * nqb, step):
        # The query block is the slow index: with causal masking block i sees i + 1 key tiles, and
        # a share (every step-th item) must get every block size. With (b, h) slow and step = nqb
        # (4 chunks, Tq = 256) one share got all the first blocks and another all the last ones:
        # 1:2:3:4 work, the forward at 2 threads 1.6x instead of ~1.9x (benchmarks/README.md, Round 5).
        bh = task % (B * H)
        b = bh // H
        h = bh % H
        g = h // G  # the kv head this query head reads
        i0 = (task // (B * H)) * BQ
        bq = min(BQ, Tq - i0)
        for d in range(D):
            for r in range(BQ):
                qt[d, r] = zero
                acct[d, r] = zero
        for r in range(BQ):
            m[r] = ninf
            l[r] = zero
        for r in range(bq):
            q_r = q[b, h, i0 + r]
            for d in range(D):
                qt[d, r] = q_r[d] * scale
        k_g = k[b, g]  # (Tkp, D)
        v_g = v[b, g]
        first_hi = i0 + off + 1  # keys visible to the block's first row (causal)
        hi = min(Tk, first_hi + bq - 1) if is_causal else Tk  # ... and to its last row
        for j0 in range(0, hi, BK):
            n = min(BK, hi - j0)  # keys [j0, j0 + n) are real and visible to some row; the rest of the
            # whole tile (zero padding, or hidden from every row) is computed too and masked below:
            # constant trip counts make the micro-kernel ~25 % faster than exact ones
            e = first_hi - j0  # key j0 + jj is visible to row r iff jj < r + e (causal)
            k_t = k_g[j0:j0 + BK]  # (BK, D)
            vt_t = v_g[j0:j0 + BK].T  # (D, BK), a transposed view: the micro-kernel only reads it by element
            for jj in range(BK):
                for r in range(BQ):
                    st[jj, r] = zero
            _mm_acc(st, k_t, qt, BK, D, BQ)  # S^T = K_t (scale Q_blk)^T
            if has_mask:
                for r in range(bq):
                    mrow = mask[b, h, i0 + r, j0:]
                    for jj in range(n):
                        st[jj, r] += mrow[jj]
            for jj in range(BK):
                hidden = BQ  # keys past n: hidden from every row
                if jj < n:  # causal: key jj is visible to rows r >= jj + 1 - e only
                    hidden = min(max(jj + 1 - e, 0), BQ) if is_causal else 0
                st_j = st[jj]
                for r in range(hidden):
                    st_j[r] = ninf
            # online softmax, all BQ rows at once (rows run along the inner axis); four keys per
            # pass so the running max / sum are loaded and stored once per four
            for r in range(BQ):
                mt[r] = ninf
            for jj in range(0, BK, 4):
                s0, s1, s2, s3 = st[jj], st[jj + 1], st[jj + 2], st[jj + 3]
                for r in range(BQ):
                    mt[r] = max(mt[r], max(max(s0[r], s1[r]), max(s2[r], s3[r])))
            for r in range(BQ):
                m_new = max(m[r], mt[r])
                shift = m_new if m_new != ninf else zero  # nothing visible yet: shift by 0
                alpha[r] = fast_exp(m[r] - shift)  # rescale what was accumulated under the old max
                m[r] = m_new
                mt[r] = shift
                l[r] *= alpha[r]
            for jj in range(0, BK, 4):  # st now holds p = exp(s - shift); 0 where s = -inf
                s0, s1, s2, s3 = st[jj], st[jj + 1], st[jj + 2], st[jj + 3]
                for r in range(BQ):
                    sh = mt[r]
                    p0 = fast_exp(s0[r] - sh)
                    p1 = fast_exp(s1[r] - sh)
                    p2 = fast_exp(s2[r] - sh)
                    p3 = fast_exp(s3[r] - sh)
                    s0[r] = p0
                    s1[r] = p1
                    s2[r] = p2
                    s3[r] = p3
                    l[r] += (p0 + p1) + (p2 + p3)
            for d in range(D):
                for r in range(BQ):
                    acct[d, r] *= alpha[r]
            _mm_acc(acct, vt_t, st, D, BK, BQ)  # acc^T += V_t^T P^T
        for r in range(bq):
            i = i0 + r
            out_i = out[b, h, i]
            if l[r] > 0:
                inv = typed(q, 1.0) / l[r]
                for d in range(D):
                    out_i[d] = acct[d, r] * inv
                lse[b, h, i] = m[r] + math.log(l[r])
            else:
                for d in range(D):
                    out_i[d] = zero
                lse[b, h, i] = ninf


@njit(cache=CACHE, fastmath=FM, nogil=True)
def attention_backward_kernel(q, k, v, mask, has_mask, is_causal, scale, out, lse, gout, gq, gk, gv, first, step):
    # q, out, gout, gq (B, H, Tq, D); k, v, gk, gv (B, Hkv, Tk, D); mask (B, H, Tq, Tk) view.
    # Runs the work items (batch, kv head) first, first + step, ... (`_threads.run_items`).
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    Tk = k.shape[2]
    G = H // Hkv
    off = Tk - Tq
    Dp = (D + 3) // 4 * 4
    nt = (Tk + BK - 1) // BK
    ninf = typed(q, -np.inf)
    zero = typed(q, 0.0)
    # one kv head's tiles, zero-padded: K_t (BK, Dp) and K_t^T, V_t^T (Dp, BK)
    kp = np.empty((nt, BK, Dp), q.dtype)
    ktp = np.empty((nt, Dp, BK), q.dtype)
    vtp = np.empty((nt, Dp, BK), q.dtype)
    gkt = np.empty((nt, Dp, BK), q.dtype)  # dK^T, dV^T tiles of this kv head
    gvt = np.empty((nt, Dp, BK), q.dtype)
    qs = np.empty((BQ, Dp), q.dtype)  # scale * Q block
    go = np.empty((BQ, Dp), q.dtype)  # dO block
    qs_t = qs.T  # transposed views (Dp, BQ): the micro-kernel only reads its left operand by element
    go_t = go.T
    dq = np.empty((BQ, Dp), q.dtype)
    s = np.empty((BQ, BK), q.dtype)  # S, then P, of one tile
    dp = np.empty((BQ, BK), q.dtype)  # dP, then dS, of one tile
    Lp = np.empty(BQ, q.dtype)  # lse, +inf for rows without gradient (so p = 0)
    delta = np.empty(BQ, q.dtype)
    # fills are loops, not slice assignments: see the forward
    for bg in range(first, B * Hkv, step):
        b = bg // Hkv
        g = bg % Hkv
        k_g = k[b, g]  # (Tk, D)
        v_g = v[b, g]
        for t in range(nt):
            for jj in range(BK):
                for d in range(Dp):
                    kp[t, jj, d] = zero
            for d in range(Dp):
                for jj in range(BK):
                    ktp[t, d, jj] = zero
                    vtp[t, d, jj] = zero
                    gkt[t, d, jj] = zero
                    gvt[t, d, jj] = zero
            j0 = t * BK
            for jj in range(min(BK, Tk - j0)):
                k_j = k_g[j0 + jj]
                v_j = v_g[j0 + jj]
                for d in range(D):  # the transposes: strided writes, once per work item
                    kp[t, jj, d] = k_j[d]
                    ktp[t, d, jj] = k_j[d]
                    vtp[t, d, jj] = v_j[d]
        for h in range(g * G, (g + 1) * G):  # the query heads that share kv head g
            for i0 in range(0, Tq, BQ):
                bq = min(BQ, Tq - i0)
                for r in range(BQ):  # padded rows (r >= bq): zero Q and dO, p = 0
                    Lp[r] = np.inf
                    delta[r] = zero
                    for d in range(Dp):
                        qs[r, d] = zero
                        go[r, d] = zero
                        dq[r, d] = zero
                for r in range(bq):
                    q_r = q[b, h, i0 + r]
                    go_r = gout[b, h, i0 + r]
                    o_r = out[b, h, i0 + r]
                    acc = zero
                    for d in range(D):
                        qs[r, d] = q_r[d] * scale
                        go[r, d] = go_r[d]
                        acc += go_r[d] * o_r[d]  # delta_i = rowsum(dO_i * O_i)
                    delta[r] = acc
                    L = lse[b, h, i0 + r]
                    if L != ninf:  # a fully masked row has no gradient
                        Lp[r] = L
                first_hi = i0 + off + 1
                hi = min(Tk, first_hi + bq - 1) if is_causal else Tk
                for j0 in range(0, hi, BK):
                    t = j0 // BK
                    n = min(BK, hi - j0)
                    e = first_hi - j0  # key j0 + jj is visible to row r iff jj < r + e (causal)
                    for r in range(BQ):
                        for jj in range(BK):
                            s[r, jj] = zero
                            dp[r, jj] = zero
                    # S = (scale Q) K_t^T, then dP = dO V_t^T. One call site in a loop of two rather than
                    # two calls: every call site is a full inlined copy of the micro-kernel, and each
                    # copy costs ~0.2 CPU s of compilation on a fresh install (same for dV, dK below)
                    for which in range(2):
                        _mm_acc(s if which == 0 else dp, qs if which == 0 else go, ktp[t] if which == 0 else vtp[t],
                                BQ, Dp, BK)
                    for r in range(BQ):
                        lim = n  # keys [j0, j0 + lim) are visible to row r
                        if is_causal:
                            lim = min(max(r + e, 0), n)
                        s_r = s[r]
                        dp_r = dp[r]
                        if has_mask and r < bq:
                            mrow = mask[b, h, i0 + r, j0:]
                            for jj in range(lim):
                                s_r[jj] += mrow[jj]
                        L = Lp[r]
                        dl = delta[r]
                        for jj in range(lim):
                            pr = fast_exp(s_r[jj] - L)  # probability, recomputed from the saved lse
                            s_r[jj] = pr
                            dp_r[jj] = pr * (dp_r[jj] - dl)  # dS (without scale)
                        for jj in range(lim, BK):  # hidden keys (or past the real keys)
                            s_r[jj] = zero
                            dp_r[jj] = zero
                    for which in range(2):  # dV_t^T += dO^T P, then dK_t^T += (scale Q)^T dS
                        _mm_acc(gvt[t] if which == 0 else gkt[t], go_t if which == 0 else qs_t, s if which == 0 else dp,
                                Dp, BQ, BK)
                    _mm_acc(dq, dp, kp[t], BQ, BK, Dp)  # dQ += dS K_t
                for r in range(bq):
                    gq_r = gq[b, h, i0 + r]
                    for d in range(D):
                        gq_r[d] = dq[r, d] * scale
        for t in range(nt):  # dK^T, dV^T tiles -> dK, dV
            j0 = t * BK
            for jj in range(min(BK, Tk - j0)):
                gk_j = gk[b, g, j0 + jj]
                gv_j = gv[b, g, j0 + jj]
                for d in range(D):
                    gk_j[d] = gkt[t, d, jj]
                    gv_j[d] = gvt[t, d, jj]


# ------------------------------------------------------- one query row at a time
# Forward, for one (batch, head) and one query row i: walk the visible keys in
# tiles of BK, scores s_j = q_i . k_j * scale (+ mask), online softmax, acc += p v_j.
# Backward, for one (batch, kv head): for every query head that reads it and every
# row, recompute p = exp(s - lse) per tile and accumulate dV += p dO,
# dS = p (dO.v - delta), dQ += dS K, dK += dS Q.  K and V come transposed, (D, Tk),
# so the score loops run over contiguous keys.
@njit(cache=CACHE, fastmath=FM, nogil=True)
def attention_forward_rows_kernel(q, kt, v, mask, has_mask, is_causal, scale, out, lse, first, step):
    # q (B, H, Tq, D), kt (B, Hkv, D, Tk), v (B, Hkv, Tk, D), mask (B, H, Tq, Tk) view;
    # work items (batch, head) first, first + step, ... (`_threads.run_items`); fills are loops
    B, H, Tq, D = q.shape
    Hkv = kt.shape[1]
    Tk = kt.shape[3]
    G = H // Hkv
    off = Tk - Tq
    s = np.empty(BK, q.dtype)
    acc = np.empty(D, q.dtype)
    ninf = typed(q, -np.inf)
    for bh in range(first, B * H, step):
        b = bh // H
        h = bh % H
        g = h // G  # the kv head this query head reads
        kt_g = kt[b, g]  # (D, Tk)
        v_g = v[b, g]  # (Tk, D)
        for i in range(Tq):
            hi = min(Tk, i + off + 1) if is_causal else Tk  # keys [0, hi) are visible
            q_i = q[b, h, i]  # (D,)
            m = ninf
            l = typed(q, 0.0)
            for d in range(D):
                acc[d] = 0
            for j0 in range(0, hi, BK):
                n = min(BK, hi - j0)
                for jj in range(BK):
                    s[jj] = 0
                for d in range(D):  # s = q_i . K[j0:j0+n]
                    qd = q_i[d]
                    kd = kt_g[d, j0:j0 + n]
                    for jj in range(n):
                        s[jj] += qd * kd[jj]
                for jj in range(n):
                    s[jj] *= scale
                if has_mask:
                    mrow = mask[b, h, i, j0:j0 + n]
                    for jj in range(n):
                        s[jj] += mrow[jj]
                mt = ninf
                for jj in range(n):
                    mt = max(mt, s[jj])
                if mt == ninf:  # the whole tile is masked
                    continue
                m_new = max(m, mt)
                alpha = fast_exp(m - m_new)  # rescale what was accumulated under the old max
                l *= alpha
                for d in range(D):
                    acc[d] *= alpha
                for jj in range(n):
                    s[jj] = fast_exp(s[jj] - m_new)  # s now holds p
                    l += s[jj]
                for jj in range(n):
                    p = s[jj]
                    vj = v_g[j0 + jj]
                    for d in range(D):
                        acc[d] += p * vj[d]
                m = m_new
            if l > 0:
                inv = typed(q, 1.0) / l
                for d in range(D):
                    out[b, h, i, d] = acc[d] * inv
                lse[b, h, i] = m + math.log(l)
            else:
                out_i = out[b, h, i]
                for d in range(D):
                    out_i[d] = 0
                lse[b, h, i] = ninf


@njit(cache=CACHE, fastmath=FM, nogil=True)
def attention_backward_rows_kernel(q, k, kt, v, vt, mask, has_mask, is_causal, scale, out, lse, gout, gq, gk, gv,
                                   first, step):
    # work items (batch, kv head) first, first + step, ... (`_threads.run_items`); fills are loops
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    Tk = k.shape[2]
    G = H // Hkv
    off = Tk - Tq
    ninf = typed(q, -np.inf)
    s = np.empty(BK, q.dtype)
    dp = np.empty(BK, q.dtype)
    dq = np.empty(D, q.dtype)
    for bg in range(first, B * Hkv, step):
        b = bg // Hkv
        g = bg % Hkv
        k_g = k[b, g]  # (Tk, D)
        kt_g = kt[b, g]  # (D, Tk)
        vt_g = vt[b, g]  # (D, Tk)
        gk_g = gk[b, g]  # (Tk, D)
        gv_g = gv[b, g]  # (Tk, D)
        for j in range(Tk):
            for d in range(D):
                gk_g[j, d] = 0
                gv_g[j, d] = 0
        for h in range(g * G, (g + 1) * G):  # the query heads that share kv head g
            for i in range(Tq):
                L = lse[b, h, i]
                if L == ninf:  # fully masked row: no gradient
                    gq_i = gq[b, h, i]
                    for d in range(D):
                        gq_i[d] = 0
                    continue
                q_i = q[b, h, i]  # (D,)
                go_i = gout[b, h, i]  # (D,)
                o_i = out[b, h, i]  # (D,)
                delta = typed(q, 0.0)
                for d in range(D):
                    delta += go_i[d] * o_i[d]
                for d in range(D):
                    dq[d] = 0
                hi = min(Tk, i + off + 1) if is_causal else Tk
                for j0 in range(0, hi, BK):
                    n = min(BK, hi - j0)
                    for jj in range(BK):
                        s[jj] = 0
                        dp[jj] = 0
                    for d in range(D):  # s = q_i . K_tile,  dp = dO_i . V_tile
                        qd = q_i[d]
                        gd = go_i[d]
                        kd = kt_g[d, j0:j0 + n]
                        vd = vt_g[d, j0:j0 + n]
                        for jj in range(n):
                            s[jj] += qd * kd[jj]
                            dp[jj] += gd * vd[jj]
                    for jj in range(n):
                        s[jj] *= scale
                    if has_mask:
                        mrow = mask[b, h, i, j0:j0 + n]
                        for jj in range(n):
                            s[jj] += mrow[jj]
                    for jj in range(n):
                        p = fast_exp(s[jj] - L)  # probability, recomputed from the saved lse
                        s[jj] = p
                        dp[jj] = p * (dp[jj] - delta)  # dS (without scale)
                    for jj in range(n):
                        p = s[jj]
                        ds = dp[jj]
                        k_j = k_g[j0 + jj]
                        gk_j = gk_g[j0 + jj]
                        gv_j = gv_g[j0 + jj]
                        for d in range(D):
                            gv_j[d] += p * go_i[d]
                            dq[d] += ds * k_j[d]
                            gk_j[d] += ds * q_i[d]
                gq_i = gq[b, h, i]
                for d in range(D):
                    gq_i[d] = dq[d] * scale
        for j in range(Tk):
            for d in range(D):
                gk_g[j, d] *= scale


# ------------------------------------------------------------------ array-level API
def _mask4(mask, dtype, shape):
    if mask is None:
        return np.broadcast_to(np.zeros((1, 1, 1, 1), dtype), shape), False
    return np.broadcast_to(np.asarray(mask, dtype=dtype), shape), True


def attention_forward(q, k, v, mask, is_causal, scale):
    q = np.ascontiguousarray(q)
    dt = q.dtype
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    m, has_mask = _mask4(mask, dt, (B, H, Tq, Tk))
    out = np.empty_like(q)
    lse = np.empty((B, H, Tq), dt)
    if Tq < ROWS_MAX:
        kt = np.ascontiguousarray(np.swapaxes(k, -1, -2), dtype=dt)  # (B, Hkv, Tk, D) -> (B, Hkv, D, Tk)
        v = np.ascontiguousarray(v, dtype=dt)
        run_items(attention_forward_rows_kernel, B * H,
                  q, kt, v, m, has_mask, bool(is_causal), dt.type(scale), out, lse)
    else:
        B, Hkv = k.shape[:2]
        # the kernel wants whole key tiles and D in fours: zero-pad when needed (zero features
        # change no score, padded keys are masked out)
        D4, Tkp = (D + 3) // 4 * 4, (Tk + BK - 1) // BK * BK
        q4, k4, v4 = q, np.ascontiguousarray(k, dtype=dt), np.ascontiguousarray(v, dtype=dt)
        if D4 != D:
            q4 = np.zeros((B, H, Tq, D4), dt)  # (B, H, Tq, D) -> (B, H, Tq, D4)
            q4[..., :D] = q
        if D4 != D or Tkp != Tk:
            k4 = np.zeros((B, Hkv, Tkp, D4), dt)  # (B, Hkv, Tk, D) -> (B, Hkv, Tkp, D4)
            k4[:, :, :Tk, :D] = k
            v4 = np.zeros((B, Hkv, Tkp, D4), dt)  # (B, Hkv, Tk, D) -> (B, Hkv, Tkp, D4)
            v4[:, :, :Tk, :D] = v
        out4 = out if D4 == D else np.empty((B, H, Tq, D4), dt)
        run_items(attention_forward_kernel, B * H * ((Tq + BQ - 1) // BQ),
                  q4, k4, v4, Tk, m, has_mask, bool(is_causal), dt.type(scale), out4, lse)
        if out4 is not out:
            out[...] = out4[..., :D]  # (B, H, Tq, D4) -> (B, H, Tq, D)
    return out, lse


def attention_backward(q, k, v, mask, is_causal, scale, out, lse, gout):
    q = np.ascontiguousarray(q)
    dt = q.dtype
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    k = np.ascontiguousarray(k, dtype=dt)
    v = np.ascontiguousarray(v, dtype=dt)
    m, has_mask = _mask4(mask, dt, (B, H, Tq, Tk))
    out = np.ascontiguousarray(out, dtype=dt)
    lse = np.ascontiguousarray(lse, dtype=dt)
    gout = np.ascontiguousarray(gout, dtype=dt)
    gq = np.empty_like(q)
    gk = np.empty_like(k)
    gv = np.empty_like(v)
    if Tq < ROWS_MAX:
        kt = np.ascontiguousarray(np.swapaxes(k, -1, -2))  # (B, Hkv, Tk, D) -> (B, Hkv, D, Tk)
        vt = np.ascontiguousarray(np.swapaxes(v, -1, -2))  # (B, Hkv, Tk, D) -> (B, Hkv, D, Tk)
        run_items(attention_backward_rows_kernel, B * k.shape[1],
                  q, k, kt, v, vt, m, has_mask, bool(is_causal), dt.type(scale), out, lse, gout, gq, gk, gv)
    else:  # the blocked kernel packs its own K / V tiles (one work item per kv head)
        run_items(attention_backward_kernel, B * k.shape[1],
                  q, k, v, m, has_mask, bool(is_causal), dt.type(scale), out, lse, gout, gq, gk, gv)
    return gq, gk, gv

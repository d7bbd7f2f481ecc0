"""Numba kernels: flash-style scaled-dot-product attention (forward and backward).

Two versions of each kernel live here:

* `*_rows_kernel` -- one query row at a time (the simplest flash attention;
  read it first).  Used when there are only a few query rows (Tq < ROWS_MAX,
  e.g. KV-cache decoding with Tq = 1), where blocking would only add padding.
* `*_kernel` -- blocks of BQ query rows against tiles of BK keys, so each
  loaded key or value is reused by BQ queries and the work becomes a handful of
  small matrix products per tile, which run near the CPU's FMA peak.

Online softmax (both versions), for one query row: walk the visible keys tile
by tile, keeping a running max m, running sum l = sum exp(s - m) and running
output acc = sum exp(s - m) v_j.  When a tile raises the max, the old l and acc
are rescaled by exp(m_old - m_new).  At the end out = acc / l, and
lse = m + log(l) is saved for the backward.  The (Tq, Tk) probability matrix
never exists, only one tile of it.

Blocked forward, one work item = (batch, head, block of BQ query rows):

    for each key tile K_t, V_t (BK keys; causal: stop after the diagonal tile)
        S^T = K_t Q_blk^T * scale (+ mask)        (BK, BQ) scores
        online softmax for the BQ rows at once     P^T = exp(S^T - m_new)
        acc^T = acc^T * alpha + V_t^T P^T          (D, BQ)
    out = acc / l,  lse = m + log(l)

Blocked backward (FlashAttention-2 style), one work item = (batch, kv head g):
it owns dK, dV of its kv head, so the G query heads that share g (grouped-query
attention) add into them without atomics and K/V are never repeated.  For every
query head of the group, every query block, every key tile:

    P^T  = exp(S^T - lse)              (probabilities recomputed, not stored)
    dP^T = V_t dO_blk^T
    dS^T = P^T * (dP^T - delta),       delta_i = rowsum(dO_i * O_i)
    dV_t^T += dO_blk^T P,   dK_t^T += Q_blk^T dS,   dQ_blk^T += K_t^T dS^T
    (the last two times scale)

Layout is what makes this fast.  The tiles are kept *transposed* (queries, or
keys, along the last axis) so that every product is `_mm_acc`, C += A B, whose
innermost loop runs over a contiguous row of BQ or BK elements -- a trip count
known when compiling, which LLVM turns into straight 8-wide AVX2 FMAs.  The
wrapper pre-packs K and V as contiguous transposed tiles (B, Hkv, n_tiles, D, BK);
a work item packs its Q / dO block as (D, BQ), zero-padded past the last row.

Causal masking is bottom-right aligned: key j is visible to query i iff
j <= i + (Tk - Tq).  Key tiles wholly past a block's last visible key are
skipped; inside the diagonal tile the invisible scores are set to -inf.  Rows
with no visible key give out = 0, lse = -inf, and zero gradients.
"""
import math

import numpy as np
from numba import njit, prange

from ._mathutil import fast_exp, typed

BQ = 64  # query rows per block (blocked kernels)
BK = 64  # keys per tile
ROWS_MAX = 16  # fewer query rows than this: use the row-at-a-time kernels
FM = {"reassoc", "nsz", "contract"}  # no nnan/ninf: -inf masks keep their meaning


@njit(cache=True, fastmath=FM, inline="always")
def _mm_acc(c, a, b, m, n, kk):
    """c[:m, :n] += a[:m, :kk] @ b[:kk, :n]   (rows contiguous; n is BQ or BK, a constant)."""
    i = 0
    while i + 4 <= m:  # four rows of c share every loaded row of b
        for p in range(kk):
            a0 = a[i, p]
            a1 = a[i + 1, p]
            a2 = a[i + 2, p]
            a3 = a[i + 3, p]
            for j in range(n):
                bv = b[p, j]
                c[i, j] += a0 * bv
                c[i + 1, j] += a1 * bv
                c[i + 2, j] += a2 * bv
                c[i + 3, j] += a3 * bv
        i += 4
    while i < m:  # leftover rows
        for p in range(kk):
            a0 = a[i, p]
            for j in range(n):
                c[i, j] += a0 * b[p, j]
        i += 1


@njit(cache=True, fastmath=FM, inline="always")
def _pack_t(dst, src, bq):
    """dst (D, BQ) = src[:bq] (bq, D) transposed, zero columns past bq."""
    dst[:, :] = 0
    for r in range(bq):
        for d in range(src.shape[1]):
            dst[d, r] = src[r, d]


@njit(cache=True, fastmath=FM, inline="always")
def _scores_t(st, k_t, qt, mask_blk, has_mask, is_causal, scale, bq, j0, n, first_hi):
    """st[:n] (n, BQ) = scale * K_t Q_blk^T (+ mask), -inf where causally hidden.
    first_hi = number of keys visible to the block's first row."""
    st[:n, :] = 0
    _mm_acc(st, k_t, qt, n, BQ, qt.shape[0])
    for jj in range(n):
        st_j = st[jj]
        for r in range(BQ):
            st_j[r] *= scale
        if has_mask:
            for r in range(bq):
                st_j[r] += mask_blk[r, j0 + jj]
        if is_causal:  # key j0 + jj is visible to rows r >= j0 + jj - first_hi + 1
            for r in range(min(BQ, max(0, j0 + jj - first_hi + 1))):
                st_j[r] = -np.inf


@njit(cache=True, parallel=True, fastmath=FM)
def attention_forward_kernel(q, k, vt, mask, has_mask, is_causal, scale, out, lse):
    # q (B, H, Tq, D), k (B, Hkv, Tk, D), vt (B, Hkv, n_tiles, D, BK), mask (B, H, Tq, Tk) view
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    Tk = k.shape[2]
    G = H // Hkv
    off = Tk - Tq
    nqb = (Tq + BQ - 1) // BQ
    for task in prange(B * H * nqb):
        bh = task // nqb
        b = bh // H
        h = bh % H
        g = h // G  # the kv head this query head reads
        i0 = (task % nqb) * BQ
        bq = min(BQ, Tq - i0)
        ninf = typed(q, -np.inf)
        qt = np.empty((D, BQ), q.dtype)  # the query block, transposed
        st = np.empty((BK, BQ), q.dtype)  # scores, then probabilities, of one tile (transposed)
        acct = np.zeros((D, BQ), q.dtype)  # running output (transposed)
        m = np.full(BQ, ninf, q.dtype)  # running row max
        l = np.zeros(BQ, q.dtype)  # running row sum of exp(s - m)
        mt = np.empty(BQ, q.dtype)
        alpha = np.empty(BQ, q.dtype)
        _pack_t(qt, q[b, h, i0:i0 + bq], bq)
        mask_blk = mask[b, h, i0:i0 + bq]  # (bq, Tk)
        k_g = k[b, g]  # (Tk, D)
        first_hi = i0 + off + 1  # keys visible to the block's first row (causal)
        hi = min(Tk, first_hi + bq - 1) if is_causal else Tk  # ... and to its last row
        for j0 in range(0, hi, BK):
            n = min(BK, hi - j0)
            _scores_t(st, k_g[j0:j0 + n], qt, mask_blk, has_mask, is_causal, scale, bq, j0, n, first_hi)
            mt[:] = ninf  # online softmax, all BQ rows at once (rows run along the inner axis)
            for jj in range(n):
                for r in range(BQ):
                    mt[r] = max(mt[r], st[jj, r])
            for r in range(BQ):
                m_new = max(m[r], mt[r])
                shift = m_new if m_new != ninf else typed(q, 0.0)  # nothing visible yet: shift by 0
                alpha[r] = fast_exp(m[r] - shift)  # rescale what was accumulated under the old max
                m[r] = m_new
                mt[r] = shift
                l[r] *= alpha[r]
            for jj in range(n):
                for r in range(BQ):
                    p = fast_exp(st[jj, r] - mt[r])  # st now holds p
                    st[jj, r] = p
                    l[r] += p
            for d in range(D):
                for r in range(BQ):
                    acct[d, r] *= alpha[r]
            _mm_acc(acct, vt[b, g, j0 // BK], st, D, BQ, n)  # acc^T += V_t^T P^T
        for r in range(bq):
            i = i0 + r
            if l[r] > 0:
                inv = typed(q, 1.0) / l[r]
                for d in range(D):
                    out[b, h, i, d] = acct[d, r] * inv
                lse[b, h, i] = m[r] + math.log(l[r])
            else:
                out[b, h, i, :] = 0
                lse[b, h, i] = ninf


@njit(cache=True, parallel=True, fastmath=FM)
def attention_backward_kernel(q, k, kt, v, mask, has_mask, is_causal, scale, out, lse, gout, gq, gkt, gvt):
    # kt (B, Hkv, n_tiles, D, BK); gkt, gvt: dK, dV in the same tiled transposed layout (unscaled dK)
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    Tk = k.shape[2]
    G = H // Hkv
    off = Tk - Tq
    for bg in prange(B * Hkv):
        b = bg // Hkv
        g = bg % Hkv
        ninf = typed(q, -np.inf)
        qt = np.empty((D, BQ), q.dtype)  # Q block transposed
        got = np.empty((D, BQ), q.dtype)  # dO block transposed
        dqt = np.empty((D, BQ), q.dtype)  # dQ block transposed
        st = np.empty((BK, BQ), q.dtype)  # P^T of one tile
        dpt = np.empty((BK, BQ), q.dtype)  # dP^T, then dS^T, of one tile
        p = np.empty((BQ, BK), q.dtype)  # P
        ds = np.empty((BQ, BK), q.dtype)  # dS
        Lp = np.empty(BQ, q.dtype)  # lse, +inf for rows without gradient (so p = 0)
        delta = np.empty(BQ, q.dtype)
        k_g = k[b, g]  # (Tk, D)
        v_g = v[b, g]  # (Tk, D)
        nt = kt.shape[2]
        gk_acc = np.zeros((nt, D, BK), q.dtype)  # this kv head's dK^T, dV^T tiles
        gv_acc = np.zeros((nt, D, BK), q.dtype)
        for h in range(g * G, (g + 1) * G):  # the query heads that share kv head g
            for i0 in range(0, Tq, BQ):
                bq = min(BQ, Tq - i0)
                _pack_t(qt, q[b, h, i0:i0 + bq], bq)
                _pack_t(got, gout[b, h, i0:i0 + bq], bq)
                mask_blk = mask[b, h, i0:i0 + bq]
                Lp[:] = np.inf
                delta[:] = 0
                for r in range(bq):
                    L = lse[b, h, i0 + r]
                    if L != ninf:  # a fully masked row has no gradient
                        Lp[r] = L
                    acc = typed(q, 0.0)
                    for d in range(D):  # delta_i = rowsum(dO_i * O_i)
                        acc += gout[b, h, i0 + r, d] * out[b, h, i0 + r, d]
                    delta[r] = acc
                dqt[:, :] = 0
                first_hi = i0 + off + 1
                hi = min(Tk, first_hi + bq - 1) if is_causal else Tk
                for j0 in range(0, hi, BK):
                    n = min(BK, hi - j0)
                    t = j0 // BK
                    _scores_t(st, k_g[j0:j0 + n], qt, mask_blk, has_mask, is_causal, scale, bq, j0, n, first_hi)
                    dpt[:n, :] = 0
                    _mm_acc(dpt, v_g[j0:j0 + n], got, n, BQ, D)  # dP^T = V_t dO^T
                    for jj in range(n):
                        for r in range(BQ):
                            pr = fast_exp(st[jj, r] - Lp[r])  # probability, recomputed from the saved lse
                            st[jj, r] = pr
                            dpt[jj, r] = pr * (dpt[jj, r] - delta[r])  # dS (without scale)
                    st[n:, :] = 0  # pad a short last tile with zero keys
                    dpt[n:, :] = 0
                    for r in range(BQ):  # P, dS = transposes of P^T, dS^T
                        for jj in range(BK):
                            p[r, jj] = st[jj, r]
                            ds[r, jj] = dpt[jj, r]
                    _mm_acc(gv_acc[t], got, p, D, BK, BQ)  # dV_t^T += dO^T P
                    _mm_acc(gk_acc[t], qt, ds, D, BK, BQ)  # dK_t^T += Q^T dS
                    _mm_acc(dqt, kt[b, g, t], dpt, D, BQ, n)  # dQ^T += K_t^T dS^T
                for r in range(bq):
                    for d in range(D):
                        gq[b, h, i0 + r, d] = dqt[d, r] * scale
        gkt[b, g] = gk_acc
        gvt[b, g] = gv_acc


# ------------------------------------------------------- one query row at a time
# Forward, for one (batch, head) and one query row i: walk the visible keys in
# tiles of BK, scores s_j = q_i . k_j * scale (+ mask), online softmax, acc += p v_j.
# Backward, for one (batch, kv head): for every query head that reads it and every
# row, recompute p = exp(s - lse) per tile and accumulate dV += p dO,
# dS = p (dO.v - delta), dQ += dS K, dK += dS Q.  K and V come transposed, (D, Tk),
# so the score loops run over contiguous keys.
@njit(cache=True, parallel=True, fastmath=FM)
def attention_forward_rows_kernel(q, kt, v, mask, has_mask, is_causal, scale, out, lse):
    # q (B, H, Tq, D), kt (B, Hkv, D, Tk), v (B, Hkv, Tk, D), mask (B, H, Tq, Tk) view
    B, H, Tq, D = q.shape
    Hkv = kt.shape[1]
    Tk = kt.shape[3]
    G = H // Hkv
    off = Tk - Tq
    for bh in prange(B * H):
        b = bh // H
        h = bh % H
        g = h // G  # the kv head this query head reads
        s = np.empty(BK, q.dtype)
        acc = np.empty(D, q.dtype)
        ninf = typed(q, -np.inf)
        kt_g = kt[b, g]  # (D, Tk)
        v_g = v[b, g]  # (Tk, D)
        for i in range(Tq):
            hi = min(Tk, i + off + 1) if is_causal else Tk  # keys [0, hi) are visible
            q_i = q[b, h, i]  # (D,)
            m = ninf
            l = typed(q, 0.0)
            acc[:] = 0
            for j0 in range(0, hi, BK):
                n = min(BK, hi - j0)
                s[:] = 0
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
                out[b, h, i, :] = 0
                lse[b, h, i] = ninf


@njit(cache=True, parallel=True, fastmath=FM)
def attention_backward_rows_kernel(q, k, kt, v, vt, mask, has_mask, is_causal, scale, out, lse, gout, gq, gk, gv):
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    Tk = k.shape[2]
    G = H // Hkv
    off = Tk - Tq
    for bg in prange(B * Hkv):
        b = bg // Hkv
        g = bg % Hkv
        ninf = typed(q, -np.inf)
        s = np.empty(BK, q.dtype)
        dp = np.empty(BK, q.dtype)
        dq = np.empty(D, q.dtype)
        k_g = k[b, g]  # (Tk, D)
        kt_g = kt[b, g]  # (D, Tk)
        vt_g = vt[b, g]  # (D, Tk)
        gk_g = gk[b, g]  # (Tk, D)
        gv_g = gv[b, g]  # (Tk, D)
        gk_g[:, :] = 0
        gv_g[:, :] = 0
        for h in range(g * G, (g + 1) * G):  # the query heads that share kv head g
            for i in range(Tq):
                L = lse[b, h, i]
                if L == ninf:  # fully masked row: no gradient
                    gq[b, h, i, :] = 0
                    continue
                q_i = q[b, h, i]  # (D,)
                go_i = gout[b, h, i]  # (D,)
                o_i = out[b, h, i]  # (D,)
                delta = typed(q, 0.0)
                for d in range(D):
                    delta += go_i[d] * o_i[d]
                dq[:] = 0
                hi = min(Tk, i + off + 1) if is_causal else Tk
                for j0 in range(0, hi, BK):
                    n = min(BK, hi - j0)
                    s[:] = 0
                    dp[:] = 0
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


def _tiles_t(x, dt):
    """(B, Hkv, Tk, D) -> (B, Hkv, n_tiles, D, BK): each key tile transposed and contiguous,
    zero-padded to whole tiles."""
    B, Hkv, Tk, D = x.shape
    nt = (Tk + BK - 1) // BK
    t = np.zeros((B, Hkv, nt * BK, D), dt)
    t[:, :, :Tk] = x
    return np.ascontiguousarray(t.reshape(B, Hkv, nt, BK, D).swapaxes(-1, -2))


def _untile(t, Tk):
    """Inverse of _tiles_t: (B, Hkv, n_tiles, D, BK) -> (B, Hkv, Tk, D) (a view)."""
    B, Hkv, nt, D, _ = t.shape
    return t.swapaxes(-1, -2).reshape(B, Hkv, nt * BK, D)[:, :, :Tk]


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
        attention_forward_rows_kernel(q, kt, v, m, has_mask, bool(is_causal), dt.type(scale), out, lse)
    else:
        k = np.ascontiguousarray(k, dtype=dt)
        attention_forward_kernel(q, k, _tiles_t(v, dt), m, has_mask, bool(is_causal), dt.type(scale), out, lse)
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
    if Tq < ROWS_MAX:
        kt = np.ascontiguousarray(np.swapaxes(k, -1, -2))  # (B, Hkv, D, Tk)
        vt = np.ascontiguousarray(np.swapaxes(v, -1, -2))  # (B, Hkv, D, Tk)
        gk = np.empty_like(k)
        gv = np.empty_like(v)
        attention_backward_rows_kernel(
            q, k, kt, v, vt, m, has_mask, bool(is_causal), dt.type(scale), out, lse, gout, gq, gk, gv)
        return gq, gk, gv
    kt = _tiles_t(k, dt)
    gkt = np.empty_like(kt)
    gvt = np.empty_like(kt)
    attention_backward_kernel(q, k, kt, v, m, has_mask, bool(is_causal), dt.type(scale), out, lse, gout, gq, gkt, gvt)
    gk = _untile(gkt, Tk) * dt.type(scale)
    gv = np.ascontiguousarray(_untile(gvt, Tk))
    return gq, gk, gv

"""Numba kernels: flash-style scaled-dot-product attention (forward and backward).

Forward, for one (batch, head) and one query row i:  walk the visible keys in
tiles of BK, compute the tile's scores s_j = q_i . k_j * scale (+ mask),
and keep an *online softmax*: running max m, running sum l = sum exp(s - m),
running output acc = sum exp(s - m) v_j.  When a tile raises the max, the old
l and acc are rescaled by exp(m_old - m_new).  At the end out = acc / l and
lse = m + log(l) is saved for the backward.  The (Tq, Tk) probability matrix
never exists.

Backward, for one (batch, kv head): for every query head that reads this kv
head and every row, recompute the tile's probabilities from the saved lse
(p = exp(s - lse)) and accumulate dV += p dO, dS = p (dO.v - delta),
dQ += dS K, dK += dS Q.  One task owns its kv head's dK, dV, so the query
heads that share them (grouped-query attention) need no atomics and K/V are
never repeated in memory.

Causal masking is bottom-right aligned: key j is visible to query i iff
j <= i + (Tk - Tq), so the loop simply stops at that key.  Rows with no visible
key give out = 0, lse = -inf, and zero gradients.

Loops are ordered so the innermost one runs over contiguous memory (K and V
are passed transposed, (D, Tk), for the dot products) which lets LLVM use
8-wide AVX2 fused multiply-adds.
"""
import math

import numpy as np
from numba import njit, prange

from ._mathutil import fast_exp, typed

BK = 64  # key tile length
FM = {"reassoc", "nsz", "contract"}  # no nnan/ninf: -inf masks keep their meaning


@njit(cache=True, parallel=True, fastmath=FM)
def attention_forward_kernel(q, kt, v, mask, has_mask, is_causal, scale, out, lse):
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
def attention_backward_kernel(q, k, kt, v, vt, mask, has_mask, is_causal, scale, out, lse, gout, gq, gk, gv):
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


def attention_forward(q, k, v, mask, is_causal, scale):
    q = np.ascontiguousarray(q)
    dt = q.dtype
    B, H, Tq, D = q.shape
    kt = np.ascontiguousarray(np.swapaxes(k, -1, -2), dtype=dt)  # (B, Hkv, Tk, D) -> (B, Hkv, D, Tk)
    v = np.ascontiguousarray(v, dtype=dt)
    m, has_mask = _mask4(mask, dt, (B, H, Tq, kt.shape[3]))
    out = np.empty_like(q)
    lse = np.empty((B, H, Tq), dt)
    attention_forward_kernel(q, kt, v, m, has_mask, bool(is_causal), dt.type(scale), out, lse)
    return out, lse


def attention_backward(q, k, v, mask, is_causal, scale, out, lse, gout):
    q = np.ascontiguousarray(q)
    dt = q.dtype
    B, H, Tq, D = q.shape
    k = np.ascontiguousarray(k, dtype=dt)
    v = np.ascontiguousarray(v, dtype=dt)
    kt = np.ascontiguousarray(np.swapaxes(k, -1, -2))  # (B, Hkv, D, Tk)
    vt = np.ascontiguousarray(np.swapaxes(v, -1, -2))  # (B, Hkv, D, Tk)
    m, has_mask = _mask4(mask, dt, (B, H, Tq, k.shape[2]))
    gq = np.empty_like(q)
    gk = np.empty_like(k)
    gv = np.empty_like(v)
    attention_backward_kernel(
        q, k, kt, v, vt, m, has_mask, bool(is_causal), dt.type(scale),
        np.ascontiguousarray(out, dtype=dt), np.ascontiguousarray(lse, dtype=dt),
        np.ascontiguousarray(gout, dtype=dt), gq, gk, gv,
    )
    return gq, gk, gv

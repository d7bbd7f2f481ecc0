"""Numba kernel: blocked, parallel batched matrix multiply -- the teaching version.

C[b] = op(A[b]) @ op(B[b]) where op transposes when asked.  The loops follow
the textbook recipe of fast matmul (the one BLAS libraries refine further):

1. Split C into row blocks of MC rows; each (batch, row block) is one parallel task.
2. Walk K in slices of KC and N in slices of NC; *pack* the A block (MC x KC)
   and the B block (KC x NC) into small contiguous buffers that stay in cache.
   Packing is also where a transposed operand is turned the right way round,
   so the hot loop never strides through memory.
3. Hot loop (i, k, j order): C[i, j0:j1] += A[i, k] * B[k, j0:j1] -- the
   innermost loop runs over contiguous j, which LLVM turns into 8-wide FMAs.
   Four rows of C are updated together, so each loaded B value is used 4 times.

It reaches roughly a quarter of OpenBLAS's speed on large matrices (see
docs/kernels.md); `minillm.kernels.matmul` therefore dispatches to np.matmul
for the shapes where BLAS wins.
"""
import numpy as np
from numba import njit, prange

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)

MC, KC, NC = 64, 256, 512


@njit(cache=CACHE, parallel=True, fastmath={"contract"})
def matmul_kernel(a, b, c, trans_a, trans_b):
    # a: (Bt, M, K) or (Bt, K, M) if trans_a;  b: (Bt, K, N) or (Bt, N, K) if trans_b;  c: (Bt, M, N)
    Bt, M, N = c.shape
    K = a.shape[1] if trans_a else a.shape[2]
    n_mb = (M + MC - 1) // MC
    for task in prange(Bt * n_mb):
        bi = task // n_mb
        i0 = (task % n_mb) * MC
        mc = min(MC, M - i0)
        ap = np.empty((MC, KC), c.dtype)  # packed A block
        bp = np.empty((KC, NC), c.dtype)  # packed B block
        acc = np.zeros((MC, NC), c.dtype)
        for j0 in range(0, N, NC):
            nc = min(NC, N - j0)
            acc[:mc, :nc] = 0
            for k0 in range(0, K, KC):
                kc = min(KC, K - k0)
                for i in range(mc):  # pack A[i0:i0+mc, k0:k0+kc]
                    for kk in range(kc):
                        ap[i, kk] = a[bi, k0 + kk, i0 + i] if trans_a else a[bi, i0 + i, k0 + kk]
                for kk in range(kc):  # pack B[k0:k0+kc, j0:j0+nc]
                    for jj in range(nc):
                        bp[kk, jj] = b[bi, j0 + jj, k0 + kk] if trans_b else b[bi, k0 + kk, j0 + jj]
                i = 0
                while i + 4 <= mc:  # 4 rows of C at a time
                    for kk in range(kc):
                        a0 = ap[i, kk]
                        a1 = ap[i + 1, kk]
                        a2 = ap[i + 2, kk]
                        a3 = ap[i + 3, kk]
                        for jj in range(nc):
                            bv = bp[kk, jj]
                            acc[i, jj] += a0 * bv
                            acc[i + 1, jj] += a1 * bv
                            acc[i + 2, jj] += a2 * bv
                            acc[i + 3, jj] += a3 * bv
                    i += 4
                while i < mc:  # leftover rows
                    for kk in range(kc):
                        a0 = ap[i, kk]
                        for jj in range(nc):
                            acc[i, jj] += a0 * bp[kk, jj]
                    i += 1
            for i in range(mc):
                for jj in range(nc):
                    c[bi, i0 + i, j0 + jj] = acc[i, jj]


def matmul_numba(a, b, trans_a=False, trans_b=False):
    """np.matmul semantics (batch broadcasting, 1-D operands not supported) on the Numba kernel."""
    a = np.asarray(a)
    b = np.asarray(b)
    dt = np.result_type(a, b)
    M = a.shape[-1] if trans_a else a.shape[-2]
    K = a.shape[-2] if trans_a else a.shape[-1]
    N = b.shape[-2] if trans_b else b.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a3 = np.ascontiguousarray(np.broadcast_to(a, batch + a.shape[-2:]), dtype=dt).reshape((-1,) + a.shape[-2:])
    b3 = np.ascontiguousarray(np.broadcast_to(b, batch + b.shape[-2:]), dtype=dt).reshape((-1,) + b.shape[-2:])
    c = np.empty(batch + (M, N), dt)
    if K == 0:
        c[...] = 0
        return c
    matmul_kernel(a3, b3, c.reshape((-1, M, N)), bool(trans_a), bool(trans_b))
    return c

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


# ----------------------------------------------------------- the GEMM a training step runs
# np.matmul (OpenBLAS) on the kernel thread pool: each share multiplies a range of C's rows with
# OpenBLAS single-threaded. Why not let OpenBLAS thread the GEMM itself: its workers spin ~0.1 s
# after every threaded call, and a training step calls a GEMM every millisecond, so one core was
# always busy spinning while our other kernels (attention, norms, ...) started their second share
# on it; under other jobs' load a 2-thread step ran 4x slower than a 1-thread step (the spinning
# thread also waits for a descheduled partner). With one pool whose idle workers sleep, every
# kernel gets both cores. One chunk per thread: C's rows in as many ranges (its columns when C
# is wider than tall: the weight gradients of an (out, in) = (128, 384) layer); more, smaller
# BLAS calls cost 10-40 % more work (B re-packed per call; 8 row ranges of a (128, 2048) x
# (2048, 384) product took 6.6x one call, 1 thread). The ranges depend only on the shape and the
# thread count, so the bits are the same on every call at a thread count; they may differ from
# one unsplit np.matmul in the last place (OpenBLAS's edge tiles), as OpenBLAS's own threading
# does. A 2-D product (every linear layer) is handed out as descriptors (`_gemm_shares`): a worker
# watching its slot runs its share at once, calling OpenBLAS's cblas_?gemm without the GIL
# (`_spin.run_share`); that made the tiny model's split GEMMs 1.45x -> 1.66x faster than one thread
# (benchmarks/README.md, "Round 5"). Batched products keep the Python shares below.
import ctypes  # noqa: E402
import glob  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402

import numba  # noqa: E402

from . import _spin  # noqa: E402
from ._threads import run_items, run_shares  # noqa: E402

# Below this many multiply-adds (M·N·K, all batches) one thread does the GEMM: starting the
# second chunk costs ~5-10 µs, a GEMM of 2M multiply-adds ~15 µs on one core.
SPLIT_MIN = 2_000_000
# Below this many OpenBLAS runs a GEMM on the calling thread by itself (its threshold,
# 65536 x GEMM_MULTITHREAD_THRESHOLD 4), so np.matmul is called as it is: no thread-count
# switch, and the ~4 µs this wrapper costs stays off the small products of decoding.
BLAS_SERIAL_MAX = 262_144
_BLAS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _openblas_libraries():
    """Every OpenBLAS loaded in this process, as ctypes libraries (NumPy's wheels ship one as
    libscipy_openblas, with prefixed names); [] if NumPy uses another BLAS (MKL, Accelerate)."""
    paths = []
    try:
        with open("/proc/self/maps") as f:  # Linux: every mapped library
            for line in f:
                path = os.path.realpath(line.rstrip("\n").split(maxsplit=5)[-1])
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    np_dir = os.path.dirname(np.__file__)
    for pattern in (os.path.join(np_dir, os.pardir, "numpy.libs", "*openblas*"), os.path.join(np_dir, ".dylibs", "*openblas*")):
        paths += [p for p in map(os.path.realpath, sorted(glob.glob(pattern))) if p not in paths]
    libs = []
    for path in paths:
        try:
            libs.append(ctypes.CDLL(path))  # already loaded by NumPy: this returns the same library
        except OSError:
            continue
    return libs


def _symbol(lib, name):
    """lib's function `name` under OpenBLAS's possible prefixes/suffixes, as (function, ILP64) or None."""
    for prefix in ("scipy_", ""):
        for suffix in ("64_", ""):
            fn = getattr(lib, f"{prefix}{name}{suffix}", None)
            if fn is not None:
                return fn, suffix == "64_"
    return None


def _openblas_controls():
    """(get, set) ctypes functions for each OpenBLAS loaded in this process; [] if NumPy uses
    another BLAS, in which case the GEMMs keep that library's own threading."""
    controls = []
    for lib in _openblas_libraries():
        get, set_ = _symbol(lib, "openblas_get_num_threads"), _symbol(lib, "openblas_set_num_threads")
        if get is not None and set_ is not None:
            (get, _), (set_, _) = get, set_
            get.restype, get.argtypes, set_.restype, set_.argtypes = ctypes.c_int, [], None, [ctypes.c_int]
            controls.append((get, set_))
    return controls


_gemm_addresses = None


def gemm_addresses():
    """(cblas_sgemm, cblas_dgemm) addresses of NumPy's OpenBLAS when it has the ILP64 interface
    (64-bit integers: NumPy's wheels), which `_spin.run_share` calls from the pool's workers; None
    otherwise (the shares then call np.matmul in Python)."""
    global _gemm_addresses
    if _gemm_addresses is None:
        _gemm_addresses = ()
        for lib in _openblas_libraries():
            s, d = _symbol(lib, "cblas_sgemm"), _symbol(lib, "cblas_dgemm")
            if s is not None and d is not None and s[1] and d[1]:
                _gemm_addresses = tuple(ctypes.cast(f, ctypes.c_void_p).value for f, _ in (s, d))
                break
    return _gemm_addresses or None


_controls = None


def blas_controls():
    """The (get, set) thread-count functions of the OpenBLAS libraries in this process, found once."""
    global _controls
    if _controls is None:
        _controls = _openblas_controls()
    return _controls


_serial_lock = threading.Lock()
_serial_depth = 0
_saved_threads: list = []


class _BlasSerial:
    """``with _BlasSerial():`` OpenBLAS runs single-threaded inside, and gets its thread count
    back when the last such block (in any thread) ends; the user's own NumPy code outside keeps
    its setting."""

    def __enter__(self):
        global _serial_depth, _saved_threads
        controls = blas_controls()
        with _serial_lock:
            if _serial_depth == 0:
                _saved_threads = [get() for get, _ in controls]
                for (_, set_), n in zip(controls, _saved_threads):
                    if n != 1:
                        set_(1)
            _serial_depth += 1

    def __exit__(self, *exc):
        global _serial_depth
        with _serial_lock:
            _serial_depth -= 1
            if _serial_depth == 0:
                for (_, set_), n in zip(_controls, _saved_threads):
                    if n != 1:
                        set_(n)


_blas_serial = _BlasSerial()


def _gemm_rows(a, b, c, first, step):
    """Chunk `first` of `step`: C[..., lo:hi, :] = A[..., lo:hi, :] @ B, a contiguous range of rows."""
    M = c.shape[-2]
    lo, hi = first * M // step, (first + 1) * M // step
    np.matmul(a[..., lo:hi, :], b, out=c[..., lo:hi, :])  # (..., hi-lo, K) @ (..., K, N) -> (..., hi-lo, N)


def _gemm_cols(a, b, c, first, step):
    """Chunk `first` of `step`: C[..., :, lo:hi] = A @ B[..., :, lo:hi], a contiguous range of columns."""
    N = c.shape[-1]
    lo, hi = first * N // step, (first + 1) * N // step
    np.matmul(a, b[..., :, lo:hi], out=c[..., :, lo:hi])  # (..., M, K) @ (..., K, hi-lo) -> (..., M, hi-lo)


def _layout(x):
    """(CBLAS transpose flag, leading dimension) of a 2-D view that BLAS can read in place, else None."""
    size = x.itemsize
    rows, cols = x.shape
    s0, s1 = x.strides
    if (s1 == size or cols == 1) and s0 % size == 0 and s0 // size >= max(cols, 1):
        return _spin.NO_TRANS, s0 // size  # rows of x are contiguous
    if (s0 == size or rows == 1) and s1 % size == 0 and s1 // size >= max(rows, 1):
        return _spin.TRANS, s1 // size  # x is the transpose of a row-major (cols, rows) matrix
    return None


def _gemm_shares(a, b, c, threads):
    """One `_spin` descriptor per thread for c = a @ b (2-D; c new and C-contiguous): C's rows in
    `threads` ranges (its columns when C is wider than tall), or None when an operand's strides
    are not BLAS's or NumPy's BLAS has no ILP64 cblas (then `_gemm_rows` / `_gemm_cols`)."""
    fns = gemm_addresses()
    la, lb = _layout(a), _layout(b)
    if fns is None or la is None or lb is None or not _spin.JIT:
        return None
    (M, K), N, size = a.shape, b.shape[1], a.itemsize
    descs = np.zeros((threads, _spin.SLOT_SIZE), np.int64)
    d = descs.T  # d[FIELD] is that field of every share
    d[_spin.STATE] = _spin.GEMM
    d[_spin.DOUBLE] = a.dtype == np.float64
    d[_spin.FN] = fns[a.dtype == np.float64]
    d[_spin.TRANS_A], d[_spin.LDA] = la
    d[_spin.TRANS_B], d[_spin.LDB] = lb
    d[_spin.M], d[_spin.N], d[_spin.K], d[_spin.LDC] = M, N, K, N
    pa, pb, pc = a.ctypes.data, b.ctypes.data, c.ctypes.data
    by_rows = M >= N
    edges = [i * (M if by_rows else N) // threads for i in range(threads + 1)]
    for i, (lo, hi) in enumerate(zip(edges, edges[1:])):
        if by_rows:  # rows lo:hi of A and C
            d[_spin.M, i] = hi - lo
            d[_spin.A, i] = pa + lo * size * (la[1] if la[0] == _spin.NO_TRANS else 1)
            d[_spin.B, i] = pb
            d[_spin.C, i] = pc + lo * N * size
        else:  # columns lo:hi of B and C
            d[_spin.N, i] = hi - lo
            d[_spin.A, i] = pa
            d[_spin.B, i] = pb + lo * size * (1 if lb[0] == _spin.NO_TRANS else lb[1])
            d[_spin.C, i] = pc + lo * size
    return descs


def matmul(a, b, trans_a=False, trans_b=False):
    """a @ b as `reference.matmul` (np.matmul semantics, trans_* transposes the last two axes, no
    copy), its rows split over the kernel threads with OpenBLAS single-threaded in each share."""
    if trans_a:
        a = a.swapaxes(-1, -2)  # (..., K, M) -> (..., M, K)
    if trans_b:
        b = b.swapaxes(-1, -2)  # (..., N, K) -> (..., K, N)
    if a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.dtype not in _BLAS_DTYPES:
        return np.matmul(a, b)  # vectors, mixed or non-BLAS dtypes (float16): NumPy's own loops
    M, K = a.shape[-2:]
    N = b.shape[-1]
    work = max(a.size // max(M * K, 1), b.size // max(K * N, 1)) * M * N * K  # multiply-adds, all batches
    if work < BLAS_SERIAL_MAX or not (_controls or blas_controls()):  # small, or not OpenBLAS (its own threads)
        return np.matmul(a, b)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    c = np.empty(batch + (M, N), a.dtype)  # (..., M, N)
    threads = numba.get_num_threads()
    with _blas_serial:
        if threads < 2 or work < SPLIT_MIN:
            np.matmul(a, b, out=c)
        elif c.ndim == 2 and (descs := _gemm_shares(a, b, c, min(threads, max(M, N)))) is not None:
            run_shares(descs)  # one share per thread, started by watching workers without the GIL
        elif M >= N:
            run_items(_gemm_rows, min(threads, M), a, b, c)  # one chunk per thread
        else:
            run_items(_gemm_cols, min(threads, N), a, b, c)
    return c

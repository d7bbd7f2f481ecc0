"""Handing work to a pool thread in a microsecond: a slot the worker watches without the GIL.

Why: a thread sleeping on a lock takes ~25-50 us to start once it is woken on this project's
2-core VMs (the waker's system call alone ~20 us; benchmarks/README.md, "Round 5"), and a training
step hands out ~90 GEMMs and ~40 other kernels, each worth 0.1-1 ms. So a pool worker, once it has
finished a job, keeps watching its slot for SPIN_SECONDS before it goes to sleep (OpenMP and
OpenBLAS workers do the same, for 0.1-200 ms): it watches inside a `nogil` Numba function, so it
holds no GIL and the calling thread runs on. A GEMM share is run right there, OpenBLAS called
through its C function pointer (`run_share`); a Python job (a Numba kernel's share, `_threads.
run_items`) makes `serve` return, and the worker runs it in Python.

One slot per worker, an int64 array; field STATE moves like this (the caller posts, the worker
takes; only the worker goes to sleep, only the caller wakes it):

    idle --post--> GEMM --the worker takes it--> TAKEN --> DONE       (idle: EMPTY, DONE or RETURNED)
                        --the caller takes it back--> TAKEN --> RETURNED
    idle --post--> PYJOB --the worker takes it--> PYTAKEN --job done--> RETURNED
    idle --SPIN_SECONDS without a post--> ASLEEP --post (the caller then releases the worker's lock)--> ...

DONE says more than RETURNED: the worker finished a share while watching, so it is watching
still (or was not given a core: `back_off`).

Every change of STATE is an atomic compare-and-swap, so a post and the worker's decision to
sleep cannot both win; the GEMM's fields are written before STATE (release) and read after it
(acquire). A caller that finds a GEMM share not taken yet when its own share is done takes it back
and runs it itself, so a worker that the OS has not scheduled (other jobs on the cores) only
costs its share, never a wait.

Under NUMBA_DISABLE_JIT=1 (Python kernels, for a debugger) the atomics are Python functions
under one lock, a worker does not spin, and the GEMMs keep `_matmul`'s Python shares.
"""
from __future__ import annotations

import os
import platform
import threading
import time
import warnings

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)

# the slot's fields (int64 each); a GEMM share is C[M, N] = op(A)[M, K] @ op(B)[K, N], row-major
STATE, DOUBLE, TRANS_A, TRANS_B, M, N, K, A, LDA, B, LDB, C, LDC, FN = range(14)
SLOT_SIZE = 16  # 14 fields, rounded up
# states
EMPTY, GEMM, TAKEN, DONE, ASLEEP, PYJOB, PYTAKEN, RETURNED = range(8)
BUSY = -1  # what `post` returns when the worker is still inside an earlier job
# CBLAS constants
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _spin_seconds(default: float = 0.001) -> float:
    """MINILLM_SPIN_SECONDS, how long an idle worker watches its slot before it sleeps (default 1 ms,
    benchmarks/README.md, "Round 5"; 0: sleep at once, as on a machine shared with other jobs)."""
    raw = os.environ.get("MINILLM_SPIN_SECONDS", "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
        if not 0 <= value <= 1:
            raise ValueError
    except ValueError:
        warnings.warn(f"MINILLM_SPIN_SECONDS={raw!r} is not a number of seconds in [0, 1]; using {default}",
                      RuntimeWarning, stacklevel=2)
        return default
    return value


SPIN_SECONDS = _spin_seconds()
BACK_OFF_SECONDS = 0.2  # no spinning for this long after a sign that the cores are oversubscribed

JIT = not numba.config.DISABLE_JIT


def new_slot() -> np.ndarray:
    return np.zeros(SLOT_SIZE, np.int64)


# ------------------------------------------------------------------ atomics (LLVM instructions)
def _item_pointer(context, builder, arrty, arr, index):
    return cgutils.get_item_pointer(context, builder, arrty, context.make_array(arrty)(context, builder, arr), [index])


@intrinsic
def _load(typingctx, arr, index):
    """arr[index] read with acquire ordering (never hoisted out of a loop)."""
    def codegen(context, builder, sig, args):
        return builder.load_atomic(_item_pointer(context, builder, sig.args[0], *args), "acquire", 8)
    return types.int64(arr, index), codegen


@intrinsic
def _store(typingctx, arr, index, value):
    """arr[index] = value with release ordering (every earlier write is visible first)."""
    def codegen(context, builder, sig, args):
        builder.store_atomic(args[2], _item_pointer(context, builder, sig.args[0], args[0], args[1]), "release", 8)
        return context.get_dummy_value()
    return types.void(arr, index, types.int64), codegen


@intrinsic
def _cas(typingctx, arr, index, old, new):
    """If arr[index] == old: arr[index] = new and True, else False; atomically."""
    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.extract_value(builder.cmpxchg(ptr, args[2], args[3], "acq_rel", "acquire"), 1)
    return types.boolean(arr, index, types.int64, types.int64), codegen


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _relax(typingctx):
    """The CPU's spin-wait hint (x86 `pause`: lets the core's other hyperthread run); a no-op elsewhere."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


def _gemm_call(float_type):
    @intrinsic
    def call(typingctx, fn, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
        """cblas_?gemm(RowMajor, trans_a, trans_b, m, n, k, 1, a, lda, b, ldb, 0, c, ldc) through
        the function pointer `fn` (ILP64: 64-bit integers), pointers passed as integers."""
        def codegen(context, builder, sig, args):
            i32, i64, ptr = ir.IntType(32), ir.IntType(64), ir.IntType(8).as_pointer()
            fty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, float_type, ptr, i64, ptr, i64,
                                                  float_type, ptr, i64])
            f = builder.inttoptr(args[0], fty.as_pointer())
            fn_, ta, tb, m_, n_, k_, a_, lda_, b_, ldb_, c_, ldc_ = args
            builder.call(f, [ir.Constant(i32, ROW_MAJOR), builder.trunc(ta, i32), builder.trunc(tb, i32), m_, n_, k_,
                             ir.Constant(float_type, 1.0), builder.inttoptr(a_, ptr), lda_, builder.inttoptr(b_, ptr),
                             ldb_, ir.Constant(float_type, 0.0), builder.inttoptr(c_, ptr), ldc_])
            return context.get_dummy_value()
        return types.void(*([types.int64] * 12)), codegen
    return call


_sgemm = _gemm_call(ir.FloatType())
_dgemm = _gemm_call(ir.DoubleType())


# ------------------------------------------------------------------ the protocol
@njit(cache=CACHE, nogil=True)
def run_share(s):
    """The GEMM share described by the fields of `s` (a slot or a caller's descriptor)."""
    if s[DOUBLE]:
        _dgemm(s[FN], s[TRANS_A], s[TRANS_B], s[M], s[N], s[K], s[A], s[LDA], s[B], s[LDB], s[C], s[LDC])
    else:
        _sgemm(s[FN], s[TRANS_A], s[TRANS_B], s[M], s[N], s[K], s[A], s[LDA], s[B], s[LDB], s[C], s[LDC])


@njit(cache=CACHE, nogil=True)
def serve(slot, spins, first_state):
    """The worker's side: set STATE to `first_state` if it is not negative (RETURNED after a Python
    job), then run posted GEMM shares; return PYJOB when a Python job was taken (the caller runs
    it and calls again with RETURNED), ASLEEP after `spins` idle checks (the caller then sleeps
    on its lock until a post wakes it)."""
    if first_state >= 0:
        _store(slot, STATE, first_state)
    idle = 0
    while True:
        s = _load(slot, STATE)
        if s == GEMM:
            if _cas(slot, STATE, GEMM, TAKEN):
                run_share(slot)
                _store(slot, STATE, DONE)
                idle = 0
        elif s == PYJOB:
            if _cas(slot, STATE, PYJOB, PYTAKEN):
                return PYJOB
        elif s == EMPTY or s == DONE or s == RETURNED:
            idle += 1
            if idle > spins and _cas(slot, STATE, s, ASLEEP):
                return ASLEEP
            _relax()
        else:  # TAKEN by the caller, which took back a share: never sleep from here, or the
            _relax()  # RETURNED it stores next would leave this worker asleep with no one to wake it


@njit(cache=CACHE, nogil=True)
def post(slot, desc):
    """The caller's side: give the worker `desc` (desc[STATE] = GEMM or PYJOB, a GEMM's fields
    copied first). Returns the worker's previous state (ASLEEP: the caller must wake it), or
    BUSY when it is still inside an earlier job (nothing posted)."""
    while True:
        s = _load(slot, STATE)
        if s == TAKEN or s == PYTAKEN:
            return BUSY
        for i in range(1, SLOT_SIZE):  # the worker reads these only after it has taken the state
            slot[i] = desc[i]
        if _cas(slot, STATE, s, desc[STATE]):
            return s


@njit(cache=CACHE, nogil=True)
def collect(slot, spins):
    """The caller's side, after its own share: a GEMM share the worker has not taken yet is run
    here (returns RETURNED); one it is running is waited for, `spins` checks at most (returns
    DONE when it is done, TAKEN when the worker is still on it: the caller yields its core and
    calls again)."""
    if _cas(slot, STATE, GEMM, TAKEN):
        run_share(slot)
        _store(slot, STATE, RETURNED)
        return RETURNED
    for _ in range(spins + 1):  # (at least one look, also with spins = 0)
        if _load(slot, STATE) != TAKEN:  # DONE, or already ASLEEP again after it
            return DONE
        _relax()
    return TAKEN


_POSIX = os.name == "posix"


@intrinsic
def _yield_core(typingctx):
    """sched_yield(): let a thread that waits for a core run (POSIX; a `pause` elsewhere)."""
    def codegen(context, builder, sig, args):
        if _POSIX:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
            builder.call(fn, [])
        elif _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


# ------------------------------------------------------------------ a team working through phases
# Threads that run one kernel together (the decode step, `_decode.py`) hand out each phase's work
# items by claiming them from a counter, and wait for the phase's items to be done before the next
# phase: counters[2 p] = items of phase p claimed so far, counters[2 p + 1] = items done. A thread
# waits only for items another thread has claimed (and so is running), never for a thread to
# arrive, so one thread alone finishes every phase, and a late one finds them done.
@njit(cache=CACHE, nogil=True)
def claim(counters, i, n):
    """The next of n items of counter i (0 .. n - 1), or -1 when all are claimed."""
    while True:
        v = _load(counters, i)
        if v >= n:
            return -1
        if _cas(counters, i, v, v + 1):
            return v


@njit(cache=CACHE, nogil=True)
def count(counters, i):
    """counters[i] += 1, atomically (an item done: release, so its writes are seen first)."""
    while True:
        v = _load(counters, i)
        if _cas(counters, i, v, v + 1):
            return


@njit(cache=CACHE, nogil=True)
def wait_for(counters, i, n):
    """Until counters[i] reaches n (every item of a phase done). The items still running belong to
    a thread that holds a core, unless other jobs took it: after ~2,000 checks, yield the core."""
    checks = 0
    while _load(counters, i) < n:
        checks += 1
        if checks < 2000:
            _relax()
        else:
            _yield_core()


if not JIT:  # NUMBA_DISABLE_JIT=1: the functions above run as Python; atomics under one lock
    _atomic = threading.Lock()

    def _load(arr, index):  # noqa: F811
        with _atomic:
            return int(arr[index])

    def _store(arr, index, value):  # noqa: F811
        with _atomic:
            arr[index] = value

    def _cas(arr, index, old, new):  # noqa: F811
        with _atomic:
            if arr[index] == old:
                arr[index] = new
                return True
            return False

    def _relax():  # noqa: F811
        time.sleep(0)

    def _yield_core():  # noqa: F811
        time.sleep(0)


_seconds_per_check = None
_quiet_until = 0.0


def spins(seconds: float | None = None) -> int:
    """How many idle checks last about `seconds` (default SPIN_SECONDS) on this CPU (a `pause`
    takes ~10-150 cycles depending on the model; measured once); 0 (sleep at once) while backing off."""
    global _seconds_per_check
    if not JIT:
        return 0
    if seconds is None:
        if backing_off():
            return 0
        seconds = SPIN_SECONDS
    if _seconds_per_check is None:
        busy = new_slot()
        busy[STATE] = TAKEN  # `collect` then only watches it: the same check-and-pause loop as `serve`'s
        collect(busy, 10)  # compiled (or loaded) before timing
        n = 20_000
        t = time.perf_counter()
        collect(busy, n)
        _seconds_per_check = max((time.perf_counter() - t) / n, 1e-9)
    return max(1, int(seconds / _seconds_per_check)) if seconds > 0 else 0


def backing_off() -> bool:
    """True for BACK_OFF_SECONDS after the last `back_off()`: the cores looked oversubscribed."""
    return time.monotonic() < _quiet_until


def back_off() -> None:
    """A worker that was watching its slot did not start a share before the caller had done its
    own: it was not on a core, so the cores are oversubscribed (other jobs), and a spinning worker
    would only take CPU time from them and from the caller. Workers sleep right after each job
    for the next BACK_OFF_SECONDS (libgomp similarly stops spinning when oversubscribed)."""
    global _quiet_until
    _quiet_until = time.monotonic() + BACK_OFF_SECONDS

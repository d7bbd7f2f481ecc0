"""Run a serial Numba kernel's work items on several threads, without `parallel=True`.

A kernel written for this takes two extra arguments, ``first`` and ``step``, and does the work
items ``first, first + step, first + 2 * step, ...`` of its ``n_items``; it is compiled with
``nogil=True``, so while it runs the other threads run theirs. ``run_items`` cuts the items into
``step`` such chunks, a few per thread (``numba.get_num_threads()``, which
``numba.set_num_threads`` and NUMBA_NUM_THREADS set), lets every thread claim chunks until none
is left, and waits for all of them.

Why not ``prange``: Numba's parallel compiler types and lowers a ``parallel=True`` function's
loop body a second time (as a "gufunc"), so a big kernel costs about twice its serial compile
time on a fresh install: the two attention kernels took ~24 of the ~47 CPU s that the first
``examples/train_tiny_llama.py --quick`` spent compiling (benchmarks/README.md, "Cold start").
Starting the shares costs a few µs per call when the worker is watching its slot (one post;
a ``concurrent.futures`` pool took ~13 µs with its futures and condition variables), so
kernels of ~0.1 ms and more can be split: besides attention, the GEMMs (`_matmul.matmul`), the
norms, RoPE, SwiGLU, cross-entropy and AdamW run their shares here above a size each.

One pool for everything. OpenBLAS's own workers spin ~0.1 s after each threaded GEMM, so a kernel
that started a second thread right after a GEMM shared a core with the spinning BLAS thread, and
on a machine with other jobs the spinning made a 2-thread training step 4x slower than a 1-thread
one (benchmarks/README.md, "Round 4"). `_matmul.matmul` therefore runs OpenBLAS single-threaded
inside each share, and splits the GEMMs over this pool (`run_shares`).

How a worker waits (`_spin.py`): after a job it watches its slot for `_spin.SPIN_SECONDS` (1 ms)
inside a `nogil` Numba function, then sleeps on its lock. Waking a sleeping thread costs ~25-50 us
on a 2-core VM, as much as a small GEMM share, while a watching worker starts a GEMM share within
a microsecond, and a Python job (a Numba kernel's share) as soon as it gets the GIL (~25 us
instead of ~50; benchmarks/README.md, "Round 5"). When a worker that was watching failed to start
a share before the caller had done its own, the cores are taken by other jobs, and the workers stop
watching for a while (`_spin.back_off`), so spinning does not take CPU time from them.

Interleaved items (not halves) give each thread a fair share of causal attention, whose later
query blocks see more keys.

Also tried: the serial kernel under a two-line ``prange`` driver (``for w in prange(n):
kernel(..., w, n)``). With 2 threads Numba compiled the kernel again inside the driver's gufunc:
attention forward 2.3 -> 4.4, backward 3.4 -> 9.2 CPU s on a fresh cache, most of the saving gone.
"""
from __future__ import annotations

import itertools
import os
import threading
import time

import numba

from . import _spin


# Work is cut into up to CHUNKS_PER_THREAD chunks per thread, and each thread (the caller
# included) claims the next chunk until none is left: a worker that the OS schedules late (other
# jobs on the cores) then gets fewer chunks instead of holding everyone up, and a worker that
# is not awake at all by the time the caller has done every chunk gets none. More chunks
# balance better but cost a call each (~1-2 us) and, for the GEMMs, efficiency (_matmul.py
# asks for one chunk per thread). The number of chunks depends only on the thread count, never
# on which workers happen to be free, so a kernel whose result depends on how the work is cut
# (a GEMM split into row ranges) gives the same bits on every call at a given thread count.
CHUNKS_PER_THREAD = 2


class _Job:
    """One run_items call: `n` chunks, chunk i = kernel(*args, i, n), claimed in order by any thread."""

    __slots__ = ("kernel", "args", "n", "claim", "left", "lock", "finished", "error")

    def __init__(self, kernel, args, n):
        self.kernel, self.args, self.n = kernel, args, n
        self.claim = itertools.count().__next__  # atomic under the GIL: each chunk index is handed out once
        self.left = n
        self.lock = threading.Lock()
        self.finished = threading.Lock()
        self.finished.acquire()  # released when the last chunk is done
        self.error = None

    def work(self):
        while True:
            i = self.claim()
            if i >= self.n:
                return
            try:
                self.kernel(*self.args, i, self.n)
            except BaseException as e:  # handed to the caller of run_items
                self.error = e
            with self.lock:
                self.left -= 1
                last = self.left == 0
            if last:
                self.finished.release()


class _Worker:
    """One pool thread. Between jobs it watches its slot (`_spin.serve`, no GIL held) for
    `_spin.SPIN_SECONDS`, running GEMM shares posted there itself; then it sleeps on `wake`
    (a lock) until a post finds it ASLEEP and releases it."""

    def __init__(self, index: int):
        self.slot = _spin.new_slot()
        self.wake = threading.Lock()
        self.wake.acquire()
        self.job = None  # the Python job of the last PYJOB post
        threading.Thread(target=self._loop, name=f"minillm-kernel-{index}", daemon=True).start()

    def _loop(self):
        first_state = -1
        while True:
            if _spin.serve(self.slot, _spin.spins(), first_state) == _spin.PYJOB:
                self.job.work()  # (a job that is already done has no chunk left to claim)
                first_state = _spin.RETURNED  # (stored by the next `serve`: one call, not two)
            else:  # ASLEEP
                self.wake.acquire()
                first_state = -1

    def post(self, desc) -> int:
        """Hand this worker a GEMM share or (desc[STATE] = PYJOB) `self.job`; returns its previous
        state, `_spin.BUSY` if it is still inside an earlier job (then nothing was posted: the
        caller does the work)."""
        previous = _spin.post(self.slot, desc)
        if previous == _spin.ASLEEP:
            self.wake.release()
        return previous


_PYJOB = _spin.new_slot()
_PYJOB[_spin.STATE] = _spin.PYJOB


_workers: list = []
_busy = threading.Lock()  # held while one run_items call hands out work


def _forget_pool():
    """In a child made by fork(): the parent's pool threads do not exist here, so start afresh
    (a worker copied from the parent would take work and never run it; the lock may have been
    held by a parent thread)."""
    global _workers, _busy
    _workers, _busy = [], threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_items(kernel, n_items: int, *args) -> None:
    """Every work item of kernel once: kernel(*args, first, step) for first = 0 .. step - 1, spread
    over min(numba.get_num_threads(), n_items) threads, the calling thread included.

    step is the number of chunks, min(n_items, CHUNKS_PER_THREAD * threads), not the thread count:
    a kernel must only rely on doing items first, first + step, ... A worker still busy with an
    earlier call (it woke late) is skipped. A call made while another thread's call is handing
    out work (two models trained from two threads) does every chunk on its own thread."""
    threads = max(1, min(numba.get_num_threads(), n_items))
    if threads == 1:
        kernel(*args, 0, 1)
        return
    n_chunks = min(n_items, CHUNKS_PER_THREAD * threads)
    if not _busy.acquire(blocking=False):
        for first in range(n_chunks):  # the same chunks, one after the other
            kernel(*args, first, n_chunks)
        return
    try:
        while len(_workers) < threads - 1:
            _workers.append(_Worker(len(_workers) + 1))
        job = _Job(kernel, args, n_chunks)
        for w in _workers[: threads - 1]:
            w.job = job  # before the post: the worker reads it once it has taken the post
            w.post(_PYJOB)
        job.work()  # this thread claims chunks too
        job.finished.acquire()  # every chunk done (at once, if this thread did the last one)
    finally:
        _busy.release()
    if job.error is not None:
        raise job.error


def run_shares(descs) -> None:
    """Every GEMM share in `descs` ((threads, _spin.SLOT_SIZE) int64, one per thread: `_matmul`):
    the first on this thread, each other posted to a worker's slot, where a watching worker
    starts it within a microsecond without taking the GIL. One that no worker has taken by the
    time this thread's own share is done is run here (`_spin.collect`), as are all of them when
    the pool is busy with another thread's call."""
    threads = len(descs)
    if threads == 1 or not _busy.acquire(blocking=False):
        for desc in descs:
            _spin.run_share(desc)
        return
    try:
        while len(_workers) < threads - 1:
            _workers.append(_Worker(len(_workers) + 1))
        posted = [w.post(desc) for w, desc in zip(_workers, descs[1:])]  # the workers' previous states
        _spin.run_share(descs[0])
        spins = _spin.spins(0.001)  # this thread waits for a share being run for up to 1 ms before yielding
        for w, desc, previous in zip(_workers, descs[1:], posted):
            if previous == _spin.BUSY:
                _spin.run_share(desc)
                continue
            while (got := _spin.collect(w.slot, spins)) == _spin.TAKEN:  # still on it: let it have the core
                time.sleep(0)
            if got == _spin.RETURNED and previous == _spin.DONE:  # it was watching, yet did not start
                _spin.back_off()
    finally:
        _busy.release()


def run_items_above(min_size: int, size: int, kernel, n_items: int, *args) -> None:
    """``run_items`` for an input of ``size`` elements from ``min_size`` on; below it every item on
    the calling thread (``kernel(*args, 0, 1)``, the same compiled function: one to compile, not
    two), because handing a share to a worker (~5-10 us idle, milliseconds when it waits for a
    core under other jobs' load) costs more than it saves on a small input. Each kernel module
    measures its own ``min_size`` (PARALLEL_MIN)."""
    if size >= min_size:
        run_items(kernel, n_items, *args)
    else:
        kernel(*args, 0, 1)

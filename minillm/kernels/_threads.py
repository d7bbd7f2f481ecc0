"""Run a serial Numba kernel's work items on several threads, without `parallel=True`.

A kernel written for this takes two extra arguments, ``first`` and ``step``, and does the work
items ``first, first + step, first + 2 * step, ...`` of its ``n_items``; it is compiled with
``nogil=True``, so while it runs the other threads run theirs. ``run_items`` starts one share
per thread (``numba.get_num_threads()``, which ``numba.set_num_threads`` and NUMBA_NUM_THREADS
set) and waits for all of them.

Why not ``prange``: Numba's parallel compiler types and lowers a ``parallel=True`` function's
loop body a second time (as a "gufunc"), so a big kernel costs about twice its serial compile
time on a fresh install: the two attention kernels took ~24 of the ~47 CPU s that the first
``examples/train_tiny_llama.py --quick`` spent compiling (benchmarks/README.md, "Cold start").
Starting the shares costs ~5-10 µs per call (one lock handed to each worker and one handed
back; a ``concurrent.futures`` pool took ~13 µs with its futures and condition variables), so
kernels of ~0.1 ms and more can be split: besides attention, the GEMMs (`_matmul.matmul`), the
norms, RoPE, SwiGLU, cross-entropy and AdamW run their shares here above a size each.

One pool for everything: an idle worker sleeps on its lock, it never spins. OpenBLAS's own
workers spin ~0.1 s after each threaded GEMM, so a kernel that started a second thread right
after a GEMM shared a core with the spinning BLAS thread, and on a machine with other jobs the
spinning made a 2-thread training step 4x slower than a 1-thread one (benchmarks/README.md,
"Round 4"). `_matmul.matmul` therefore runs OpenBLAS single-threaded inside each share.

Interleaved items (not halves) give each thread a fair share of causal attention, whose later
query blocks see more keys.

Also tried: the serial kernel under a two-line ``prange`` driver (``for w in prange(n):
kernel(..., w, n)``). With 2 threads Numba compiled the kernel again inside the driver's gufunc:
attention forward 2.3 -> 4.4, backward 3.4 -> 9.2 CPU s on a fresh cache, most of the saving gone.
"""
from __future__ import annotations

import os
import threading

import numba


class _Worker:
    """One pool thread. It waits on ``go`` (a lock held by the pool), runs ``job``, releases ``done``."""

    def __init__(self, index: int):
        self.go = threading.Lock()
        self.go.acquire()
        self.done = threading.Lock()
        self.done.acquire()
        self.job = None
        self.error = None
        threading.Thread(target=self._loop, name=f"minillm-kernel-{index}", daemon=True).start()

    def _loop(self):
        while True:
            self.go.acquire()  # sleeps (no spinning) until run_items hands over a share
            kernel, args = self.job
            self.job = None
            try:
                kernel(*args)
            except BaseException as e:  # handed to the caller of run_items
                self.error = e
            finally:
                self.done.release()


_workers: list = []
_busy = threading.Lock()  # held while one run_items call owns the workers


def _forget_pool():
    """In a child made by fork(): the parent's pool threads do not exist here, so start afresh
    (a worker copied from the parent would take work and never run it; the lock may have been
    held by a parent thread)."""
    global _workers, _busy
    _workers, _busy = [], threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_items(kernel, n_items: int, *args) -> None:
    """kernel(*args, first, step) for first = 0 .. threads - 1, in parallel; step = threads.

    threads = min(numba.get_num_threads(), n_items). The calling thread runs share 0. A call made
    while another thread's call owns the pool (two models trained from two threads) runs its
    shares itself, one after the other, so each output is the same whichever way it ran."""
    threads = max(1, min(numba.get_num_threads(), n_items))
    if threads == 1:
        kernel(*args, 0, 1)
        return
    if not _busy.acquire(blocking=False):
        for first in range(threads):
            kernel(*args, first, threads)
        return
    try:
        while len(_workers) < threads - 1:
            _workers.append(_Worker(len(_workers) + 1))
        helpers = _workers[: threads - 1]
        for first, w in enumerate(helpers, start=1):
            w.job = (kernel, args + (first, threads))
            w.go.release()
        error = None
        try:
            kernel(*args, 0, threads)  # this thread takes share 0
        except BaseException as e:
            error = e
        for w in helpers:  # wait for every share, even after an error (they write into our arrays)
            w.done.acquire()
            if w.error is not None:
                error, w.error = error or w.error, None
        if error is not None:
            raise error
    finally:
        _busy.release()

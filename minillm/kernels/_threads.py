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
A thread pool costs ~20-50 µs per call to start the shares, nothing next to an attention call
(milliseconds). Interleaved items (not halves) give each thread a fair share of causal
attention, whose later query blocks see more keys.

Also tried: the serial kernel under a two-line ``prange`` driver (``for w in prange(n):
kernel(..., w, n)``). With 2 threads Numba compiled the kernel again inside the driver's gufunc:
attention forward 2.3 -> 4.4, backward 3.4 -> 9.2 CPU s on a fresh cache, most of the saving gone.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading

import numba

_pool, _pool_size = None, 0
_pool_lock = threading.Lock()


def _executor(workers: int):
    """One process-wide pool, replaced by a bigger one when more threads are asked for."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool_size < workers:
            old = _pool
            _pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="minillm-kernel")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _forget_pool():
    """In a child made by fork(): the parent's pool threads do not exist here, so start afresh
    (a pool copied from the parent would take work and never run it)."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_items(kernel, n_items: int, *args) -> None:
    """kernel(*args, first, step) for first = 0 .. threads - 1, in parallel; step = threads."""
    threads = max(1, min(numba.get_num_threads(), n_items))
    if threads == 1:
        kernel(*args, 0, 1)
        return
    futures = [_executor(threads - 1).submit(kernel, *args, w, threads) for w in range(1, threads)]
    kernel(*args, 0, threads)  # this thread takes share 0
    for f in futures:
        f.result()

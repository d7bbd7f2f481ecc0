"""The thread-pool variants of the RMSNorm / RoPE / SwiGLU / softmax / cross-entropy / AdamW kernels.

The wrappers run these only above PARALLEL_MIN elements (~100k and more: below that the serial
kernel wins), beyond the arrays the other tests use. Here the threshold is lowered to 0 (and
the work items shrunk) so the pool kernels run on small hypothesis shapes with 2 threads, and must equal both
the NumPy reference and the serial kernel (RMSNorm: bit for bit, since both add the same
row blocks in the same order)."""
import os
import time

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.kernels import _elementwise, _norms, _optim, _softmax
from minillm.kernels import reference as R

from test_kernels_helpers import DTYPES, assert_close

SETTINGS = settings(max_examples=15, deadline=None)


@pytest.fixture
def parallel(monkeypatch):
    """Force the parallel kernels (2 threads) in the wrappers; yields a function that turns it off."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    previous = numba.get_num_threads()
    numba.set_num_threads(2)
    monkeypatch.setattr(_norms, "PARALLEL_MIN", {k: 0 for k in _norms.PARALLEL_MIN})
    monkeypatch.setattr(_elementwise, "PARALLEL_MIN", {k: 0 for k in _elementwise.PARALLEL_MIN})
    monkeypatch.setattr(_softmax, "CE_PARALLEL_MIN", 0)
    monkeypatch.setattr(_softmax, "SOFTMAX_PARALLEL_MIN", 0)
    monkeypatch.setattr(_optim, "PARALLEL_MIN", 0)
    # work items of a few elements, so the small shapes below still make several items per thread
    monkeypatch.setattr(_elementwise, "SPAN", 8)
    monkeypatch.setattr(_elementwise, "ROPE_SPAN", 2)
    monkeypatch.setattr(_optim, "SPAN", 16)

    def serial():
        monkeypatch.setattr(_norms, "PARALLEL_MIN", {k: 10**18 for k in _norms.PARALLEL_MIN})
        monkeypatch.setattr(_elementwise, "PARALLEL_MIN", {k: 10**18 for k in _elementwise.PARALLEL_MIN})
        monkeypatch.setattr(_softmax, "CE_PARALLEL_MIN", 10**18)
        monkeypatch.setattr(_softmax, "SOFTMAX_PARALLEL_MIN", 10**18)
        monkeypatch.setattr(_optim, "PARALLEL_MIN", 10**18)

    yield serial
    numba.set_num_threads(previous)


def arrays(seed, dtype, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3 * _norms.ROW_BLOCK + 5), c=st.integers(1, 40))
def test_rmsnorm_parallel_equals_reference_and_serial(parallel, dtype, seed, n, c):
    x, w, gy = arrays(seed, dtype, (n, c), (c,), (n, c))
    y, rstd = _norms.rmsnorm_forward(x, w, 1e-5)
    gx, gw = _norms.rmsnorm_backward(x, w, rstd, gy)
    ry, rrstd = R.rmsnorm_forward(x, w, 1e-5)
    rgx, rgw = R.rmsnorm_backward(x, w, rrstd, gy)
    # gw sums n rows: float32 rounding grows with the size of its summands, not of the (possibly
    # cancelled) result, so its absolute tolerance scales with Σ|x·gy·rstd|
    gw_scale = max(1.0, float(np.abs(x.astype(np.float64) * gy * rrstd.reshape(-1, 1)).sum(axis=0).max()))
    # gx = rstd * (g - xhat * mean(g * xhat)) cancels where a row's xhat**2 is ~1 (always at c = 1:
    # there gx = g * rstd * eps / (x**2 + eps)), so each element's float32 rounding grows with its two
    # terms, not with their difference (seed 40315, n 230, c 1: kernel and reference each 6e-5 from
    # float64 at |gx| = 569, and 1.8e-5 apart at 0.40, where the terms are ~90)
    r64, g64 = rrstd.astype(np.float64).reshape(-1, 1), gy.astype(np.float64) * w
    xhat64 = x.astype(np.float64) * r64
    gx_scale = np.maximum(1.0, r64 * (np.abs(g64) + np.abs(xhat64 * (g64 * xhat64).mean(axis=-1, keepdims=True))))
    for got, want, scale in ((y, ry, 1.0), (rstd, rrstd, 1.0), (gx, rgx, gx_scale), (gw, rgw, gw_scale)):
        assert_close(got, want, dtype, scale=scale)
    parallel()  # now the serial kernels: same blocks, same order -> identical bits
    sy, srstd = _norms.rmsnorm_forward(x, w, 1e-5)
    sgx, sgw = _norms.rmsnorm_backward(x, w, rstd, gy)
    for got, want in ((y, sy), (rstd, srstd), (gx, sgx), (gw, sgw)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 3), t=st.integers(1, 9), h=st.integers(1, 3), half=st.integers(1, 4))
def test_rope_parallel_equals_reference(parallel, dtype, seed, b, t, h, half):
    x, cos, sin = arrays(seed, dtype, (b, t, h, 2 * half), (t, half), (t, half))
    assert_close(_elementwise.rope_forward(x, cos, sin), R.rope_forward(x, cos, sin), dtype)
    assert_close(_elementwise.rope_backward(x, cos, sin), R.rope_backward(x, cos, sin), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 100))
def test_swiglu_parallel_equals_reference(parallel, dtype, seed, n):
    a, b, gy = arrays(seed, dtype, (n,), (n,), (n,))
    a[::7] *= 1e4  # saturated gates: sigmoid 0 / 1 must stay finite
    assert_close(_elementwise.swiglu_forward(a, b), R.swiglu_forward(a, b), dtype)
    for got, want in zip(_elementwise.swiglu_backward(a, b, gy), R.swiglu_backward(a, b, gy)):
        assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3 * _softmax.ROW_SPAN + 5), v=st.integers(1, 30),
       smoothing=st.sampled_from([0.0, 0.1]))
def test_cross_entropy_parallel_equals_reference_and_serial(parallel, dtype, seed, n, v, smoothing):
    (x,) = arrays(seed, dtype, (n, v))
    t = np.random.default_rng(seed).integers(0, v, n)
    t[::5] = -100  # ignored rows
    gl = np.full(n, 0.5, dtype)
    loss, lse = _softmax.cross_entropy_forward(x, t, -100, smoothing)
    g = _softmax.cross_entropy_backward(x, t, lse, gl, -100, smoothing)
    rloss, rlse = R.cross_entropy_forward(x, t, -100, smoothing)
    for got, want in ((loss, rloss), (lse, rlse), (g, R.cross_entropy_backward(x, t, rlse, gl, -100, smoothing))):
        assert_close(got, want, dtype)
    parallel()  # the serial span over all rows: the same per-row code -> identical bits
    sloss, slse = _softmax.cross_entropy_forward(x, t, -100, smoothing)
    for got, want in ((loss, sloss), (lse, slse), (g, _softmax.cross_entropy_backward(x, t, lse, gl, -100, smoothing))):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3 * _softmax.ROW_SPAN + 5), v=st.integers(1, 30),
       log=st.booleans())
def test_softmax_parallel_equals_reference_and_serial(parallel, dtype, seed, n, v, log):
    x, gy = arrays(seed, dtype, (n, v), (n, v))
    fwd, bwd = ((_softmax.log_softmax_forward, _softmax.log_softmax_backward) if log
                else (_softmax.softmax_forward, _softmax.softmax_backward))
    rfwd, rbwd = (R.log_softmax_forward, R.log_softmax_backward) if log else (R.softmax_forward, R.softmax_backward)
    y = fwd(x)
    g = bwd(y, gy)
    assert_close(y, rfwd(x), dtype)
    assert_close(g, rbwd(rfwd(x), gy), dtype)
    parallel()  # the serial span over all rows: the same per-row code -> identical bits
    np.testing.assert_array_equal(fwd(x), y)
    np.testing.assert_array_equal(bwd(y, gy), g)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3 * _optim.SPAN + 5), wd=st.sampled_from([0.0, 0.1]))
def test_adamw_parallel_equals_reference_and_serial(parallel, dtype, seed, n, wd):
    p, g, m = arrays(seed, dtype, (n,), (n,), (n,))
    v = np.abs(m)
    states = [[a.copy() for a in (p, m, v)] for _ in range(3)]
    _optim.adamw_step(states[0][0], g, states[0][1], states[0][2], 3, 1e-2, 0.9, 0.99, 1e-8, wd)
    R.adamw_step(states[1][0], g, states[1][1], states[1][2], 3, 1e-2, 0.9, 0.99, 1e-8, wd)
    for got, want in zip(states[0], states[1]):
        assert_close(got, want, dtype)
    parallel()  # serial: elementwise, so identical bits
    _optim.adamw_step(states[2][0], g, states[2][1], states[2][2], 3, 1e-2, 0.9, 0.99, 1e-8, wd)
    for got, want in zip(states[0], states[2]):
        np.testing.assert_array_equal(got, want)


def test_thread_pool_kernels_do_every_item_once_whatever_the_thread_count():
    """Attention (blocked and row-at-a-time) and embedding backward split their work items over Python threads
    (`_threads.run_items`, not prange): 1, 2 (or 3) threads give the same bits, since each output
    element is written by exactly one work item, and every item runs (no element left unset)."""
    from minillm.kernels import _attention, _threads

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    previous = numba.get_num_threads()
    rng = np.random.default_rng(0)
    q, go = (rng.standard_normal((2, 4, 70, 8)).astype(np.float32) for _ in range(2))
    k, v = (rng.standard_normal((2, 2, 70, 8)).astype(np.float32) for _ in range(2))
    ids, gout = rng.integers(0, 50, 300), rng.standard_normal((300, 130)).astype(np.float32)
    results = []
    try:
        for threads in range(1, min(3, numba.config.NUMBA_NUM_THREADS) + 1):
            numba.set_num_threads(threads)
            out, lse = _attention.attention_forward(q, k, v, None, True, 0.35)
            grads = _attention.attention_backward(q, k, v, None, True, 0.35, out, lse, go)
            few = q[:, :, :5]  # fewer query rows than ROWS_MAX: the row-at-a-time kernels
            out_r, lse_r = _attention.attention_forward(few, k, v, None, True, 0.35)
            grads_r = _attention.attention_backward(few, k, v, None, True, 0.35, out_r, lse_r, go[:, :, :5])
            results.append((out, lse, *grads, out_r, lse_r, *grads_r, _elementwise.embedding_backward(ids, gout, 50)))
    finally:
        numba.set_num_threads(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(results[0][-1], R.embedding_backward(ids, gout, 50), rtol=1e-5, atol=1e-5)
    seen = []
    _threads.run_items(lambda n, first, step: seen.extend(range(first, n, step)), 7, 7)
    assert sorted(seen) == list(range(7))


def test_thread_pool_chunks_errors_and_a_late_worker():
    """run_items cuts the items into chunks that any thread may claim: every item runs exactly
    once whoever claims it; an error in a chunk reaches the caller (after every other chunk is
    done); a call made while another thread's call owns the pool runs on its own thread instead of waiting."""
    import threading

    from minillm.kernels import _spin, _threads

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    previous = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        for n in (1, 2, 7, 100):
            seen = []
            _threads.run_items(lambda n, first, step: seen.extend(range(first, n, step)), n, n)
            assert sorted(seen) == list(range(n))

        def fails(first, step):
            if first == step - 1:
                raise ValueError(f"chunk {first} of {step}")

        with pytest.raises(ValueError, match="chunk"):
            _threads.run_items(fails, 8)
        # another thread's call holds the pool (its worker sits inside a chunk): ours must not wait
        worker = _threads._workers[0]  # first let the worker finish its share of the call above:
        deadline = time.time() + 20  # a worker still busy is skipped, and `hold` below needs it
        while worker.slot[_spin.STATE] == _spin.PYTAKEN and time.time() < deadline:
            time.sleep(0.001)
        release, inside = threading.Event(), threading.Event()

        def hold(first, step):
            if threading.current_thread().name.startswith("minillm-kernel"):
                inside.set()
                release.wait(20)
            else:  # the calling thread: leave the other chunk to the worker
                inside.wait(20)

        caller = threading.Thread(target=_threads.run_items, args=(hold, 2))
        caller.start()
        assert inside.wait(20)  # the worker claimed a chunk and sits in it; `caller` waits for it
        seen = []
        _threads.run_items(lambda n, first, step: seen.extend(range(first, n, step)), 5, 5)  # runs on this thread alone
        assert sorted(seen) == list(range(5))
        release.set()
        caller.join(20)
        assert not caller.is_alive()
    finally:
        numba.set_num_threads(previous)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_thread_pool_works_in_a_forked_child():
    """A child forked after the pool started has none of its threads: run_items must start new ones
    there (a pool copied from the parent would take the work and never run it)."""
    from minillm.kernels import _threads

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    previous = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        seen = []
        _threads.run_items(lambda n, first, step: seen.extend(range(first, n, step)), 4, 4)  # the pool starts
        assert sorted(seen) == [0, 1, 2, 3]
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only if both shares ran
            code = 1
            try:
                done = []
                _threads.run_items(lambda n, first, step: done.extend(range(first, n, step)), 4, 4)
                code = 0 if sorted(done) == [0, 1, 2, 3] else 1
            finally:
                os._exit(code)
        deadline = time.time() + 20
        while True:
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                break
            if time.time() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("run_items hung in a forked child")
            time.sleep(0.05)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        numba.set_num_threads(previous)


def test_spin_slot_protocol():
    """`_spin`, the slot a pool worker watches without the GIL: a posted GEMM share is run by the
    watching worker, or taken back by the caller when no worker has started it; a worker whose
    share the caller took back keeps watching until the caller's RETURNED (falling asleep from TAKEN
    would leave it asleep with no one to wake it: a bug this guards); an idle worker falls asleep
    and the next post says so (the caller then wakes it); a worker inside a Python job is BUSY."""
    import threading

    from minillm.kernels import _matmul, _spin

    if not _spin.JIT or _matmul.gemm_addresses() is None:
        pytest.skip("needs compiled kernels and NumPy's OpenBLAS with the ILP64 cblas")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((40, 24)), rng.standard_normal((24, 30))
    c = np.zeros((40, 30))
    descs = _matmul._gemm_shares(a, b, c, 2)
    want = a @ b

    slot = _spin.new_slot()  # nobody watches: the caller takes its share back
    assert _spin.post(slot, descs[1]) == _spin.EMPTY and slot[_spin.STATE] == _spin.GEMM
    assert _spin.collect(slot, 1) == _spin.RETURNED and slot[_spin.STATE] == _spin.RETURNED
    np.testing.assert_allclose(c[20:], want[20:], rtol=1e-12, atol=1e-12)
    assert not c[:20].any()  # only the posted share ran

    def watch(slot, seconds, out, first_state=-1):
        thread = threading.Thread(target=lambda: out.append(_spin.serve(slot, _spin.spins(seconds), first_state)))
        thread.start()
        return thread

    c[:] = 0
    slot, out = _spin.new_slot(), []
    slot[_spin.STATE] = _spin.RETURNED  # the worker stores EMPTY once it is inside `serve`, watching
    worker = watch(slot, 0.5, out, first_state=_spin.EMPTY)
    deadline = time.time() + 20
    while slot[_spin.STATE] != _spin.EMPTY and time.time() < deadline:
        time.sleep(0.001)
    # posted while it watches (for 0.5 s: a test process descheduled for longer than a short
    # watch once found the worker already asleep, and post rightly said ASLEEP)
    assert _spin.post(slot, descs[1]) == _spin.EMPTY
    deadline = time.time() + 20
    while slot[_spin.STATE] != _spin.DONE and slot[_spin.STATE] != _spin.ASLEEP and time.time() < deadline:
        time.sleep(0.001)
    np.testing.assert_allclose(c[20:], want[20:], rtol=1e-12, atol=1e-12)  # the worker ran it
    worker.join(20)
    assert out == [_spin.ASLEEP] and slot[_spin.STATE] == _spin.ASLEEP  # idle: it fell asleep
    assert _spin.post(slot, descs[1]) == _spin.ASLEEP  # so this post must wake it
    assert _spin.collect(slot, 1) == _spin.RETURNED  # (not woken here: the caller runs it)

    slot, out = _spin.new_slot(), []
    slot[_spin.STATE] = _spin.TAKEN  # the caller is running a share it took back
    worker = watch(slot, 0.0, out)  # no spinning at all once idle...
    time.sleep(0.05)
    assert worker.is_alive() and out == []  # ...yet it waits for the caller's DONE
    assert _spin.collect(slot, 10) == _spin.TAKEN  # (a share still running: the caller would wait)
    assert _spin.collect(slot, 0) == _spin.TAKEN
    slot[_spin.STATE] = _spin.RETURNED  # (what the caller's `collect` stores; the worker reads it atomically)
    worker.join(20)
    assert _spin.collect(slot, 0) == _spin.DONE  # even with no spinning it looks once (it hung on MINILLM_SPIN_SECONDS=0)
    assert out == [_spin.ASLEEP] and slot[_spin.STATE] == _spin.ASLEEP

    job = _spin.new_slot()
    job[_spin.STATE] = _spin.PYJOB
    slot = _spin.new_slot()
    assert _spin.post(slot, job) == _spin.EMPTY
    assert _spin.serve(slot, 10, -1) == _spin.PYJOB and slot[_spin.STATE] == _spin.PYTAKEN
    assert _spin.post(slot, descs[1]) == _spin.BUSY and slot[_spin.STATE] == _spin.PYTAKEN


def test_gemm_shares_with_a_busy_or_late_worker(monkeypatch):
    """GEMM shares between Python jobs, idle gaps and a worker still inside a Python job: every
    product equals np.matmul. A worker in PYTAKEN gets no share (`post` says BUSY) and the caller
    runs it; once such a share was counted as done and C kept np.empty's leftover memory."""
    import threading

    from minillm.kernels import _matmul, _spin, _threads

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    monkeypatch.setattr(_matmul, "SPLIT_MIN", 0)
    monkeypatch.setattr(_matmul, "BLAS_SERIAL_MAX", 0)
    previous = numba.get_num_threads()
    rng = np.random.default_rng(0)
    try:
        numba.set_num_threads(2)
        a, b = rng.standard_normal((64, 40)), rng.standard_normal((40, 48))
        _matmul.matmul(a, b)  # the pool and its worker exist
        if _spin.JIT and _matmul.gemm_addresses():
            worker, inside, release = _threads._workers[0], threading.Event(), threading.Event()
            worker.job = _threads._Job(lambda first, step: (inside.set(), release.wait(20)), (), 1)
            deadline = time.time() + 20
            while worker.post(_threads._PYJOB) == _spin.BUSY:  # (still finishing an earlier job)
                assert time.time() < deadline
                time.sleep(0.001)
            try:
                assert inside.wait(20)  # the worker sits inside a Python job
                c = np.full((64, 48), np.nan)
                _threads.run_shares(_matmul._gemm_shares(a, b, c, 2))
                np.testing.assert_allclose(c, a @ b, rtol=1e-12, atol=1e-12)
            finally:
                release.set()
        for i in range(300):  # shares right after a Python job, after gaps long enough to sleep, ...
            m, k, n = rng.integers(1, 60, 3)
            a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
            if i % 3 == 0:
                _threads.run_items(lambda first, step: None, 4)
            elif i % 7 == 0:
                time.sleep(0.002)
            np.testing.assert_allclose(_matmul.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12, err_msg=f"product {i}")
    finally:
        numba.set_num_threads(previous)


def test_spin_seconds_from_the_environment(monkeypatch):
    """MINILLM_SPIN_SECONDS sets how long an idle worker watches its slot; a bad value warns and
    keeps the default."""
    from minillm.kernels import _spin

    monkeypatch.setenv("MINILLM_SPIN_SECONDS", "0")
    assert _spin._spin_seconds() == 0.0
    monkeypatch.setenv("MINILLM_SPIN_SECONDS", "0.0002")
    assert _spin._spin_seconds() == 0.0002
    for bad in ("fast", "-1", "5"):
        monkeypatch.setenv("MINILLM_SPIN_SECONDS", bad)
        with pytest.warns(RuntimeWarning, match="MINILLM_SPIN_SECONDS"):
            assert _spin._spin_seconds() == 0.001
    monkeypatch.delenv("MINILLM_SPIN_SECONDS")
    assert _spin._spin_seconds() == 0.001

"""Numba kernels == NumPy reference (hypothesis shapes), finite-difference gradient checks,
stability with huge logits, and the backend switch."""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm import kernels as K
from minillm.kernels import _elementwise, _matmul, _norms, _optim, _softmax
from minillm.kernels import reference as R

from test_kernels_helpers import BACKENDS, DTYPES, assert_close, assert_grad, backend

SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**32 - 1)
dim = st.integers(1, 37)  # odd sizes and size 1


def rng_arrays(seed, dtype, *shapes, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]


# --------------------------------------------------------------------- switch
def test_switch_and_bad_name():
    assert K.get_kernels() in ("numba", "numpy")
    with backend("numpy"):
        assert K.get_kernels() == "numpy"
    with pytest.raises(ValueError, match="numba, numpy"):
        K.set_kernels("cuda")


def test_env_variable_selects_reference():
    code = "import minillm.kernels as K; print(K.get_kernels())"
    env = dict(os.environ, MINILLM_KERNELS="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"


# name -> which argument's size decides (None: no size cut-off)
KERNELS = {
    "softmax_forward": 0, "softmax_backward": 0, "log_softmax_forward": 0, "log_softmax_backward": 0,
    "cross_entropy_forward": 0, "cross_entropy_backward": 0, "rmsnorm_forward": 0, "rmsnorm_backward": 0,
    "layernorm_forward": 0, "layernorm_backward": 0,
    "rope_forward": 0, "rope_backward": 0, "swiglu_forward": 0, "swiglu_backward": 0, "erf": None,
    "embedding_backward": 1, "attention_forward": 0, "attention_backward": 0, "adamw_step": 0,
    "llama_decode_step": None,
    "nf4_dequantize": 0, "matmul": None,
}


def test_every_kernel_pairs_a_reference_with_a_numba_twin():
    dispatched = {name for name, f in vars(K).items() if hasattr(f, "numba_module")}
    assert dispatched == set(KERNELS)
    for name, size_arg in KERNELS.items():
        kernel = getattr(K, name)
        twin = getattr(kernel.numba_module, name)
        assert kernel.__name__ == name and kernel.__wrapped__ is getattr(R, name)
        assert kernel.numba_module.__name__.startswith("minillm.kernels._"), name
        assert kernel.size_arg == size_arg, name
        assert list(inspect.signature(getattr(twin, "py_func", twin)).parameters) == list(
            inspect.signature(getattr(R, name)).parameters), f"{name}: the twins' signatures differ"


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_dispatch_by_backend_and_size(name, monkeypatch):
    """numpy backend: always the reference; numba backend: the twin, unless the deciding
    argument is smaller than SMALL_INPUT (kernels with no cut-off: always the twin)."""
    kernel = getattr(K, name)
    calls = []
    monkeypatch.setattr(R, name, lambda *args: calls.append("numpy"))
    monkeypatch.setattr(kernel.numba_module, name, lambda *args: calls.append("numba"))
    monkeypatch.setattr(K, "SMALL_INPUT", 100)
    n_args = len(inspect.signature(kernel).parameters)

    def call(size):
        args = [np.zeros(1)] * n_args
        args[kernel.size_arg or 0] = np.zeros(size)
        kernel(*args)
        return calls.pop()

    with backend("numpy"):
        assert [call(99), call(100)] == ["numpy", "numpy"]
    with backend("numba"):
        expected = ["numba", "numba"] if KERNELS[name] is None else ["numpy", "numba"]
        assert [call(99), call(100)] == expected


# --------------------------------------------------------------------- matmul
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=seeds, m=dim, k=dim, n=dim, ta=st.booleans(), tb=st.booleans(), batch=st.sampled_from([(), (1,), (3,), (2, 1)]))
def test_matmul_numba_equals_reference(dtype, seed, m, k, n, ta, tb, batch):
    a_shape = batch + ((k, m) if ta else (m, k))
    b_shape = (2,) + ((n, k) if tb else (k, n)) if batch == (2, 1) else ((n, k) if tb else (k, n))
    a, b = rng_arrays(seed, dtype, a_shape, b_shape)
    expected = R.matmul(a, b, ta, tb)
    assert_close(_matmul.matmul_numba(a, b, ta, tb), expected, dtype, scale=k, what="matmul_numba")
    assert_close(K.matmul_numba(a, b, ta, tb), expected, dtype, scale=k)
    assert_close(K.matmul(a, b, ta, tb), expected, dtype, scale=k, what="matmul dispatch")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("shape", [(67, 33, 45), (20, 33, 45), (3, 5, 200)])  # M > N: rows split; M < N: columns
@pytest.mark.parametrize("batch", [(), (3,)])
def test_matmul_split_over_threads(monkeypatch, dtype, ta, tb, shape, batch):
    """The "numba" matmul splits C's rows (or columns) over the kernel threads, OpenBLAS
    single-threaded in each share: equal to np.matmul up to rounding, the same bits on every call
    (also when the pool is busy and the caller does every share itself), and OpenBLAS's thread
    count is back to the user's afterwards. A 2-D product goes to the workers' slots
    (`_threads.run_shares`, OpenBLAS called from `_spin.run_share`); a batched one is cut in
    Python shares (`_gemm_rows` / `_gemm_cols`)."""
    import numba

    from minillm.kernels import _spin, _threads

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    monkeypatch.setattr(_matmul, "SPLIT_MIN", 0)
    monkeypatch.setattr(_matmul, "BLAS_SERIAL_MAX", 0)
    m, k, n = shape
    a, b = rng_arrays(1, dtype, batch + ((k, m) if ta else (m, k)), (n, k) if tb else (k, n))
    names = ("_gemm_rows", "_gemm_cols", "run_shares")
    chunks, real = [], {f: getattr(_matmul, f) for f in names}

    def spy(name):
        def chunk(*args):  # records what ran and OpenBLAS's thread counts inside it
            if name == "run_shares":
                descs = args[0]
                chunks.append((name, (len(descs), int(descs[0][_spin.M]), int(descs[0][_spin.N])),
                               [get() for get, _ in _matmul._controls]))
            else:
                chunks.append((name, args[-2:], [get() for get, _ in _matmul._controls]))
            real[name](*args)
        return chunk

    for name in names:
        monkeypatch.setattr(_matmul, name, spy(name))
    before = [get() for get, _ in _matmul.blas_controls()]
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(2)
        with backend("numba"):
            got = K.matmul(a, b, trans_a=ta, trans_b=tb)
            again = K.matmul(a, b, trans_a=ta, trans_b=tb)
            with _threads._busy:  # as if another thread's call held the pool
                busy = K.matmul(a, b, trans_a=ta, trans_b=tb)
    finally:
        numba.set_num_threads(previous)
    assert_close(got, R.matmul(a, b, ta, tb), dtype, scale=k, what="split matmul")
    np.testing.assert_array_equal(got, again)
    np.testing.assert_array_equal(got, busy)
    if _matmul._controls:  # NumPy on OpenBLAS: split, single-threaded inside, the user's count restored
        if not batch and _matmul.gemm_addresses():  # two shares of half of C's rows (or columns) each
            assert [c[:2] for c in chunks] == [("run_shares", (2, m // 2, n) if m >= n else (2, m, n // 2))] * 3
        else:
            expect = "_gemm_rows" if m >= n else "_gemm_cols"
            assert sorted(c[:2] for c in chunks) == sorted([(expect, (0, 2)), (expect, (1, 2))] * 3)
        assert all(n == 1 for c in chunks for n in c[2])
        assert [get() for get, _ in _matmul._controls] == before


def test_matmul_shares_read_views_in_place(monkeypatch):
    """The threads' GEMM shares read strided and transposed views where BLAS can (a row stride
    larger than the row, a transpose), and leave a view with no unit stride to the Python shares;
    every result equals np.matmul on the same views."""
    import numba

    from minillm.kernels import _spin

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    monkeypatch.setattr(_matmul, "SPLIT_MIN", 0)
    monkeypatch.setattr(_matmul, "BLAS_SERIAL_MAX", 0)
    rng = np.random.default_rng(0)
    wide = rng.standard_normal((60, 50))
    b = rng.standard_normal((20, 31))
    cases = {
        "rows of a wider array": (wide[:, :20], b, True),  # lda = 50 > K = 20
        "every other row": (wide[::2, :20], b, True),  # lda = 100
        "a transpose": (rng.standard_normal((20, 60)).T, b, True),
        "b transposed, columns split": (wide[:10, :20], rng.standard_normal((31, 20)).T, True),
        "no unit stride": (wide[:, ::2], rng.standard_normal((25, 31)), False),
    }
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(2)
        for what, (a, b2, in_place) in cases.items():
            c = np.empty((a.shape[0], b2.shape[1]))
            if _matmul.gemm_addresses() and _spin.JIT:
                assert (_matmul._gemm_shares(a, b2, c, 2) is not None) == in_place, what
            with backend("numba"):
                got = K.matmul(a, b2)
            np.testing.assert_allclose(got, np.matmul(a, b2), rtol=1e-12, atol=1e-12, err_msg=what)
    finally:
        numba.set_num_threads(previous)


def test_matmul_keeps_float16_and_vectors_on_numpy():
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    with backend("numba"):
        np.testing.assert_array_equal(K.matmul(a, a, trans_b=True), a @ a.T)
        np.testing.assert_array_equal(K.matmul(np.ones(3), np.ones((3, 2))), np.full(2, 3.0))


# -------------------------------------------------------------------- softmax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True])
@SETTINGS
@given(seed=seeds, shape=st.lists(dim, min_size=1, max_size=3))
def test_softmax_numba_equals_reference(dtype, log, seed, shape):
    x, gy = rng_arrays(seed, dtype, tuple(shape), tuple(shape), scale=3.0)
    fwd, bwd = ("log_softmax_forward", "log_softmax_backward") if log else ("softmax_forward", "softmax_backward")
    y_ref = getattr(R, fwd)(x)
    y = getattr(_softmax, fwd)(x)
    assert_close(y, y_ref, dtype, what=fwd)
    assert_close(getattr(_softmax, bwd)(y_ref, gy), getattr(R, bwd)(y_ref, gy), dtype, scale=4, what=bwd)


# --------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=seeds, n=dim, v=st.integers(1, 70), smoothing=st.sampled_from([0.0, 0.1]))
def test_cross_entropy_numba_equals_reference(dtype, seed, n, v, smoothing):
    x, gl = rng_arrays(seed, dtype, (n, v), (n,), scale=3.0)
    rng = np.random.default_rng(seed + 1)
    t = rng.integers(0, v, n)
    t[rng.random(n) < 0.3] = -100
    loss_ref, lse_ref = R.cross_entropy_forward(x, t, -100, smoothing)
    loss, lse = _softmax.cross_entropy_forward(x, t, -100, smoothing)
    assert_close(loss, loss_ref, dtype, what="ce loss")
    assert_close(lse, lse_ref, dtype, what="ce lse")
    assert np.all(loss[t == -100] == 0)
    g_ref = R.cross_entropy_backward(x, t, lse_ref, gl, -100, smoothing)
    g = _softmax.cross_entropy_backward(x, t, lse_ref, gl, -100, smoothing)
    assert_close(g, g_ref, dtype, what="ce grad")
    assert np.all(g[t == -100] == 0)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_stay_finite(be, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype)
    t = np.array([1, 2])
    with backend(be):
        y = K.softmax_forward(x)
        np.testing.assert_allclose(y, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6, atol=1e-30)
        ly = K.log_softmax_forward(x)
        np.testing.assert_allclose(ly[0], [0, -2e4, -1e4], rtol=1e-6)
        gx = K.softmax_backward(y, np.ones_like(x))
        assert np.all(np.isfinite(gx)) and np.allclose(gx, 0, atol=1e-6)
        loss, lse = K.cross_entropy_forward(x, t, -100, 0.0)
        # lse - x_t cancels two numbers of size 1e4: absolute error ~ 1e4 * machine eps
        np.testing.assert_allclose(loss, [2e4, np.log(3)], rtol=1e-6, atol=4e4 * np.finfo(dtype).eps)
        g = K.cross_entropy_backward(x, t, lse, np.ones(2, dtype), -100, 0.0)
        expected = [[1, -1, 0], [1 / 3, 1 / 3, -2 / 3]]
        np.testing.assert_allclose(g, expected, rtol=1e-5, atol=4e4 * np.finfo(dtype).eps)
        assert g.dtype == dtype and loss.dtype == dtype


def test_cross_entropy_label_smoothing_matches_formula():
    # PyTorch: loss = (1 - eps) * nll + eps * mean_j(-log p_j)
    x = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = np.array([0, 2])
    logp = R.log_softmax_forward(x)
    expected = 0.8 * -logp[[0, 1], t] + 0.2 * -logp.mean(axis=1)
    for be in BACKENDS:
        with backend(be):
            np.testing.assert_allclose(K.cross_entropy_forward(x, t, -100, 0.2)[0], expected, rtol=1e-12)


# --------------------------------------------------------------------- RMSNorm
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=seeds, shape=st.lists(dim, min_size=1, max_size=3))
def test_rmsnorm_numba_equals_reference(dtype, seed, shape):
    shape = tuple(shape)
    x, w, gy = rng_arrays(seed, dtype, shape, shape[-1:], shape)
    y_ref, r_ref = R.rmsnorm_forward(x, w, 1e-5)
    y, r = _norms.rmsnorm_forward(x, w, 1e-5)
    assert_close(y, y_ref, dtype, what="rmsnorm y")
    assert_close(r, r_ref, dtype, what="rmsnorm rstd")
    gx_ref, gw_ref = R.rmsnorm_backward(x, w, r_ref, gy)
    gx, gw = _norms.rmsnorm_backward(x, w, r_ref, gy)
    assert_close(gx, gx_ref, dtype, what="rmsnorm gx")
    assert_close(gw, gw_ref, dtype, scale=np.sqrt(x.size), what="rmsnorm gw")


# ------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=seeds, shape=st.lists(dim, min_size=1, max_size=3))
def test_layernorm_numba_equals_reference(dtype, seed, shape):
    shape = tuple(shape)
    x, w, b, gy = rng_arrays(seed, dtype, shape, shape[-1:], shape[-1:], shape)
    x = x + dtype(3)  # an offset from zero: the mean must really be taken out
    y_ref, m_ref, r_ref = R.layernorm_forward(x, w, b, 1e-5)
    y, m, r = _norms.layernorm_forward(x, w, b, 1e-5)
    assert_close(y, y_ref, dtype, what="layernorm y")
    assert_close(m, m_ref, dtype, what="layernorm mean")
    assert_close(r, r_ref, dtype, what="layernorm rstd")
    gx_ref, gw_ref, gb_ref = R.layernorm_backward(x, w, m_ref, r_ref, gy)
    gx, gw, gb = _norms.layernorm_backward(x, w, m_ref, r_ref, gy)
    assert_close(gx, gx_ref, dtype, what="layernorm gx")
    assert_close(gw, gw_ref, dtype, scale=np.sqrt(x.size), what="layernorm gw")
    assert_close(gb, gb_ref, dtype, scale=np.sqrt(x.size), what="layernorm gb")


# ------------------------------------------------------------------------ RoPE
def _rope_tables(T, half, dtype):
    theta = 1.0 / 10000 ** (np.arange(half) * 2 / (2 * half))
    ang = np.outer(np.arange(T), theta)  # (T, D/2)
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=seeds, b=st.integers(1, 3), t=dim, h=st.integers(1, 4), half=st.integers(1, 9))
def test_rope_numba_equals_reference(dtype, seed, b, t, h, half):
    x, gy = rng_arrays(seed, dtype, (b, t, h, 2 * half), (b, t, h, 2 * half))
    cos, sin = _rope_tables(t, half, dtype)
    assert_close(_elementwise.rope_forward(x, cos, sin), R.rope_forward(x, cos, sin), dtype, what="rope fwd")
    assert_close(_elementwise.rope_backward(gy, cos, sin), R.rope_backward(gy, cos, sin), dtype, what="rope bwd")


def test_rope_rotates_interleaved_pairs():
    x = np.zeros((1, 1, 1, 4))
    x[..., 0] = 1.0  # pair 0 = (1, 0)
    cos = np.array([[0.0, 1.0]])
    sin = np.array([[1.0, 0.0]])  # pair 0 rotated by 90 degrees, pair 1 by 0
    for be in BACKENDS:
        with backend(be):
            np.testing.assert_allclose(K.rope_forward(x, cos, sin)[0, 0, 0], [0, 1, 0, 0])


# ---------------------------------------------------------------------- SwiGLU
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=seeds, shape=st.lists(dim, min_size=1, max_size=3))
def test_swiglu_numba_equals_reference(dtype, seed, shape):
    a, b, gy = rng_arrays(seed, dtype, tuple(shape), tuple(shape), tuple(shape), scale=3.0)
    assert_close(_elementwise.swiglu_forward(a, b), R.swiglu_forward(a, b), dtype, what="swiglu fwd")
    for got, ref in zip(_elementwise.swiglu_backward(a, b, gy), R.swiglu_backward(a, b, gy)):
        assert_close(got, ref, dtype, what="swiglu bwd")


def test_swiglu_extreme_inputs_finite():
    a = np.array([-1e4, -100.0, 100.0, 1e4], np.float32)
    for be in BACKENDS:
        with backend(be):
            y = K.swiglu_forward(a, np.ones_like(a))
            ga, gb = K.swiglu_backward(a, np.ones_like(a), np.ones_like(a))
            np.testing.assert_allclose(y, [0, 0, 100, 1e4], atol=1e-30)
            np.testing.assert_allclose(ga, [0, 0, 1, 1], atol=1e-30)


# ------------------------------------------------------------------------- erf
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=seeds, shape=st.lists(dim, min_size=0, max_size=3), scale=st.sampled_from([0.3, 3.0, 1e4]))
def test_erf_numba_equals_reference(dtype, seed, shape, scale):
    (x,) = rng_arrays(seed, dtype, tuple(shape), scale=scale)
    assert_close(_elementwise.erf(x), R.erf(x), dtype, what="erf")


@pytest.mark.parametrize("be", BACKENDS)
def test_erf_values_dtypes_and_views(be):
    x = np.array([[-np.inf, -3.0, -0.5], [0.0, 0.5, np.inf]])
    expected = np.array([[-1.0, -0.9999779095030014, -0.5204998778130465], [0.0, 0.5204998778130465, 1.0]])
    with backend(be):
        np.testing.assert_allclose(K.erf(x), expected, rtol=1e-15)
        np.testing.assert_allclose(K.erf(x.T), expected.T, rtol=1e-15)  # a transposed view
        y = K.erf(x.astype(np.float32))
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, expected, rtol=1e-6)
        assert np.isnan(K.erf(np.array([np.nan]))[0])


# ------------------------------------------------------------------- embedding
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=seeds, n=dim, c=st.integers(1, 140), v=st.integers(1, 9))
def test_embedding_backward_numba_equals_reference(dtype, seed, n, c, v):
    (g,) = rng_arrays(seed, dtype, (n, c))
    ids = np.random.default_rng(seed).integers(0, v, n)  # repeats are likely
    assert_close(_elementwise.embedding_backward(ids, g, v), R.embedding_backward(ids, g, v), dtype)


# ----------------------------------------------------------------------- AdamW
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(seed=seeds, shape=st.lists(dim, min_size=1, max_size=2), wd=st.sampled_from([0.0, 0.1]))
def test_adamw_numba_equals_reference(dtype, seed, shape, wd):
    p, g1, g2 = rng_arrays(seed, dtype, tuple(shape), tuple(shape), tuple(shape))
    states = [[p.copy(), np.zeros_like(p), np.zeros_like(p)] for _ in range(2)]
    for step, g in enumerate([g1, g2, g1], start=1):
        R.adamw_step(states[0][0], g, states[0][1], states[0][2], step, 1e-2, 0.9, 0.95, 1e-8, wd)
        _optim.adamw_step(states[1][0], g, states[1][1], states[1][2], step, 1e-2, 0.9, 0.95, 1e-8, wd)
    for a, b in zip(states[1], states[0]):
        assert_close(a, b, dtype, what="adamw")


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_eps_zero_and_zero_gradient_is_nan_as_in_the_reference(dtype):
    """eps=0 is allowed (as in PyTorch): where m and v are 0 the update is 0 / 0. The kernel gives NaN
    there like the NumPy reference (and PyTorch) instead of raising ZeroDivisionError, and every other
    element its finite value; an element's update is the same bits as the reference's."""
    p = np.array([1.0, -2.0, 0.5, 3.0], dtype)
    g = np.array([0.0, 0.5, 0.0, -1.0], dtype)
    states = [[p.copy(), np.zeros_like(p), np.zeros_like(p)] for _ in range(2)]
    with np.errstate(invalid="ignore", divide="ignore"):
        R.adamw_step(*states[0][:1], g, *states[0][1:], 1, 1e-2, 0.9, 0.95, 0.0, 0.1)
    _optim.adamw_step(*states[1][:1], g, *states[1][1:], 1, 1e-2, 0.9, 0.95, 0.0, 0.1)
    assert np.isnan(states[1][0][[0, 2]]).all() and np.isfinite(states[1][0][[1, 3]]).all()
    for a, b in zip(states[1], states[0]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernel, n_arrays, n_scalars", [
    (_optim.adamw_span, 4, 8),  # + i0, i1
    (_elementwise._swiglu_forward_span, 3, 0),
    (_elementwise._swiglu_backward_span, 5, 0),
])
def test_elementwise_span_kernels_compile_to_vector_instructions(kernel, n_arrays, n_scalars):
    """These loops are memory- or arithmetic-bound only if LLVM vectorises them, and small edits
    silently stop it: a Python division-by-zero check per element (Numba's default error_model) or a
    range(i0, i1) loop's negative-index checks kept AdamW's loop scalar, 3.6x slower, from the
    commit that cut it into spans until round 8. Not a timing: the compiled IR must hold vector
    float values (it holds none for the scalar loop). Compiled afresh with the kernel's own options."""
    import re

    import numba

    if numba.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT: nothing is compiled")
    f32 = numba.types.float32
    sig = (f32[::1],) * n_arrays + (f32,) * n_scalars
    if kernel is _optim.adamw_span:
        sig += (numba.types.int64, numba.types.int64)
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("cache", "nopython")}  # (a cached copy cannot be inspected)
    fresh = numba.njit(sig, **options)(kernel.py_func)
    llvm_ir = fresh.inspect_llvm(fresh.signatures[0])
    assert re.search(r"<\d+ x float>", llvm_ir), f"{kernel.__name__} compiled to scalar code only"


@pytest.mark.parametrize("be", BACKENDS)
def test_adamw_matches_pytorch_formula(be):
    p = np.array([1.0, -2.0, 0.5])
    m, v = np.zeros(3), np.zeros(3)
    g = np.array([0.1, -0.3, 2.0])
    lr, b1, b2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 0.01
    with backend(be):
        K.adamw_step(p, g, m, v, 1, lr, b1, b2, eps, wd)
    # step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps)
    expected = np.array([1.0, -2.0, 0.5]) * (1 - lr * wd) - lr * g / (np.abs(g) + eps)
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-12)
    np.testing.assert_allclose(v, 0.001 * g * g, rtol=1e-12)


# ------------------------------------------------- non-contiguous inputs at dispatch
@pytest.mark.parametrize("be", BACKENDS)
def test_non_contiguous_inputs(be):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32).T  # (5, 6) view, not C-contiguous
    w = rng.standard_normal(6).astype(np.float32)
    x4 = rng.standard_normal((2, 3, 5, 4)).astype(np.float32).transpose(0, 2, 1, 3)  # (2, 5, 3, 4)
    cos, sin = _rope_tables(5, 2, np.float32)
    with backend(be):
        assert_close(K.softmax_forward(x), R.softmax_forward(np.ascontiguousarray(x)), np.float32)
        assert_close(K.rmsnorm_forward(x, w, 1e-6)[0], R.rmsnorm_forward(x.copy(), w, 1e-6)[0], np.float32)
        assert_close(K.rope_forward(x4, cos, sin), R.rope_forward(x4.copy(), cos, sin), np.float32)
        assert_close(K.swiglu_forward(x, x), R.swiglu_forward(x.copy(), x.copy()), np.float32)
        assert_close(K.matmul(x, x, trans_b=True), x @ x.T, np.float32, scale=6)


# ------------------------------------------------ finite-difference gradient checks
@pytest.mark.parametrize("be", BACKENDS)
def test_gradcheck_softmax_family(be):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5))
    w = rng.standard_normal((3, 5))
    with backend(be):
        for fwd, bwd in ((K.softmax_forward, K.softmax_backward), (K.log_softmax_forward, K.log_softmax_backward)):
            assert_grad(bwd(fwd(x), w), lambda: float((fwd(x) * w).sum()), x, fwd.__name__)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_gradcheck_cross_entropy(be, smoothing):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6))
    t = np.array([1, -100, 5, 0])
    gl = rng.standard_normal(4)
    with backend(be):
        _, lse = K.cross_entropy_forward(x, t, -100, smoothing)
        g = K.cross_entropy_backward(x, t, lse, gl, -100, smoothing)
        assert_grad(g, lambda: float((K.cross_entropy_forward(x, t, -100, smoothing)[0] * gl).sum()), x, "ce")


@pytest.mark.parametrize("be", BACKENDS)
def test_gradcheck_rmsnorm(be):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5))
    w = rng.standard_normal(5)
    gy = rng.standard_normal((2, 3, 5))
    with backend(be):
        _, rstd = K.rmsnorm_forward(x, w, 1e-5)
        gx, gw = K.rmsnorm_backward(x, w, rstd, gy)
        f = lambda: float((K.rmsnorm_forward(x, w, 1e-5)[0] * gy).sum())  # noqa: E731
        assert_grad(gx, f, x, "rmsnorm x")
        assert_grad(gw, f, w, "rmsnorm weight")


@pytest.mark.parametrize("be", BACKENDS)
def test_gradcheck_rope_swiglu_embedding(be):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 2, 6))
    gy = rng.standard_normal((2, 3, 2, 6))
    cos, sin = _rope_tables(3, 3, np.float64)
    a, b, gs = (rng.standard_normal((3, 4)) for _ in range(3))
    ids = np.array([2, 0, 2, 2, 1])
    table = rng.standard_normal((4, 3))
    ge = rng.standard_normal((5, 3))
    with backend(be):
        assert_grad(K.rope_backward(gy, cos, sin), lambda: float((K.rope_forward(x, cos, sin) * gy).sum()), x, "rope")
        ga, gb = K.swiglu_backward(a, b, gs)
        f = lambda: float((K.swiglu_forward(a, b) * gs).sum())  # noqa: E731
        assert_grad(ga, f, a, "swiglu a")
        assert_grad(gb, f, b, "swiglu b")
        assert_grad(K.embedding_backward(ids, ge, 4), lambda: float((table[ids] * ge).sum()), table, "embedding")


def test_numba_disable_jit_still_runs():
    code = (
        "import numpy as np, minillm.kernels as K;"
        "x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32);"
        "y = K.softmax_forward(x); o, l = K.attention_forward(x[None, None], x[None, None], x[None, None], None, True, 0.5);"
        "assert np.allclose(y, K.reference.softmax_forward(x), rtol=1e-5);"
        "assert np.allclose(o, K.reference.attention_forward(x[None, None], x[None, None], x[None, None], None, True, 0.5)[0], rtol=1e-5);"
        "print('ok')"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", MINILLM_KERNELS="numba")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_numpy_backend_compiles_nothing():
    """Under MINILLM_KERNELS=numpy a training step, exact GELU, and BPE training and encoding
    run without compiling a single Numba function (not even the tokenizer's helpers)."""
    code = """
import sys
import numba, numpy as np
import minillm as mi
import minillm.nn.functional as F
from minillm.models.llama import ModelConfig, Transformer
from minillm.tokenizers import BPETokenizer
assert mi.get_kernels() == "numpy"
model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=300, max_seq_len=16))
opt = mi.optim.AdamW(model.parameters(), lr=1e-3)
ids = np.random.default_rng(0).integers(0, 300, (2, 9))
model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
opt.step()
F.gelu(mi.randn(4, 5, requires_grad=True)).sum().backward()
tok = BPETokenizer.train(["hello world, hello minillm " * 20], 280, show_progress=False)
assert tok.decode(tok.encode("hello minillm")) == "hello minillm"
dispatchers = [(m, n, f) for m, mod in list(sys.modules.items()) if m.startswith("minillm")
               for n, f in vars(mod).items() if isinstance(f, numba.core.dispatcher.Dispatcher)]
assert len(dispatchers) > 20, len(dispatchers)
print([f"{m}.{n}" for m, n, f in dispatchers if f.signatures])
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    env["MINILLM_KERNELS"] = "numpy"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", f"compiled under the numpy backend: {out.stdout}"

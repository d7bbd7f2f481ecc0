"""Shared helpers for the kernel tests (no tests here; named test_kernels_* to sit with them)."""
import contextlib

import numpy as np

from minillm import kernels as K

DTYPES = [np.float32, np.float64]
BACKENDS = ["numpy", "numba"]
# float32: the Numba twin may sum in another order / use the vectorised exp;
# float64: must agree to ~1e-10.
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def assert_close(actual, expected, dtype, scale=1.0, what=""):
    tol = TOL[np.dtype(dtype).type]
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if np.ndim(scale):  # one absolute tolerance per element (where a result cancels larger terms)
        diff = np.abs(actual.astype(np.float64) - expected)
        bound = tol["rtol"] * np.abs(expected.astype(np.float64)) + tol["atol"] * np.asarray(scale, np.float64)
        if (diff > bound).any():
            i = np.unravel_index(np.argmax(diff - bound), diff.shape)
            raise AssertionError(f"{what}: {(diff > bound).sum()} of {diff.size} elements beyond tolerance; worst at "
                                 f"{tuple(map(int, i))}: {actual[i]} vs {expected[i]} (|diff| {diff[i]:.3g} > {bound[i]:.3g})")
        return
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=what)


@contextlib.contextmanager
def backend(name):
    old = K.get_kernels()
    K.set_kernels(name)
    try:
        yield
    finally:
        K.set_kernels(old)


def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar f() w.r.t. every element of x (float64, changed in place)."""
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gf[i] = (fp - fm) / (2 * eps)
    return g


def assert_grad(analytic, f, x, what, rtol=1e-5, atol=1e-7):
    num = numeric_grad(f, x)
    np.testing.assert_allclose(analytic, num, rtol=rtol, atol=atol, err_msg=f"gradcheck {what}")


def test_small_inputs_run_on_the_reference_and_agree(monkeypatch):
    """Below SMALL_INPUT elements the numba backend uses the NumPy reference (cheaper than
    waking Numba's threads); both sides of the threshold give the same result."""
    import numpy as np

    import minillm.kernels as K
    from minillm.kernels import _norms

    numba_calls = []
    twin = _norms.rmsnorm_forward
    monkeypatch.setattr(_norms, "rmsnorm_forward", lambda *args: numba_calls.append(1) or twin(*args))
    K.set_kernels("numba")
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    w = np.ones(8, np.float32)
    monkeypatch.setattr(K, "SMALL_INPUT", x.size + 1)
    small, _ = K.rmsnorm_forward(x, w, 1e-5)
    assert numba_calls == []
    monkeypatch.setattr(K, "SMALL_INPUT", x.size)
    big, _ = K.rmsnorm_forward(x, w, 1e-5)
    assert numba_calls == [1]
    np.testing.assert_allclose(small, big, rtol=1e-5, atol=1e-6)

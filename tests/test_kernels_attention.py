"""Flash-style attention kernel: equals the reference, causal / GQA / KV-cache / masking properties,
and finite-difference gradients (both backends)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm import kernels as K
from minillm.kernels import _attention
from minillm.kernels import reference as R

from test_kernels_helpers import BACKENDS, DTYPES, assert_close, assert_grad, backend

SETTINGS = settings(max_examples=25, deadline=None)


def make_qkv(seed, dtype, B, H, Hkv, Tq, Tk, D):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    k = rng.standard_normal((B, Hkv, Tk, D)).astype(dtype)
    v = rng.standard_normal((B, Hkv, Tk, D)).astype(dtype)
    go = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    return q, k, v, go


def assert_kernel_equals_reference(q, k, v, go, mask, causal, scale, dtype):
    """The Numba forward (out, lse) and backward (gq, gk, gv) equal the NumPy reference; no NaN,
    and the same rows are fully masked (lse = -inf)."""
    o_ref, l_ref = R.attention_forward(q, k, v, mask, causal, scale)
    o, l = _attention.attention_forward(q, k, v, mask, causal, scale)
    assert_close(o, o_ref, dtype, what="attention out")
    assert not np.isnan(o).any() and not np.isnan(l).any()
    np.testing.assert_array_equal(np.isneginf(l), np.isneginf(l_ref))
    fin = np.isfinite(l_ref)
    assert_close(l[fin], l_ref[fin], dtype, what="attention lse")
    grads_ref = R.attention_backward(q, k, v, mask, causal, scale, o_ref, l_ref, go)
    grads = _attention.attention_backward(q, k, v, mask, causal, scale, o_ref, l_ref, go)
    for name, g, gr in zip("qkv", grads, grads_ref):
        assert not np.isnan(g).any()
        assert_close(g, gr, dtype, scale=4, what=f"attention g{name}")


@st.composite
def attn_case(draw):
    Hkv = draw(st.integers(1, 2))
    H = Hkv * draw(st.integers(1, 3))
    Tk = draw(st.sampled_from([1, 2, 7, 63, 64, 65, 130]))  # around the key tile (64)
    Tq = draw(st.integers(1, Tk)) if draw(st.booleans()) else Tk
    return dict(B=draw(st.integers(1, 2)), H=H, Hkv=Hkv, Tq=Tq, Tk=Tk, D=draw(st.integers(1, 9)))


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=attn_case(), seed=st.integers(0, 2**32 - 1), causal=st.booleans(), masked=st.sampled_from([None, "pad", "full"]))
def test_attention_numba_equals_reference(dtype, case, seed, causal, masked):
    q, k, v, go = make_qkv(seed, dtype, **case)
    B, Tq, Tk = case["B"], case["Tq"], case["Tk"]
    mask = None
    if masked == "pad":  # key padding, (B, 1, 1, Tk), some rows fully masked when causal
        keep = np.random.default_rng(seed).random((B, 1, 1, Tk)) < 0.7
        mask = R.bool_mask_to_additive(keep, dtype)
    elif masked == "full":  # a per-query float mask (B, H, Tq, Tk)
        mask = np.random.default_rng(seed).standard_normal((B, case["H"], Tq, Tk)).astype(dtype)
    assert_kernel_equals_reference(q, k, v, go, mask, causal, 1 / np.sqrt(case["D"]), dtype)


@pytest.mark.parametrize("be", BACKENDS)
def test_causal_future_keys_do_not_matter(be):
    q, k, v, _ = make_qkv(0, np.float64, 1, 2, 2, 70, 70, 4)
    t = 40
    k2, v2 = k.copy(), v.copy()
    k2[:, :, t + 1 :] = 99.0
    v2[:, :, t + 1 :] = -99.0
    with backend(be):
        o1, _ = K.attention_forward(q, k, v, None, True, 0.5)
        o2, _ = K.attention_forward(q, k2, v2, None, True, 0.5)
    np.testing.assert_array_equal(o1[:, :, : t + 1], o2[:, :, : t + 1])
    assert not np.allclose(o1[:, :, t + 1 :], o2[:, :, t + 1 :])


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gqa_equals_mha_with_repeated_kv(be, dtype):
    q, k, v, go = make_qkv(1, dtype, 2, 6, 2, 67, 67, 5)
    k_rep, v_rep = np.repeat(k, 3, axis=1), np.repeat(v, 3, axis=1)  # repeat_kv: head h reads kv head h // 3
    with backend(be):
        o, l = K.attention_forward(q, k, v, None, True, 0.4)
        o_rep, l_rep = K.attention_forward(q, k_rep, v_rep, None, True, 0.4)
        gq, gk, gv = K.attention_backward(q, k, v, None, True, 0.4, o, l, go)
        gq_r, gk_r, gv_r = K.attention_backward(q, k_rep, v_rep, None, True, 0.4, o_rep, l_rep, go)
    assert_close(o, o_rep, dtype)
    assert_close(gq, gq_r, dtype)
    assert gk.shape == k.shape and gv.shape == v.shape
    assert_close(gk, gk_r.reshape(2, 2, 3, 67, 5).sum(axis=2), dtype, scale=4)
    assert_close(gv, gv_r.reshape(2, 2, 3, 67, 5).sum(axis=2), dtype, scale=4)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_with_kv_cache_equals_last_rows(be, dtype):
    q, k, v, _ = make_qkv(2, dtype, 2, 4, 2, 77, 77, 8)
    with backend(be):
        full, _ = K.attention_forward(q, k, v, None, True, 0.3)
        last, _ = K.attention_forward(q[:, :, -1:], k, v, None, True, 0.3)  # Tq = 1 against the whole cache
        tail, _ = K.attention_forward(q[:, :, -5:], k, v, None, True, 0.3)  # a 5-token chunk (bottom-right causal)
    assert_close(last, full[:, :, -1:], dtype)
    assert_close(tail, full[:, :, -5:], dtype)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_rows_are_zero_not_nan(be, dtype):
    q, k, v, go = make_qkv(3, dtype, 1, 2, 1, 5, 5, 3)
    keep = np.ones((1, 1, 5, 5), bool)
    keep[0, 0, 2] = False  # query 2 sees nothing
    mask = R.bool_mask_to_additive(keep, dtype)
    with backend(be):
        o, l = K.attention_forward(q, k, v, mask, False, 0.5)
        gq, gk, gv = K.attention_backward(q, k, v, mask, False, 0.5, o, l, go)
        o_c, l_c = K.attention_forward(q[:, :, :3], k[:, :, :1], v[:, :, :1], None, True, 0.5)  # Tq > Tk causal
    assert np.all(o[:, :, 2] == 0) and np.all(np.isneginf(l[:, :, 2]))
    assert np.all(gq[:, :, 2] == 0)
    for a in (o, l[np.isfinite(l)], gq, gk, gv):
        assert not np.isnan(a).any()
    assert np.all(o_c[:, :, :2] == 0) and np.all(np.isneginf(l_c[:, :, :2])) and np.isfinite(l_c[:, :, 2]).all()


@pytest.mark.parametrize("be", BACKENDS)
def test_huge_scores_stay_finite(be):
    q, k, v, go = make_qkv(4, np.float32, 1, 1, 1, 6, 6, 4)
    with backend(be):
        o, l = K.attention_forward(q * 300, k * 300, v, None, True, 1.0)  # scores ~ 1e5
        grads = K.attention_backward(q * 300, k * 300, v, None, True, 1.0, o, l, go)
    assert np.isfinite(o).all() and np.isfinite(l).all()
    assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("causal,Tq,masked", [(True, 5, False), (False, 3, True), (True, 2, True)])
def test_gradcheck_attention(be, causal, Tq, masked):
    q, k, v, go = make_qkv(5, np.float64, 1, 4, 2, Tq, 5, 3)
    mask = None
    if masked:
        keep = np.random.default_rng(5).random((1, 1, Tq, 5)) < 0.7
        keep[..., 0] = True
        mask = R.bool_mask_to_additive(keep, np.float64)
    with backend(be):
        o, l = K.attention_forward(q, k, v, mask, causal, 0.7)
        gq, gk, gv = K.attention_backward(q, k, v, mask, causal, 0.7, o, l, go)
        f = lambda: float((K.attention_forward(q, k, v, mask, causal, 0.7)[0] * go).sum())  # noqa: E731
        assert_grad(gq, f, q, "attention q")
        assert_grad(gk, f, k, "attention k")
        assert_grad(gv, f, v, "attention v")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Tq,Tk,D", [(_attention.ROWS_MAX - 1, 150, 48), (_attention.ROWS_MAX, 150, 48),
                                     (70, 150, 48), (150, 150, 32), (200, 130, 5)])
@pytest.mark.parametrize("causal,masked", [(True, False), (False, True), (True, True)])
def test_attention_row_and_block_kernels_equal_reference(dtype, Tq, Tk, D, causal, masked):
    """Shapes around the row / block switch (ROWS_MAX), partial query blocks and key tiles, bigger D."""
    q, k, v, go = make_qkv(7, dtype, 2, 6, 2, Tq, Tk, D)
    mask = None
    if masked:
        keep = np.random.default_rng(7).random((2, 1, 1, Tk)) < 0.7
        mask = R.bool_mask_to_additive(keep, dtype)
    assert_kernel_equals_reference(q, k, v, go, mask, causal, 1 / np.sqrt(D), dtype)

"""The neural-network ops (softmax, losses, linear, embedding, dropout, norms, RoPE, SwiGLU,
attention) on both kernel backends: forward against plain NumPy or the composite of
primitive ops, backward against finite differences in float64."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minillm as mi
import minillm.nn.functional as F
from minillm.testing import gradcheck
from minillm.testing.strategies import arrays, shapes

small = shapes(min_dims=1, max_dims=3, max_side=4)


def _np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@given(x=arrays(small), data=st.data())
def test_softmax_and_log_softmax(backend, x, data):
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    np.testing.assert_allclose(F.softmax(mi.tensor(x), dim).numpy(), _np_softmax(x, dim), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(F.log_softmax(mi.tensor(x), dim).numpy(), np.log(_np_softmax(x, dim)), rtol=1e-10, atol=1e-12)
    gradcheck(lambda t: F.softmax(t, dim), [x], name="softmax")
    gradcheck(lambda t: F.log_softmax(t, dim), [x], name="log_softmax")
    # the fused node equals the composite exp(x - logsumexp(x)) built from primitives
    composite = (mi.tensor(x) - mi.tensor(x).logsumexp(dim, keepdim=True)).exp()
    np.testing.assert_allclose(F.softmax(mi.tensor(x), dim).numpy(), composite.numpy(), rtol=1e-10, atol=1e-12)


def test_softmax_stable_for_huge_logits(backend):
    for dtype in (mi.float32, mi.float64):
        x = mi.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype, requires_grad=True)
        y = F.softmax(x, -1)
        assert np.all(np.isfinite(y.numpy()))
        np.testing.assert_allclose(y.numpy()[0], [1, 0, 0], atol=1e-6)
        (y * mi.tensor([[1.0, 2.0, 3.0]] * 2, dtype=dtype)).sum().backward()
        assert np.all(np.isfinite(x.grad.numpy()))
        assert np.all(np.isfinite(F.log_softmax(x, -1).numpy()))


def _np_cross_entropy(logits, target, ignore_index=-100, label_smoothing=0.0):
    logp = np.log(_np_softmax(logits, -1))
    valid = target != ignore_index
    t = np.where(valid, target, 0)
    nll = -logp[np.arange(len(t)), t]
    smooth = -logp.mean(axis=-1)
    loss = (1 - label_smoothing) * nll + label_smoothing * smooth
    return np.where(valid, loss, 0.0), valid


@given(data=st.data())
def test_cross_entropy_matches_numpy_and_gradcheck(backend, data):
    n, c = data.draw(st.integers(1, 5)), data.draw(st.integers(2, 6))
    logits = data.draw(arrays((n, c)))
    target = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    target[np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))] = -100
    ls = data.draw(st.sampled_from([0.0, 0.1]))
    losses, valid = _np_cross_entropy(logits, target, label_smoothing=ls)
    for reduction, expected in [("none", losses), ("sum", losses.sum()), ("mean", losses.sum() / max(valid.sum(), 1))]:
        out = F.cross_entropy(mi.tensor(logits), mi.tensor(target), reduction=reduction, label_smoothing=ls)
        if reduction == "mean" and not valid.any():
            assert np.isnan(out.item())  # PyTorch's answer when every target is ignored
            continue
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
        gradcheck(lambda t: F.cross_entropy(t, mi.tensor(target), reduction=reduction, label_smoothing=ls), [logits], name=f"cross_entropy[{reduction}]")


def test_cross_entropy_class_dim_layout_and_composite(backend):
    logits = np.random.default_rng(0).normal(size=(2, 5, 3))  # (N, C, T) as PyTorch
    target = np.array([[0, 4, -100], [1, 2, 3]])
    out = F.cross_entropy(mi.tensor(logits), mi.tensor(target))
    flat = np.moveaxis(logits, 1, -1).reshape(-1, 5)
    losses, valid = _np_cross_entropy(flat, target.reshape(-1))
    assert out.item() == pytest.approx(losses.sum() / valid.sum())
    # fused node == composite -log_softmax gathered at the targets
    t = mi.tensor(flat, requires_grad=True)
    keep = target.reshape(-1) != -100
    composite = -(F.log_softmax(t, -1)[mi.tensor(np.arange(6)[keep]), mi.tensor(target.reshape(-1)[keep])]).mean()
    assert composite.item() == pytest.approx(F.cross_entropy(mi.tensor(flat), mi.tensor(target.reshape(-1))).item())


def test_cross_entropy_stable_and_float32(backend):
    logits = mi.tensor([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4]], requires_grad=True)
    loss = F.cross_entropy(logits, mi.tensor([1, 1]))
    assert loss.dtype == np.float32 and np.isfinite(loss.item())
    assert loss.item() == pytest.approx(1e4, rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), [[0.5, -0.5, 0], [0, 0, 0]], atol=1e-6)


def test_cross_entropy_errors():
    with pytest.raises(IndexError, match=r"target contains 7, outside \[0, 3\)"):
        F.cross_entropy(mi.zeros(2, 3), mi.tensor([0, 7]))
    with pytest.raises(TypeError, match="integer tensor"):
        F.cross_entropy(mi.zeros(2, 3), mi.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="target of shape"):
        F.cross_entropy(mi.zeros(2, 3), mi.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(mi.zeros(2, 3), mi.tensor([0, 1]), reduction="avg")


@given(a=arrays(small), data=st.data())
def test_mse_loss(a, data):
    b = data.draw(arrays(a.shape))
    assert F.mse_loss(mi.tensor(a), mi.tensor(b)).item() == pytest.approx(np.mean((a - b) ** 2))
    gradcheck(lambda x, y: F.mse_loss(x, y, reduction="sum"), [a, b], name="mse_loss")


def test_dropout_is_seeded_scaled_and_off_in_eval():
    x = mi.ones(1000)
    mi.manual_seed(1)
    a = F.dropout(x, 0.3)
    mi.manual_seed(1)
    b = F.dropout(x, 0.3)
    assert a.tolist() == b.tolist()
    kept = a.numpy()[a.numpy() != 0]
    np.testing.assert_allclose(kept, 1 / 0.7, rtol=1e-6)
    assert 0.2 < (a.numpy() == 0).mean() < 0.4
    assert F.dropout(x, 0.3, training=False) is x
    t = mi.ones(4, dtype=mi.float64, requires_grad=True)
    mi.manual_seed(2)
    y = F.dropout(t, 0.5)
    y.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), y.numpy())  # grad = mask * scale = output for ones


@given(data=st.data())
def test_linear(backend, data):
    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    x = data.draw(arrays(data.draw(shapes(min_dims=1, max_dims=3, max_side=3)).__add__((n_in,))[-3:]))
    w, b = data.draw(arrays((n_out, n_in))), data.draw(arrays((n_out,)))
    np.testing.assert_allclose(F.linear(mi.tensor(x), mi.tensor(w), mi.tensor(b)).numpy(), x @ w.T + b, rtol=1e-12, atol=1e-12)
    gradcheck(lambda *ts: F.linear(*ts), [x, w, b], name="linear")
    gradcheck(lambda *ts: F.linear(*ts), [x, w], name="linear(no bias)")


def test_linear_errors():
    with pytest.raises(ValueError, match=r"input of shape \(2, 3\) does not match weight of shape \(4, 5\)"):
        F.linear(mi.ones(2, 3), mi.ones(4, 5))


@given(data=st.data())
def test_embedding_accumulates_repeated_ids(backend, data):
    v, d = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4))
    w = data.draw(arrays((v, d)))
    ids = np.array(data.draw(st.lists(st.lists(st.integers(0, v - 1), min_size=3, max_size=3), min_size=1, max_size=3)))
    np.testing.assert_array_equal(F.embedding(mi.tensor(ids), mi.tensor(w)).numpy(), w[ids])
    gradcheck(lambda t: F.embedding(mi.tensor(ids), t), [w], name="embedding")
    wt = mi.tensor(w, requires_grad=True)
    F.embedding(mi.tensor(ids), wt, padding_idx=0).sum().backward()
    assert np.all(wt.grad.numpy()[0] == 0)
    np.testing.assert_array_equal(wt.grad.numpy()[1:, 0], np.bincount(ids.ravel(), minlength=v)[1:])


def test_embedding_rejects_bad_ids():
    with pytest.raises(IndexError, match=r"embedding: token id 9 at position 1 is outside the valid range \[0, 4\)"):
        F.embedding(mi.tensor([1, 9]), mi.ones(4, 2))
    with pytest.raises(TypeError, match="integer tensor"):
        F.embedding(mi.tensor([1.0]), mi.ones(4, 2))


@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=4)), data=st.data())
def test_rms_norm_and_layer_norm(backend, x, data):
    c = x.shape[-1]
    w, b = data.draw(arrays((c,))), data.draw(arrays((c,)))
    ref = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(F.rms_norm(mi.tensor(x), c, mi.tensor(w), 1e-5).numpy(), ref, rtol=1e-10, atol=1e-12)
    gradcheck(lambda t, g: F.rms_norm(t, (c,), g, 1e-5), [x, w], name="rms_norm")
    # fused RMSNorm == the composite from primitives
    t = mi.tensor(x)
    composite = t * ((t * t).mean(-1, keepdim=True) + 1e-5).rsqrt() * mi.tensor(w)
    np.testing.assert_allclose(F.rms_norm(t, c, mi.tensor(w), 1e-5).numpy(), composite.numpy(), rtol=1e-10, atol=1e-12)
    ln_ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(F.layer_norm(mi.tensor(x), c, mi.tensor(w), mi.tensor(b)).numpy(), ln_ref, rtol=1e-9, atol=1e-10)
    gradcheck(lambda t, g, h: F.layer_norm(t, c, g, h), [x, w, b], name="layer_norm", atol=1e-4)
    # fused LayerNorm == the composite from primitives, values and every gradient
    from minillm.ops.norm import layer_norm_composite

    gy = data.draw(arrays(x.shape))
    grads = []
    for fn in (F.layer_norm, layer_norm_composite):
        ts = [mi.tensor(a, requires_grad=True) for a in (x, w, b)]
        out = fn(ts[0], c, ts[1], ts[2])
        (out * mi.tensor(gy)).sum().backward()
        grads.append([out.numpy()] + [t.grad.numpy() for t in ts])
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7)
    gradcheck(lambda t: F.layer_norm(t, c), [x], name="layer_norm without affine", atol=1e-4)


def test_layer_norm_rejects_mismatched_parameters():
    with pytest.raises(ValueError, match=r"layer_norm: weight of shape \(3,\) does not match the input's last dim 4"):
        F.layer_norm(mi.ones(2, 4), 4, mi.ones(3))
    with pytest.raises(ValueError, match="normalized_shape"):
        F.layer_norm(mi.ones(2, 4), 3)


@given(data=st.data())
def test_swiglu(backend, data):
    a = data.draw(arrays(small))
    b = data.draw(arrays(a.shape))
    np.testing.assert_allclose(F.swiglu(mi.tensor(a), mi.tensor(b)).numpy(), a / (1 + np.exp(-a)) * b, rtol=1e-10, atol=1e-12)
    gradcheck(F.swiglu, [a, b], name="swiglu")
    composite = F.silu(mi.tensor(a)) * mi.tensor(b)
    np.testing.assert_allclose(F.swiglu(mi.tensor(a), mi.tensor(b)).numpy(), composite.numpy(), rtol=1e-10, atol=1e-12)


def _np_rope(x, cos, sin):
    out = x.copy()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


@given(data=st.data())
def test_rotary_embedding(backend, data):
    B, T, H, half = (data.draw(st.integers(1, 3)) for _ in range(4))
    x = data.draw(arrays((B, T, H, 2 * half)))
    angles = np.outer(np.arange(T), 1.0 / 10000 ** (np.arange(half) * 2 / (2 * half)))
    cos, sin = np.cos(angles), np.sin(angles)
    np.testing.assert_allclose(F.rotary_embedding(mi.tensor(x), cos, sin).numpy(), _np_rope(x, cos, sin), rtol=1e-10, atol=1e-12)
    gradcheck(lambda t: F.rotary_embedding(t, cos, sin), [x], name="rotary_embedding")
    # a rotation keeps the norm of every pair
    y = F.rotary_embedding(mi.tensor(x), cos, sin).numpy()
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-10)


def _np_attention(q, k, v, mask=None, causal=False, scale=None):
    B, H, Tq, D = q.shape
    rep = H // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = q @ np.swapaxes(k, -1, -2) * (scale or 1 / math.sqrt(D))
    if mask is not None:
        s = s + mask
    if causal:
        Tk = k.shape[2]
        s = np.where(np.triu(np.ones((Tq, Tk), bool), 1 + Tk - Tq), -np.inf, s)
    return _np_softmax(s, -1) @ v


@given(data=st.data())
def test_scaled_dot_product_attention(backend, data):
    B, Hkv, rep, Tq, D = (data.draw(st.integers(1, 3)) for _ in range(5))
    Tk = Tq + data.draw(st.integers(0, 2))
    causal = data.draw(st.booleans())
    q = data.draw(arrays((B, Hkv * rep, Tq, D)))
    k, v = data.draw(arrays((B, Hkv, Tk, D))), data.draw(arrays((B, Hkv, Tk, D)))
    use_mask = data.draw(st.booleans())
    mask = np.where(np.random.default_rng(Tk).random((B, 1, 1, Tk)) < 0.3, -np.inf, 0.0) if use_mask else None
    if mask is not None:
        mask[..., 0] = 0.0  # keep the first key visible so no row is fully masked here (tested below)
    kw = dict(attn_mask=None if mask is None else mi.tensor(mask), is_causal=causal, enable_gqa=True)
    out = F.scaled_dot_product_attention(mi.tensor(q), mi.tensor(k), mi.tensor(v), **kw)
    np.testing.assert_allclose(out.numpy(), _np_attention(q, k, v, mask, causal), rtol=1e-9, atol=1e-10)
    manual = F.manual_attention(mi.tensor(q), mi.tensor(k), mi.tensor(v), kw["attn_mask"], is_causal=causal)
    np.testing.assert_allclose(out.numpy(), manual.numpy(), rtol=1e-9, atol=1e-10)
    gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **kw), [q, k, v], name="sdpa")


def test_attention_bool_mask_and_fully_masked_rows(backend):
    rng = np.random.default_rng(0)
    q, k, v = (mi.tensor(rng.normal(size=(1, 2, 3, 4)), requires_grad=True) for _ in range(3))
    keep = np.ones((1, 1, 3, 3), dtype=bool)
    keep[..., 1, :] = False  # query 1 may attend to nothing
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mi.tensor(keep))
    assert np.all(np.isfinite(out.numpy())) and np.all(out.numpy()[:, :, 1] == 0)
    out.sum().backward()
    assert all(np.all(np.isfinite(t.grad.numpy())) for t in (q, k, v))


def test_attention_errors():
    q = mi.ones(1, 4, 3, 8)
    with pytest.raises(ValueError, match="enable_gqa"):
        F.scaled_dot_product_attention(q, mi.ones(1, 2, 3, 8), mi.ones(1, 2, 3, 8))
    with pytest.raises(ValueError, match="4-D"):
        F.scaled_dot_product_attention(mi.ones(4, 3, 8), q, q)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=mi.ones(2, 2))


def test_attention_dropout_uses_the_composite_path():
    q = mi.ones(1, 1, 4, 2)
    mi.manual_seed(0)
    out = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5, is_causal=True)
    assert out.shape == (1, 1, 4, 2)


@given(x=arrays(small))
def test_dropout_gradcheck_with_a_fixed_mask(x):
    def fn(t):
        mi.manual_seed(7)  # the same mask at every evaluation, so finite differences see one function
        return F.dropout(t, 0.4)

    gradcheck(fn, [x], name="dropout")

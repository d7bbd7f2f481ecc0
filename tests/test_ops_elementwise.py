"""Elementwise ops: forward against NumPy, backward against finite differences (float64),
with broadcasting and non-contiguous inputs."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minillm as mi
import minillm.nn.functional as F
from minillm.testing import gradcheck
from minillm.testing.strategies import array_pair, arrays, noncontiguous_arrays, shapes

_erf = np.vectorize(math.erf)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# name -> (minillm function, NumPy reference, input domain)
UNARY = {
    "neg": (lambda x: -x, lambda a: -a, "any"),
    "exp": (mi.exp, np.exp, "any"),
    "log": (mi.log, np.log, "positive"),
    "sqrt": (mi.sqrt, np.sqrt, "positive"),
    "rsqrt": (mi.rsqrt, lambda a: 1 / np.sqrt(a), "positive"),
    "abs": (mi.abs, np.abs, "nonzero"),
    "tanh": (mi.tanh, np.tanh, "any"),
    "sigmoid": (mi.sigmoid, _sigmoid, "any"),
    "logsigmoid": (F.logsigmoid, lambda a: -np.logaddexp(0, -a), "any"),
    "relu": (mi.relu, lambda a: np.maximum(a, 0), "nonzero"),
    "silu": (F.silu, lambda a: a * _sigmoid(a), "any"),
    "gelu_erf": (F.gelu, lambda a: 0.5 * a * (1 + _erf(a / math.sqrt(2))), "any"),
    "gelu_tanh": (
        lambda x: F.gelu(x, approximate="tanh"),
        lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3))),
        "any",
    ),
    "square": (lambda x: x**2, lambda a: a**2, "any"),
    "pow_half": (lambda x: x**0.5, lambda a: a**0.5, "positive"),
    "scalar_sub": (lambda x: 2.0 - x, lambda a: 2.0 - a, "any"),
    "scalar_div": (lambda x: 1.5 / x, lambda a: 1.5 / a, "nonzero"),
    "scalar_pow": (lambda x: 2.0**x, lambda a: 2.0**a, "any"),
    "clamp": (lambda x: x.clamp(-1.0, 1.0), lambda a: np.clip(a, -1, 1), "any"),
    "clamp_min": (lambda x: x.clamp(min=0.5), lambda a: np.maximum(a, 0.5), "any"),
}

BINARY = {
    "add": (lambda a, b: a + b, np.add, "any", "any"),
    "sub": (lambda a, b: a - b, np.subtract, "any", "any"),
    "mul": (lambda a, b: a * b, np.multiply, "any", "any"),
    "div": (lambda a, b: a / b, np.divide, "any", "nonzero"),
    "pow": (lambda a, b: a**b, np.power, "positive", "any"),
    "maximum": (mi.maximum, np.maximum, "any", "any"),
    "minimum": (mi.minimum, np.minimum, "any", "any"),
}


def _avoid_kinks(name, x):
    """clamp has kinks at ±1 / 0.5: keep finite differences away from them."""
    if name.startswith("clamp"):
        for k in (-1.0, 1.0, 0.5):
            x = np.where(np.abs(x - k) < 1e-2, x + 0.05, x)
    return x


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_forward_matches_numpy(name, data):
    fn, ref, domain = UNARY[name]
    x = data.draw(arrays(shapes(), domain))
    out = fn(mi.tensor(x))
    np.testing.assert_allclose(out.numpy(), ref(x), rtol=1e-12, atol=1e-12)
    # float32 in -> float32 out (no silent upcast)
    assert fn(mi.tensor(x.astype(np.float32))).dtype == np.float32


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_gradcheck(name, data):
    fn, _, domain = UNARY[name]
    x = _avoid_kinks(name, data.draw(arrays(shapes(max_dims=3, max_side=3), domain)))
    gradcheck(fn, [x], name=name)


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_noncontiguous(name, data):
    fn, ref, domain = UNARY[name]
    x = _avoid_kinks(name, data.draw(noncontiguous_arrays(shapes(min_dims=2, max_dims=3, max_side=3), domain)))
    t = mi.Tensor(x, requires_grad=True)
    np.testing.assert_allclose(fn(t).numpy(), ref(x), rtol=1e-12, atol=1e-12)
    gradcheck(fn, [t], name=name)


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_forward_and_grad_with_broadcasting(name, data):
    fn, ref, da, db = BINARY[name]
    a, b = data.draw(array_pair(da, db))
    out = fn(mi.tensor(a), mi.tensor(b))
    np.testing.assert_allclose(out.numpy(), ref(a, b), rtol=1e-12, atol=1e-12)
    if name in ("maximum", "minimum"):  # away from ties, where the derivative is not defined
        assume(not np.isclose(np.broadcast_to(a, out.shape), np.broadcast_to(b, out.shape), atol=1e-4).any())
    gradcheck(fn, [a, b], name=name)


def test_maximum_tie_splits_gradient():
    a = mi.tensor([1.0, 2.0], requires_grad=True)
    b = mi.tensor([1.0, 3.0], requires_grad=True)
    mi.maximum(a, b).sum().backward()
    assert a.grad.tolist() == [0.5, 0.0] and b.grad.tolist() == [0.5, 1.0]


@given(data=st.data())
def test_where_and_masked_fill(data):
    a, b = data.draw(array_pair())
    shape = np.broadcast_shapes(a.shape, b.shape)
    cond = np.random.default_rng(a.size).random(shape) > 0.5
    np.testing.assert_allclose(mi.where(mi.tensor(cond), mi.tensor(a), mi.tensor(b)).numpy(), np.where(cond, a, b))
    gradcheck(lambda x, y: mi.where(mi.tensor(cond), x, y), [a, b], name="where")
    x = np.broadcast_to(a, shape).copy()
    np.testing.assert_allclose(mi.tensor(x).masked_fill(mi.tensor(cond), -7.0).numpy(), np.where(cond, -7.0, x))
    gradcheck(lambda t: t.masked_fill(mi.tensor(cond), -7.0), [x], name="masked_fill")


def test_python_scalars_keep_float32():
    x = mi.ones(3)
    for y in (x * 0.5, 0.5 * x, x + 1, x / 3, x**2, 2.0 - x, x.clamp(0.1, 0.2), mi.maximum(x, 0.3)):
        assert y.dtype == np.float32
    assert (mi.arange(3) * 2).dtype == np.int64
    assert (mi.arange(3) * 0.5).dtype == np.float32
    assert (mi.arange(3) / 2).dtype == np.float32


def test_broadcast_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        mi.ones(2, 3) + mi.ones(4)


def test_where_requires_bool_condition():
    with pytest.raises(TypeError, match="bool"):
        mi.where(mi.ones(2), mi.ones(2), mi.zeros(2))


def test_gelu_bad_approximate():
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(mi.ones(2), approximate="fast")


def test_sigmoid_is_stable_for_large_inputs():
    x = mi.tensor([-1e4, 0.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exp(1e4) overflows to inf on purpose: no RuntimeWarning
        assert mi.sigmoid(x).tolist() == [0.0, 0.5, 1.0]
        assert F.silu(x).tolist() == [0.0, 0.0, 1e4]


def test_logsigmoid_is_stable_and_gradchecked_at_plus_minus_1e4():
    # the reward-model / DPO loss -log σ(margin): the naive log(sigmoid(x)) gives -inf at -1e4
    # (sigmoid underflows to 0) and its gradient NaN; the stable form is exact there.
    x = np.array([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow anywhere, not even a silenced one
        out = F.logsigmoid(mi.tensor(x)).numpy()
        np.testing.assert_allclose(out, -np.logaddexp(0, -x), rtol=1e-15, atol=0)
        assert out[0] == -1e4 and out[-1] == 0.0
        t = mi.tensor(x, requires_grad=True)
        F.logsigmoid(t).sum().backward()
        np.testing.assert_allclose(t.grad.numpy(), 1 / (1 + np.exp(np.clip(x, -700, 700))), rtol=1e-15, atol=1e-300)  # σ(-x)
        assert t.grad.numpy()[0] == 1.0 and t.grad.numpy()[-1] == 0.0
    # finite differences at the extremes and in between (the curve is smooth everywhere)
    gradcheck(F.logsigmoid, [x])
    gradcheck(F.logsigmoid, [np.array([-1e4 + 0.5, 1e4 - 0.5, -3.25, 2.5])])
    # float32 in, float32 out; ints refused by name
    assert F.logsigmoid(mi.tensor(x.astype(np.float32))).dtype == np.float32
    with pytest.raises(TypeError, match="logsigmoid"):
        F.logsigmoid(mi.tensor([1, 2]))


def test_logsigmoid_equals_torch():
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.linspace(-60, 60, 241), [-1e4, 1e4]])
    t = mi.tensor(x, requires_grad=True)
    F.logsigmoid(t).sum().backward()
    tt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.logsigmoid(tt)
    ref.sum().backward()
    np.testing.assert_allclose(F.logsigmoid(mi.tensor(x)).numpy(), ref.detach().numpy(), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-13, atol=1e-300)


def test_sigmoid_keeps_relative_accuracy_far_left():
    # 1 / (1 + e^-x) ~ e^x for x << 0; the 0.5 * (1 + tanh(x / 2)) form rounds these to 0
    x = np.array([-30.0, -40.0, -700.0])
    np.testing.assert_allclose(mi.sigmoid(mi.tensor(x)).numpy(), np.exp(x) / (1 + np.exp(x)), rtol=1e-14)
    x32 = x[:2].astype(np.float32)  # (e^-700 is below float32's range)
    np.testing.assert_allclose(mi.sigmoid(mi.tensor(x32)).numpy(), np.exp(x[:2]), rtol=1e-6)

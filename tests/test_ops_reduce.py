"""Reductions with ``dim`` as None, int or tuple and ``keepdim``: forward vs NumPy, gradcheck."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minillm as mi
from minillm.testing import gradcheck
from minillm.testing.strategies import arrays, shapes


@st.composite
def array_and_dim(draw, min_dims=1, kinds=("none", "int", "tuple")):
    x = draw(arrays(shapes(min_dims=min_dims, max_dims=3, max_side=3)))
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        dim = None
    elif kind == "int":
        dim = draw(st.integers(-x.ndim, x.ndim - 1))
    else:
        dim = tuple(draw(st.sets(st.integers(0, x.ndim - 1), min_size=1, max_size=x.ndim)))
    return x, dim, draw(st.booleans())


def _np_axis(dim):
    return dim


# name -> (minillm method call, NumPy reference)
REDUCTIONS = {
    "sum": (lambda t, d, k: t.sum(d, k), lambda a, d, k: np.sum(a, axis=d, keepdims=k)),
    "mean": (lambda t, d, k: t.mean(d, k), lambda a, d, k: np.mean(a, axis=d, keepdims=k)),
    "amax": (lambda t, d, k: t.amax(d, k), lambda a, d, k: np.max(a, axis=d, keepdims=k)),
    "amin": (lambda t, d, k: t.amin(d, k), lambda a, d, k: np.min(a, axis=d, keepdims=k)),
    "var": (lambda t, d, k: t.var(d, k), lambda a, d, k: np.var(a, axis=d, keepdims=k, ddof=1)),
    "std": (lambda t, d, k: t.std(d, k), lambda a, d, k: np.std(a, axis=d, keepdims=k, ddof=1)),
    "var_biased": (lambda t, d, k: t.var(d, k, correction=0), lambda a, d, k: np.var(a, axis=d, keepdims=k)),
    "logsumexp": (
        lambda t, d, k: t.logsumexp(d if d is not None else tuple(range(t.ndim)), k),
        lambda a, d, k: np.log(np.sum(np.exp(a), axis=d, keepdims=k)),
    ),
}


def _reduced_size(x, dim):
    axes = range(x.ndim) if dim is None else ((dim,) if isinstance(dim, int) else dim)
    return int(np.prod([x.shape[a] for a in axes]))


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(case=array_and_dim())
def test_reduction_forward_and_grad(name, case):
    x, dim, keepdim = case
    fn, ref = REDUCTIONS[name]
    if name.startswith(("var", "std")):
        assume(_reduced_size(x, dim) > (0 if name == "var_biased" else 1))
    expected = ref(x, dim, keepdim)
    out = fn(mi.tensor(x), dim, keepdim)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    if name == "std":
        assume(np.all(np.asarray(expected) > 1e-3))  # sqrt is not differentiable at 0
    gradcheck(lambda t: fn(t, dim, keepdim), [x], name=name)


@pytest.mark.parametrize("use_min", [False, True])
@given(case=array_and_dim(kinds=("int",)))  # (drawn, not filtered: assume() threw away 2 of 3 draws and
def test_max_min_with_int_dim_returns_values_and_indices(use_min, case):  # failed hypothesis's health check)
    x, dim, keepdim = case
    t = mi.tensor(x)
    values, indices = t.min(dim, keepdim) if use_min else t.max(dim, keepdim)
    ref = (np.min if use_min else np.max)(x, axis=dim, keepdims=keepdim)
    ref_idx = (np.argmin if use_min else np.argmax)(x, axis=dim, keepdims=keepdim)
    np.testing.assert_array_equal(values.numpy(), ref)
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    assert indices.dtype == np.int64
    gradcheck(lambda a: (a.min(dim, keepdim) if use_min else a.max(dim, keepdim)).values, [x], name="max(dim)")


def test_max_without_dim_and_ties_split_gradient():
    x = mi.tensor([1.0, 3.0, 3.0], requires_grad=True)
    m = x.max()
    assert m.item() == 3.0
    m.backward()
    assert x.grad.tolist() == [0.0, 0.5, 0.5]


def test_logsumexp_stable_for_huge_logits():
    x = mi.tensor([[1e4, -1e4, 0.0], [-np.inf, -np.inf, -np.inf]], dtype=mi.float64, requires_grad=True)
    out = x.logsumexp(dim=-1)
    assert out[0].item() == pytest.approx(1e4)
    assert out[1].item() == -np.inf
    out[0].backward()
    assert np.all(np.isfinite(x.grad.numpy()))


def test_argmax_argmin():
    x = mi.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    assert x.argmax().item() == 3
    assert x.argmax(dim=1).tolist() == [1, 0]
    assert x.argmin(dim=0, keepdim=True).tolist() == [[0, 1, 0]]
    assert not x.argmax(dim=1).requires_grad


def test_bool_sum_counts():
    assert (mi.tensor([1.0, 2.0, 3.0]) > 1.5).sum().item() == 2


def test_bad_dim_names_ndim():
    with pytest.raises(IndexError, match="out of range for a tensor with 2 dims"):
        mi.ones(2, 3).sum(dim=2)
    with pytest.raises(ValueError, match="twice"):
        mi.ones(2, 3).sum(dim=(0, -2))


def test_mean_of_int_tensor_is_an_error():
    with pytest.raises(TypeError, match="floating point"):
        mi.arange(4).mean()

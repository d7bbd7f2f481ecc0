"""Indexing (slices, integer arrays, gather, index_select: scatter-add backward) and matmul."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minillm as mi
from minillm.testing import gradcheck
from minillm.testing.strategies import arrays, shapes


@given(x=arrays(shapes(min_dims=2, max_dims=3, max_side=4)), data=st.data())
def test_basic_slicing(x, data):
    i = data.draw(st.integers(0, x.shape[0] - 1))
    for index in [(i,), (slice(None), slice(0, None, 2)), (Ellipsis, -1), (None, i), (slice(None, None, -1),)]:
        np.testing.assert_array_equal(mi.tensor(x)[index].numpy(), x[index])
        gradcheck(lambda t: t[index], [x], name=f"getitem{index}")


@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=4)), data=st.data())
def test_integer_array_indexing_accumulates_repeats(x, data):
    ids = np.array(data.draw(st.lists(st.integers(0, x.shape[0] - 1), min_size=1, max_size=6)))
    np.testing.assert_array_equal(mi.tensor(x)[mi.tensor(ids)].numpy(), x[ids])
    gradcheck(lambda t: t[mi.tensor(ids)], [x], name="fancy index")


def test_repeated_ids_add_up():
    w = mi.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    w[mi.tensor([0, 2, 0, 0])].sum().backward()
    assert w.grad.tolist() == [[3.0, 3.0], [0.0, 0.0], [1.0, 1.0]]


@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=4)), data=st.data())
def test_gather_and_index_select(x, data):
    dim = data.draw(st.integers(0, x.ndim - 1))
    idx_shape = tuple(data.draw(st.integers(1, 4)) if d == dim else s for d, s in enumerate(x.shape))
    idx = np.random.default_rng(x.size).integers(0, x.shape[dim], size=idx_shape)
    np.testing.assert_array_equal(mi.tensor(x).gather(dim, mi.tensor(idx)).numpy(), np.take_along_axis(x, idx, dim))
    gradcheck(lambda t: t.gather(dim, mi.tensor(idx)), [x], name="gather")
    sel = np.random.default_rng(1).integers(0, x.shape[dim], size=5)
    np.testing.assert_array_equal(mi.tensor(x).index_select(dim, mi.tensor(sel)).numpy(), np.take(x, sel, dim))
    gradcheck(lambda t: t.index_select(dim, mi.tensor(sel)), [x], name="index_select")


def test_index_errors():
    with pytest.raises(TypeError, match="integer tensor"):
        mi.ones(3, 2).gather(0, mi.ones(3, 2))
    with pytest.raises(IndexError, match=r"outside the valid range \[0, 3\)"):
        mi.ones(3, 2).index_select(0, mi.tensor([0, 3]))
    with pytest.raises(IndexError, match="shape"):
        mi.ones(3)[mi.tensor([5])]
    with pytest.raises(IndexError, match="integer or bool"):
        mi.ones(3)[mi.tensor([0.0])]


def _matmul_shapes():
    """(a_shape, b_shape) pairs covering 1-D, 2-D and batched broadcasting."""
    dim = st.integers(1, 4)

    @st.composite
    def build(draw):
        m, k, n = draw(dim), draw(dim), draw(dim)
        kind = draw(st.sampled_from(["vv", "vm", "mv", "mm", "bmm", "broadcast"]))
        if kind == "vv":
            return (k,), (k,)
        if kind == "vm":
            return (k,), (k, n)
        if kind == "mv":
            return (m, k), (k,)
        if kind == "mm":
            return (m, k), (k, n)
        b = draw(dim)
        if kind == "bmm":
            return (b, m, k), (b, k, n)
        return (draw(dim), 1, m, k), (b, k, n)

    return build()


@given(shapes_=_matmul_shapes(), data=st.data())
def test_matmul(shapes_, data):
    sa, sb = shapes_
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb))
    np.testing.assert_allclose((mi.tensor(a) @ mi.tensor(b)).numpy(), a @ b, rtol=1e-12, atol=1e-12)
    gradcheck(lambda x, y: x @ y, [a, b], name="matmul")


def test_matmul_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        mi.ones(2, 3) @ mi.ones(4, 5)
    with pytest.raises(ValueError, match="batch dims"):
        mi.ones(2, 2, 3) @ mi.ones(3, 3, 4)
    with pytest.raises(ValueError, match="at least 1 dim"):
        mi.matmul(mi.tensor(1.0), mi.ones(2))


def test_matmul_keeps_float32():
    assert (mi.ones(2, 3) @ mi.ones(3, 4)).dtype == np.float32

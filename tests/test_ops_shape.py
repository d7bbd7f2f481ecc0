"""Shape and movement ops: forward vs NumPy and gradcheck (their backward is the inverse movement)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minillm as mi
from minillm.testing import gradcheck
from minillm.testing.strategies import arrays, noncontiguous_arrays, shapes


@given(x=arrays(shapes(min_dims=1, max_dims=4, max_side=3)), data=st.data())
def test_reshape_view_flatten(x, data):
    n = x.size
    gradcheck(lambda t: t.reshape(-1), [x], name="reshape")
    gradcheck(lambda t: t.view(n, 1), [x], name="view")
    start = data.draw(st.integers(0, x.ndim - 1))
    out = mi.tensor(x).flatten(start)
    assert out.shape == x.shape[:start] + (int(np.prod(x.shape[start:])),)
    gradcheck(lambda t: t.flatten(start), [x], name="flatten")


@given(x=noncontiguous_arrays(shapes(min_dims=2, max_dims=4, max_side=3)), data=st.data())
def test_permute_transpose_contiguous(x, data):
    perm = data.draw(st.permutations(range(x.ndim)))
    np.testing.assert_array_equal(mi.tensor(x).permute(*perm).numpy(), x.transpose(perm))
    gradcheck(lambda t: t.permute(*perm), [mi.Tensor(x, requires_grad=True)], name="permute")
    d0, d1 = data.draw(st.integers(-x.ndim, x.ndim - 1)), data.draw(st.integers(-x.ndim, x.ndim - 1))
    np.testing.assert_array_equal(mi.tensor(x).transpose(d0, d1).numpy(), np.swapaxes(x, d0, d1))
    gradcheck(lambda t: t.transpose(d0, d1).contiguous(), [mi.Tensor(x, requires_grad=True)], name="transpose")
    assert mi.Tensor(x).contiguous().is_contiguous()


@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=3)), data=st.data())
def test_expand_squeeze_unsqueeze(x, data):
    # make some dims size 1 so expand has something to do
    x = x[tuple(slice(0, 1) if i % 2 == 0 else slice(None) for i in range(x.ndim))]
    target = (2,) + tuple(3 if s == 1 else s for s in x.shape)
    np.testing.assert_array_equal(mi.tensor(x).expand(*target).numpy(), np.broadcast_to(x, target))
    gradcheck(lambda t: t.expand(*target), [x], name="expand")
    gradcheck(lambda t: t.expand(-1, *x.shape) if False else t.expand(2, *[-1] * x.ndim), [x], name="expand(-1)")
    gradcheck(lambda t: t.squeeze(), [x], name="squeeze")
    d = data.draw(st.integers(-x.ndim - 1, x.ndim))
    assert mi.tensor(x).unsqueeze(d).shape == np.expand_dims(x, d).shape
    gradcheck(lambda t: t.unsqueeze(d), [x], name="unsqueeze")


@given(data=st.data())
def test_cat_stack_split_chunk(data):
    shape = data.draw(shapes(min_dims=1, max_dims=3, max_side=3))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    parts = []
    for s in sizes:
        shp = list(shape)
        shp[dim] = s
        parts.append(data.draw(arrays(tuple(shp))))
    np.testing.assert_array_equal(mi.cat([mi.tensor(p) for p in parts], dim).numpy(), np.concatenate(parts, dim))
    gradcheck(lambda *ts: mi.cat(list(ts), dim), parts, name="cat")
    same = [data.draw(arrays(shape)) for _ in sizes]
    np.testing.assert_array_equal(mi.stack([mi.tensor(p) for p in same], dim).numpy(), np.stack(same, dim))
    gradcheck(lambda *ts: mi.stack(list(ts), dim), same, name="stack")
    whole = np.concatenate(parts, dim)
    pieces = mi.tensor(whole).split(sizes, dim)
    for p, ref in zip(pieces, parts):
        np.testing.assert_array_equal(p.numpy(), ref)
    gradcheck(lambda t: mi.cat([p * (i + 1) for i, p in enumerate(t.split(sizes, dim))], dim), [whole], name="split")
    n = whole.shape[dim]
    chunks = data.draw(st.integers(1, n))
    got = mi.tensor(whole).chunk(chunks, dim)
    assert sum(c.shape[dim] for c in got) == n
    assert all(c.shape[dim] == -(-n // chunks) for c in got[:-1])


@given(x=arrays(shapes(min_dims=2, max_dims=3, max_side=4)), k=st.integers(-2, 2))
def test_tril_triu(x, k):
    np.testing.assert_array_equal(mi.tensor(x).tril(k).numpy(), np.tril(x, k))
    np.testing.assert_array_equal(mi.tensor(x).triu(k).numpy(), np.triu(x, k))
    gradcheck(lambda t: t.tril(k), [x], name="tril")
    gradcheck(lambda t: mi.triu(t, k), [x], name="triu")


@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=3)), r=st.integers(1, 3), data=st.data())
def test_repeat_interleave(x, r, data):
    d = data.draw(st.integers(0, x.ndim - 1))
    np.testing.assert_array_equal(mi.tensor(x).repeat_interleave(r, d).numpy(), np.repeat(x, r, axis=d))
    gradcheck(lambda t: t.repeat_interleave(r, d), [x], name="repeat_interleave")


def test_shape_errors_are_clear():
    x = mi.ones(2, 3)
    with pytest.raises(ValueError, match=r"shape \(4, 2\) is invalid for a tensor of shape \(2, 3\)"):
        x.view(4, 2)
    with pytest.raises(ValueError, match="differ outside dim"):
        mi.cat([mi.ones(2, 3), mi.ones(3, 3)], dim=1)
    with pytest.raises(ValueError, match="same shape"):
        mi.stack([mi.ones(2), mi.ones(3)])
    with pytest.raises(ValueError, match="permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match="cannot expand"):
        x.expand(2, 4)
    with pytest.raises(IndexError, match="2 dims"):
        x.transpose(0, 5)
    with pytest.raises(ValueError, match="sum to"):
        x.split([1, 1], dim=1)

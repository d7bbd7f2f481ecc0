"""The Tensor API: creation, properties, conversions, repr, seeding, top-level names."""
import numpy as np
import pytest

import minillm as mi


def test_dtype_inference_like_pytorch():
    assert mi.tensor([1.0, 2.0]).dtype == np.float32
    assert mi.tensor([1, 2]).dtype == np.int64
    assert mi.tensor([True]).dtype == np.bool_
    assert mi.tensor(np.zeros(2, dtype=np.float64)).dtype == np.float64
    assert mi.tensor([1, 2], dtype=mi.float64).dtype == np.float64


def test_tensor_copies_but_from_numpy_shares():
    a = np.zeros(3, dtype=np.float32)
    t = mi.tensor(a)
    t.data[0] = 1
    assert a[0] == 0
    s = mi.from_numpy(a)
    s.data[0] = 2
    assert a[0] == 2


def test_factories():
    assert mi.zeros(2, 3).shape == (2, 3) and mi.zeros((2, 3)).dtype == np.float32
    assert mi.ones(2).tolist() == [1.0, 1.0]
    assert mi.full((2,), 7).tolist() == [7, 7]
    assert mi.full((2,), 0.5).dtype == np.float32
    assert mi.arange(4).tolist() == [0, 1, 2, 3] and mi.arange(4).dtype == np.int64
    assert mi.arange(0.0, 1.0, 0.5).dtype == np.float32
    assert mi.zeros_like(mi.ones(2, dtype=mi.float64)).dtype == np.float64
    assert mi.ones_like(mi.zeros(3)).tolist() == [1.0] * 3
    assert mi.randn(2, 3).dtype == np.float32 and mi.rand(5).numpy().max() < 1
    assert mi.randn(2, requires_grad=True).requires_grad


def test_manual_seed_makes_runs_reproducible():
    mi.manual_seed(123)
    a = mi.randn(4).tolist()
    mi.manual_seed(123)
    assert mi.randn(4).tolist() == a
    state = mi.get_rng_state()
    b = mi.rand(3).tolist()
    mi.set_rng_state(state)
    assert mi.rand(3).tolist() == b


def test_properties_and_conversions():
    t = mi.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert t.shape == (2, 3) and t.ndim == 2 and t.size() == (2, 3) and t.size(-1) == 3
    assert t.numel() == 6 and len(t) == 2
    assert t[1, 2].item() == 6.0
    assert t.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert isinstance(t.numpy(), np.ndarray)
    assert t.long().dtype == np.int64 and t.double().dtype == np.float64
    assert t.T.shape == (3, 2)
    with pytest.raises(ValueError, match="one-element"):
        t.item()


def test_repr_shows_values_dtype_and_grad_fn():
    x = mi.tensor([1.0, 2.0], requires_grad=True)
    assert "requires_grad=True" in repr(x)
    r = repr(x * 2)
    assert "2." in r and "4." in r and "grad_fn=<MulBackward>" in r
    assert "dtype=float64" in repr(mi.zeros(1, dtype=mi.float64))
    assert "dtype=int64" in repr(mi.arange(2))


def test_comparisons_give_bool_tensors():
    t = mi.tensor([1.0, 2.0, 3.0])
    assert (t > 1.5).tolist() == [False, True, True]
    assert (t == 2.0).dtype == np.bool_
    assert ((t > 1.5) & (t < 2.5)).tolist() == [False, True, False]
    assert (~(t > 1.5)).tolist() == [True, False, False]


def test_setitem_under_no_grad_and_copy():
    t = mi.zeros(3)
    t[1] = 5.0
    assert t.tolist() == [0, 5, 0]
    t.copy_(mi.ones(3))
    assert t.tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="broadcast"):
        t.copy_(mi.ones(4))


def test_top_level_namespace_mirrors_pytorch():
    for name in ["cat", "stack", "where", "maximum", "minimum", "no_grad", "manual_seed", "tensor", "zeros",
                 "ones", "randn", "rand", "arange", "full", "zeros_like", "ones_like", "set_kernels"]:
        assert hasattr(mi, name), name
    import minillm.nn.functional as F

    assert mi.nn.functional is F
    assert F.cross_entropy and F.scaled_dot_product_attention and F.softmax


def test_default_dtype_switch():
    mi.set_default_dtype(mi.float64)
    try:
        assert mi.tensor([1.0]).dtype == np.float64 and mi.zeros(1).dtype == np.float64
    finally:
        mi.set_default_dtype(mi.float32)
    with pytest.raises(ValueError):
        mi.set_default_dtype(mi.int64)

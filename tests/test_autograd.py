"""The autograd engine: graph shapes, accumulation, no_grad, freeing, deep graphs, errors."""
import gc
import weakref

import numpy as np
import pytest

import minillm as mi


def test_diamond_graph_sums_both_paths():
    x = mi.tensor(3.0, requires_grad=True)
    a = x * 2  # da/dx = 2
    b = x * x  # db/dx = 2x = 6
    (a + b).backward()
    assert x.grad.item() == 8.0


def test_value_used_twice_in_one_op():
    x = mi.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_gradients_accumulate_until_zeroed():
    x = mi.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [6.0, 6.0]
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_no_grad_context_and_decorator():
    x = mi.tensor([1.0], requires_grad=True)
    with mi.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert mi.is_grad_enabled()

    @mi.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad

    @mi.no_grad
    def g(t):
        return t * 2

    assert not g(x).requires_grad
    assert (x * 2).requires_grad


def test_deep_chain_has_no_recursion_limit():
    x = mi.tensor(1.0, dtype=mi.float64, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1e-6
    y.backward()
    assert x.grad.item() == 1.0


def test_graph_is_freed_after_backward():
    x = mi.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = mi.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.exp([1.0, 2.0]), rtol=1e-6)


def test_intermediate_activations_are_released_after_backward():
    x = mi.randn(64, 64, requires_grad=True)
    h = x.tanh()
    ref = weakref.ref(h)
    loss = (h * 2).sum()
    del h
    loss.backward()
    gc.collect()
    assert ref() is None  # the graph no longer holds the intermediate tensor


def test_backward_on_non_scalar_needs_gradient():
    x = mi.ones(2, 3, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"scalar outputs.*\(2, 3\)"):
        y.backward()
    y.backward(mi.ones(2, 3))
    assert x.grad.tolist() == [[2.0] * 3] * 2
    with pytest.raises(ValueError, match="does not match"):
        (x * 2).backward(mi.ones(3))


def test_backward_without_requires_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        mi.ones(2).sum().backward()


def test_only_float_tensors_require_grad():
    with pytest.raises(TypeError, match="floating point"):
        mi.tensor([1, 2], requires_grad=True)


def test_detach_cuts_the_graph():
    x = mi.tensor([1.0, 2.0], requires_grad=True)
    y = (x * 2).detach() * x
    y.sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_gradient_dtype_follows_input():
    x = mi.ones(3, requires_grad=True)
    (x * 2.5).sum().backward()
    assert x.grad.dtype == np.float32
    x64 = mi.ones(3, dtype=mi.float64, requires_grad=True)
    (x64.to(mi.float32) * 2).sum().backward()
    assert x64.grad.dtype == np.float64 and x64.grad.tolist() == [2.0] * 3


def test_broadcast_gradient_is_reduced_to_input_shape():
    b = mi.zeros(1, 3, requires_grad=True)
    x = mi.ones(4, 2, 3)
    (x + b).sum().backward()
    assert b.grad.shape == (1, 3) and b.grad.tolist() == [[8.0] * 3]


def test_retain_grad_on_non_leaf():
    x = mi.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    assert h.grad.tolist() == [6.0, 12.0]


def test_inplace_on_graph_tensor_is_refused():
    x = mi.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        x.zero_()
    with mi.no_grad():
        x.zero_()
    assert x.tolist() == [0.0, 0.0]


def test_unbroadcast():
    from minillm.autograd import unbroadcast

    g = np.ones((2, 3, 4))
    assert unbroadcast(g, (3, 1)).tolist() == [[8.0]] * 3
    assert unbroadcast(g, ()).item() == 24.0
    with pytest.raises(ValueError):
        unbroadcast(g, (5,))


def test_function_without_backward_is_refused_at_definition():
    from minillm.autograd import Function

    with pytest.raises(TypeError, match="must define a static method backward"):
        class HalfOp(Function):  # noqa: F841
            @staticmethod
            def forward(ctx, a):
                return a

"""minillm.testing.gradcheck itself: it passes right gradients and catches wrong ones, element-wise
and in the directional mode the whole-model checks use."""
import numpy as np
import pytest

import minillm as mi
from minillm.autograd import Function
from minillm.testing import GradcheckError, directional_grad, gradcheck


class SquareWithSlip(Function):
    """y = x² whose backward is off by `slip` at one flat index (None: right)."""
    slip = 0.0
    at = None

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        g = 2 * x * grad
        if SquareWithSlip.at is not None:
            g = g.copy()
            g.flat[SquareWithSlip.at] += SquareWithSlip.slip
        return (g,)


@pytest.fixture
def slip():
    def set_slip(at, amount):
        SquareWithSlip.at, SquareWithSlip.slip = at, amount
    yield set_slip
    set_slip(None, 0.0)


def model(x, w):
    """A small two-input function with cross terms: tanh((x²) @ w)."""
    return (SquareWithSlip.apply(x) @ w).tanh()


def inputs(n=40, m=30, seed=0):
    rng = np.random.default_rng(seed)
    return [mi.Tensor(rng.standard_normal((n, m)), requires_grad=True),
            mi.Tensor(rng.standard_normal((m, 3)) * 0.2, requires_grad=True)]


@pytest.mark.parametrize("directions", [None, 1, 3])
def test_right_gradients_pass(directions):
    assert gradcheck(model, inputs(), directions=directions)


@pytest.mark.parametrize("directions", [None, 2])
@pytest.mark.parametrize("amount", [1e-2, 1e-4])
def test_one_wrong_element_is_caught_and_named(slip, directions, amount):
    slip(517, amount)  # one element of a 1200-element input: (517 // 30, 517 % 30) = (17, 7)
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(40, 30\)\) at index \(17, 7\)"):
        gradcheck(model, inputs(), directions=directions)


def test_directional_derivative_is_accurate_far_below_the_tolerance():
    """Richardson-extrapolated central differences: error ~1e-12 where the check allows ~1e-7."""
    x, w = inputs()
    L = lambda x, w: model(x, w)
    weights = np.random.default_rng(3).uniform(0.5, 1.5, size=(40, 3))
    L(x, w).backward(mi.Tensor(weights))
    v = np.random.default_rng(4).standard_normal(x.shape)
    v /= np.linalg.norm(v)
    numeric = directional_grad(L, [x, w], 0, v, weights=weights)
    assert abs(numeric - float(np.sum(x.grad.data * v))) < 1e-10
    np.testing.assert_array_equal(x.data, inputs()[0].data)  # the input is restored


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_directions_are_refused(bad):
    with pytest.raises(ValueError, match="directions must be None or a positive int"):
        gradcheck(model, inputs(4, 3), directions=bad)


def test_float32_inputs_are_refused():
    x = mi.Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="finite differences need float64"):
        gradcheck(lambda x: x * x, [x])

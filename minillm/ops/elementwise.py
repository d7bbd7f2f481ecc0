"""Elementwise ops with full broadcasting (Happy LLM ch. 2: the arithmetic every layer is made of).

Each op is a ``Function`` with ``forward`` and ``backward`` side by side. Binary ops undo
broadcasting in their backward with ``unbroadcast`` (one place for that logic).
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..autograd import Function, unbroadcast
from ..tensor import Tensor, get_default_dtype
from ._util import as_tensor_like, binary_operands, broadcast_shape, check_float


# ----------------------------------------------------------------------------- binary
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        return unbroadcast(grad, sa), unbroadcast(grad, sb)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        return unbroadcast(grad, sa), unbroadcast(-grad, sb)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        ga = unbroadcast(grad * b, a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(grad * a, b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        ga = unbroadcast(grad / b, a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-grad * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class Pow(Function):
    """``a ** b`` for tensors a and b: d/da = b·a^(b-1), d/db = a^b·ln(a) (a > 0 needed for that one)."""

    @staticmethod
    def forward(ctx, a, b):
        out = np.power(a, b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(grad * b * np.power(a, b - 1), a.shape)
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_a = np.where(a > 0, np.log(np.where(a > 0, a, 1)), 0)
            gb = unbroadcast(grad * out * log_a, b.shape)
        return ga, gb


class PowScalar(Function):
    """``a ** p`` with a constant exponent (the common case: x**2, x**0.5)."""

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a)
        ctx.p = p
        return np.power(a, a.dtype.type(p)) if a.dtype.kind == "f" else np.power(a, p)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        p = ctx.p
        return grad * (a.dtype.type(p) * np.power(a, a.dtype.type(p - 1)))


class Maximum(Function):
    """Elementwise max. At ties the gradient is split evenly, as in PyTorch."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.maximum(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return _tie_split(grad, a > b, a == b, a.shape, b.shape)


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.minimum(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return _tie_split(grad, a < b, a == b, a.shape, b.shape)


def _tie_split(grad, a_wins, tie, a_shape, b_shape):
    """Gradient of max/min: to the winner, split evenly at ties (in grad's dtype, no float64 temporaries)."""
    wa = np.array(a_wins, dtype=grad.dtype)  # an array even for 0-d inputs
    wa[np.asarray(tie)] = 0.5
    return unbroadcast(grad * wa, a_shape), unbroadcast(grad * (1 - wa), b_shape)


class Where(Function):
    """``where(cond, x, y)``: the gradient goes to x where cond holds, to y elsewhere."""

    @staticmethod
    def forward(ctx, cond, x, y):
        ctx.cond = cond
        ctx.shapes = (x.shape, y.shape)
        return np.where(cond, x, y)

    @staticmethod
    def backward(ctx, grad):
        sx, sy = ctx.shapes
        zero = grad.dtype.type(0)
        return unbroadcast(np.where(ctx.cond, grad, zero), sx), unbroadcast(np.where(ctx.cond, zero, grad), sy)


class MaskedFill(Function):
    """``x.masked_fill(mask, value)``: positions where ``mask`` is True get ``value`` and no gradient."""

    @staticmethod
    def forward(ctx, x, mask, value):
        ctx.mask = mask
        ctx.shape = x.shape
        return np.where(mask, x.dtype.type(value), x)

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(np.where(ctx.mask, grad.dtype.type(0), grad), ctx.shape)


# ----------------------------------------------------------------------------- unary
class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * out


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        return grad / a


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad / (2 * out)


class Rsqrt(Function):
    """1/sqrt(a); d/da = -1/2 · a^(-3/2) = -out³/2."""

    @staticmethod
    def forward(ctx, a):
        out = 1 / np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * (-0.5 * out * out * out).astype(grad.dtype, copy=False)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        return grad * np.sign(a)


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * (1 - out * out)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        out = kernels.reference.sigmoid(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * out * (1 - out)


class LogSigmoid(Function):
    """log σ(x) = -softplus(-x), the loss of a reward model and of DPO (Happy LLM 4.2.4).

    ``log(1 / (1 + exp(-x)))`` written as is overflows (``exp(1e4)``) or rounds to ``log(1) = 0``
    for large |x|. The stable form is ``min(x, 0) - log1p(exp(-|x|))``: exp only ever sees a
    number <= 0. The derivative is ``σ(-x) = 1 - σ(x)``, also computed without overflow.
    """

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.minimum(a, 0) - np.log1p(np.exp(-np.abs(a)))

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        return grad * kernels.reference.sigmoid(-a)


class Relu(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.maximum(a, 0)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        return grad * (a > 0)


class Silu(Function):
    """silu(x) = x·sigmoid(x); d/dx = s + x·s·(1 - s)."""

    @staticmethod
    def forward(ctx, a):
        s = kernels.reference.sigmoid(a)
        ctx.save_for_backward(a, s)
        return a * s

    @staticmethod
    def backward(ctx, grad):
        a, s = ctx.saved
        return grad * (s * (1 + a * (1 - s)))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class GeluTanh(Function):
    """GELU, tanh approximation (GPT-2/BERT): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""

    @staticmethod
    def forward(ctx, a):
        c, k = a.dtype.type(_SQRT_2_OVER_PI), a.dtype.type(0.044715)
        t = np.tanh(c * (a + k * a * a * a))
        ctx.save_for_backward(a, t)
        return a.dtype.type(0.5) * a * (1 + t)

    @staticmethod
    def backward(ctx, grad):
        a, t = ctx.saved
        c, k = a.dtype.type(_SQRT_2_OVER_PI), a.dtype.type(0.044715)
        du = c * (1 + 3 * k * a * a)
        d = a.dtype.type(0.5) * (1 + t) + a.dtype.type(0.5) * a * (1 - t * t) * du
        return grad * d


class GeluErf(Function):
    """Exact GELU: x·Φ(x) with Φ the standard normal CDF; d/dx = Φ(x) + x·φ(x)."""

    @staticmethod
    def forward(ctx, a):
        cdf = a.dtype.type(0.5) * (1 + kernels.erf(a * a.dtype.type(1 / math.sqrt(2.0))))
        ctx.save_for_backward(a, cdf)
        return a * cdf

    @staticmethod
    def backward(ctx, grad):
        a, cdf = ctx.saved
        pdf = np.exp(a.dtype.type(-0.5) * a * a) * a.dtype.type(1 / math.sqrt(2 * math.pi))
        return grad * (cdf + a * pdf)


class Clamp(Function):
    """Clamp to [lo, hi]; the gradient passes only where the value was not clipped."""

    @staticmethod
    def forward(ctx, a, lo, hi):
        ctx.save_for_backward(a)
        ctx.bounds = (lo, hi)
        out = a
        if lo is not None:
            out = np.maximum(out, a.dtype.type(lo))
        if hi is not None:
            out = np.minimum(out, a.dtype.type(hi))
        return out

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        lo, hi = ctx.bounds
        keep = np.ones(a.shape, dtype=bool)
        if lo is not None:
            keep &= a >= lo
        if hi is not None:
            keep &= a <= hi
        return grad * keep


class Cast(Function):
    """Change dtype; the gradient is cast back (only between float dtypes)."""

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.src = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.src)


class Clone(Function):
    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, grad):
        return grad


# ----------------------------------------------------------------------------- public functions
def add(a, b):
    a, b = binary_operands(a, b)
    broadcast_shape("add", a.shape, b.shape)
    return Add.apply(a, b)


def sub(a, b):
    a, b = binary_operands(a, b)
    broadcast_shape("sub", a.shape, b.shape)
    return Sub.apply(a, b)


def mul(a, b):
    a, b = binary_operands(a, b)
    broadcast_shape("mul", a.shape, b.shape)
    return Mul.apply(a, b)


def div(a, b):
    a, b = binary_operands(a, b)
    broadcast_shape("div", a.shape, b.shape)
    if a.dtype.kind != "f" and b.dtype.kind != "f":  # true division of ints gives floats, as in PyTorch
        a, b = to_dtype(a, get_default_dtype()), to_dtype(b, get_default_dtype())
    return Div.apply(a, b)


def pow(a, b):  # noqa: A001 - mirrors torch.pow
    if isinstance(a, Tensor) and not isinstance(b, Tensor):
        return PowScalar.apply(a, b)
    a, b = binary_operands(a, b)
    broadcast_shape("pow", a.shape, b.shape)
    return Pow.apply(a, b)


def maximum(a, b):
    a, b = binary_operands(a, b)
    broadcast_shape("maximum", a.shape, b.shape)
    return Maximum.apply(a, b)


def minimum(a, b):
    a, b = binary_operands(a, b)
    broadcast_shape("minimum", a.shape, b.shape)
    return Minimum.apply(a, b)


def _as_bool_mask(mask, op):
    m = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if m.dtype != np.bool_:
        raise TypeError(f"{op}: the mask/condition must be a bool tensor, got dtype {m.dtype}")
    return m


def where(condition, x, y):
    """``x`` where ``condition`` is True, else ``y`` (all three broadcast together)."""
    cond = _as_bool_mask(condition, "where")
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        return Tensor(np.where(cond, x, y))
    x, y = binary_operands(x, y)
    broadcast_shape("where", cond.shape, x.shape, y.shape)
    return Where.apply(cond, x, y)


def masked_fill(x: Tensor, mask, value) -> Tensor:
    m = _as_bool_mask(mask, "masked_fill")
    shape = broadcast_shape("masked_fill", x.shape, m.shape)
    if shape != x.shape:
        raise ValueError(f"masked_fill: mask of shape {m.shape} must broadcast to the tensor's shape {x.shape}")
    if isinstance(value, Tensor):
        value = value.item()
    return MaskedFill.apply(x, m, value)


def neg(a):
    return Neg.apply(a)


def exp(a):
    check_float(a, "exp")
    return Exp.apply(a)


def log(a):
    check_float(a, "log")
    return Log.apply(a)


def sqrt(a):
    check_float(a, "sqrt")
    return Sqrt.apply(a)


def rsqrt(a):
    check_float(a, "rsqrt")
    return Rsqrt.apply(a)


def abs(a):  # noqa: A001 - mirrors torch.abs
    return Abs.apply(a)


def tanh(a):
    check_float(a, "tanh")
    return Tanh.apply(a)


def sigmoid(a):
    check_float(a, "sigmoid")
    return Sigmoid.apply(a)


def logsigmoid(a):
    """``log(sigmoid(a))``, numerically stable for any input (``torch.nn.functional.logsigmoid``)."""
    check_float(a, "logsigmoid")
    return LogSigmoid.apply(a)


def relu(a):
    return Relu.apply(a)


def silu(a):
    check_float(a, "silu")
    return Silu.apply(a)


def gelu(a, approximate: str = "none"):
    """GELU as in ``torch.nn.functional.gelu``: ``approximate="none"`` (erf) or ``"tanh"``."""
    check_float(a, "gelu")
    if approximate == "tanh":
        return GeluTanh.apply(a)
    if approximate == "none":
        return GeluErf.apply(a)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def clamp(a, min=None, max=None):  # noqa: A002 - PyTorch's names
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return Clamp.apply(a, min, max)


def to_dtype(a: Tensor, dtype) -> Tensor:
    dtype = np.dtype(dtype)
    if a.dtype == dtype:
        return a
    if a.requires_grad and dtype.kind == "f":
        return Cast.apply(a, dtype)
    return Tensor._wrap(a.data.astype(dtype))


def clone(a: Tensor) -> Tensor:
    return Clone.apply(a)


def compare(np_op, a, b) -> Tensor:
    """Comparison / logical ops: bool result, never part of the graph."""
    if not isinstance(b, Tensor):
        b = as_tensor_like(b, a) if isinstance(a, Tensor) else b
    a_data = a.data if isinstance(a, Tensor) else a
    b_data = b.data if isinstance(b, Tensor) else b
    broadcast_shape(np_op.__name__, np.shape(a_data), np.shape(b_data))
    return Tensor._wrap(np_op(a_data, b_data))

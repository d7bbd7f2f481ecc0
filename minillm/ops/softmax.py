"""softmax and log_softmax over any ``dim`` (Happy LLM 2.1: the attention weights).

Both are fused ops with a hand-written backward that runs on the kernel backend chosen
by ``minillm.set_kernels`` (NumPy reference or Numba). They are tested against the
composite ``exp(x - logsumexp(x))`` built from primitive ops.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function
from ..tensor import Tensor
from ._util import check_float, normalize_dim


def _to_last(a, axis):
    return a if axis == a.ndim - 1 else np.moveaxis(a, axis, -1)


def _from_last(a, axis):
    return a if axis == a.ndim - 1 else np.moveaxis(a, -1, axis)


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        y = _from_last(kernels.softmax_forward(np.ascontiguousarray(_to_last(x, axis))), axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        a = ctx.axis
        g = kernels.softmax_backward(np.ascontiguousarray(_to_last(y, a)), np.ascontiguousarray(_to_last(grad, a)))
        return _from_last(g, a)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        y = _from_last(kernels.log_softmax_forward(np.ascontiguousarray(_to_last(x, axis))), axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        a = ctx.axis
        g = kernels.log_softmax_backward(np.ascontiguousarray(_to_last(y, a)), np.ascontiguousarray(_to_last(grad, a)))
        return _from_last(g, a)


def softmax(x: Tensor, dim: int) -> Tensor:
    """exp(x_i) / Σ_j exp(x_j) along ``dim``; stable for logits of ±1e4 (shifted by the max)."""
    check_float(x, "softmax")
    if x.ndim == 0:
        x = x.reshape(1)
    return Softmax.apply(x, normalize_dim(dim, x.ndim, "softmax"))


def log_softmax(x: Tensor, dim: int) -> Tensor:
    """log(softmax(x)) along ``dim``, computed without ever taking log(0)."""
    check_float(x, "log_softmax")
    return LogSoftmax.apply(x, normalize_dim(dim, x.ndim, "log_softmax"))

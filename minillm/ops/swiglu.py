"""SwiGLU gate of the LLaMA MLP (Happy LLM 5.1.3.4): ``silu(a) * b`` as one fused node.

In the book's MLP, ``w2(F.silu(w1(x)) * w3(x))``; here ``a = w1(x)`` and ``b = w3(x)``.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function
from ..tensor import Tensor
from ._util import check_float


class SwiGLU(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        ctx.save_for_backward(a, b)
        return kernels.swiglu_forward(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return kernels.swiglu_backward(a, b, np.ascontiguousarray(grad))


def swiglu(a: Tensor, b: Tensor) -> Tensor:
    """silu(a) * b, elementwise.  a, b: same shape (..., hidden)."""
    check_float(a, "swiglu")
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"swiglu: a and b must have the same shape and dtype, got {a.shape}/{a.dtype} and {b.shape}/{b.dtype}")
    return SwiGLU.apply(a, b)

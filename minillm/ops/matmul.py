"""Matrix multiplication ``a @ b`` (1-D, 2-D, and batched with broadcast batch dims).

Forward: C = A·B. Backward: dA = dC·Bᵀ and dB = Aᵀ·dC, then sum over any batch dims that
were broadcast. 1-D operands are treated as a row (left) or column (right) vector, as in
NumPy/PyTorch, and the added axis is removed again.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function, unbroadcast
from ..tensor import Tensor
from ._util import binary_operands


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return kernels.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        # Promote 1-D operands to matrices so one formula covers every case.
        a2 = a[None, :] if a.ndim == 1 else a  # (K,) -> (1, K)
        b2 = b[:, None] if b.ndim == 1 else b  # (K,) -> (K, 1)
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        g = grad.reshape(batch + (a2.shape[-2], b2.shape[-1]))  # put back the axes of size 1: (..., M, N)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = kernels.matmul(g, b2, trans_b=True)  # (..., M, N) @ (..., N, K) -> (..., M, K)
            ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            gb = kernels.matmul(a2, g, trans_a=True)  # (..., K, M) @ (..., M, N) -> (..., K, N)
            gb = unbroadcast(gb, b2.shape).reshape(b.shape)
        return ga, gb


def matmul(a, b) -> Tensor:
    a, b = binary_operands(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dim, got shapes {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned ({k_a} != {k_b})")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dims of {a.shape} and {b.shape} cannot be broadcast together") from None
    if a.dtype != b.dtype:
        dtype = np.result_type(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
    return MatMul.apply(a, b)

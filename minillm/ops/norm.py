"""Normalisation layers' maths: RMSNorm (Happy LLM 5.1.3.1, fused) and LayerNorm (2.2, composite).

RMSNorm: y = x / sqrt(mean(x²) + eps) * weight. One fused node whose backward
(a Numba kernel or its NumPy twin) gives the gradients of x and weight together.
LayerNorm is written from primitive ops, so its backward is autograd's.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function
from ..tensor import Tensor
from ._util import check_float


class RMSNormFn(Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        x = np.ascontiguousarray(x)
        y, rstd = kernels.rmsnorm_forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved
        gx, gw = kernels.rmsnorm_backward(x, weight, rstd, np.ascontiguousarray(grad))
        return gx, gw


def _check_normalized_shape(x, normalized_shape, op):
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if len(ns) != 1 or x.shape[-1:] != ns:
        raise ValueError(f"{op}: normalized_shape {ns} must equal the last dim of the input (shape {x.shape}); only the last dim is supported")


def rms_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, eps: float = 1e-6) -> Tensor:  # noqa: A002
    """RMSNorm over the last dim.  input: (..., C); weight: (C,) or None (= ones)."""
    check_float(input, "rms_norm")
    _check_normalized_shape(input, normalized_shape, "rms_norm")
    if weight is None:
        weight = Tensor._wrap(np.ones(input.shape[-1:], dtype=input.dtype))
    if weight.shape != input.shape[-1:]:
        raise ValueError(f"rms_norm: weight of shape {weight.shape} does not match the input's last dim {input.shape[-1]}")
    return RMSNormFn.apply(input, weight, float(eps))


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:  # noqa: A002
    """LayerNorm over the last dim: (x - mean) / sqrt(var + eps) * weight + bias (biased variance)."""
    check_float(input, "layer_norm")
    _check_normalized_shape(input, normalized_shape, "layer_norm")
    mean = input.mean(dim=-1, keepdim=True)  # (..., C) -> (..., 1)
    centered = input - mean  # (..., C)
    var = (centered * centered).mean(dim=-1, keepdim=True)  # (..., 1)
    y = centered * (var + eps).rsqrt()  # (..., C)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y

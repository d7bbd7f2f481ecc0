"""Normalisation layers' maths: RMSNorm (Happy LLM 5.1.2) and LayerNorm (2.2.3), each fused.

RMSNorm: y = x / sqrt(mean(x²) + eps) * weight.
LayerNorm: y = (x - mean) / sqrt(var + eps) * weight + bias (biased variance, as PyTorch).
Each is one node whose backward (a Numba kernel or its NumPy twin in kernels/reference.py)
gives the gradients of x and the parameters together. ``layer_norm_composite`` writes
LayerNorm from primitive ops, the version to read first; tests check the two agree.
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


class LayerNormFn(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        x = np.ascontiguousarray(x)
        y, mean, rstd = kernels.layernorm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, rstd = ctx.saved
        return kernels.layernorm_backward(x, weight, mean, rstd, np.ascontiguousarray(grad))


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
    """LayerNorm over the last dim, one fused node.  input: (..., C); weight, bias: (C,) or None."""
    check_float(input, "layer_norm")
    _check_normalized_shape(input, normalized_shape, "layer_norm")
    C = input.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (C,):
            raise ValueError(f"layer_norm: {name} of shape {p.shape} does not match the input's last dim {C}")
    weight = Tensor._wrap(np.ones(C, dtype=input.dtype)) if weight is None else weight  # no affine = 1·x̂ + 0
    bias = Tensor._wrap(np.zeros(C, dtype=input.dtype)) if bias is None else bias
    return LayerNormFn.apply(input, weight, bias, float(eps))


def layer_norm_composite(input: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
                         eps: float = 1e-5) -> Tensor:  # noqa: A002
    """The same LayerNorm from primitive ops (autograd differentiates it): read this one first."""
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

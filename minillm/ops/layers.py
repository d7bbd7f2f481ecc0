"""The functional form of the basic layers: ``linear``, ``embedding``, ``dropout``.

``linear`` is one node (y = x·Wᵀ + b) whose backward is two matmuls on BLAS:
dx = dy·W and dW = dyᵀ·x summed over every row of the batch.
``embedding`` is a row lookup whose backward is a scatter-add (repeated ids accumulate).
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from .. import random as _random
from ..autograd import Function
from ..tensor import Tensor
from ._util import check_float, check_ids


class Linear(Function):
    @staticmethod
    def forward(ctx, x, weight, bias=None):
        ctx.save_for_backward(x, weight)
        # One GEMM over all rows: (..., in) -> (N, in) @ (out, in)ᵀ -> (N, out) -> (..., out)
        y = kernels.matmul(x.reshape(-1, x.shape[-1]), weight, trans_b=True).reshape(x.shape[:-1] + weight.shape[:1])
        if bias is not None:
            y += bias
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved
        n_out, n_in = weight.shape
        g2 = grad.reshape(-1, n_out)  # (..., out) -> (N, out)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = kernels.matmul(g2, weight).reshape(x.shape)  # (N, out) @ (out, in) -> (N, in) -> (..., in)
        if ctx.needs_input_grad[1]:
            gw = kernels.matmul(g2, x.reshape(-1, n_in), trans_a=True)  # (out, N) @ (N, in) -> (out, in)
        if len(ctx.needs_input_grad) > 2 and ctx.needs_input_grad[2]:
            gb = g2.sum(axis=0)  # (N, out) -> (out,)
        return (gx, gw, gb) if len(ctx.needs_input_grad) > 2 else (gx, gw)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """y = x·Wᵀ + b.  input: (..., in_features); weight: (out_features, in_features); bias: (out_features,)."""
    check_float(input, "linear")
    if weight.ndim != 2 or input.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear: input of shape {input.shape} does not match weight of shape {weight.shape} (expected (..., {weight.shape[-1]}))")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"linear: bias of shape {bias.shape} does not match weight of shape {weight.shape}")
    if input.dtype != weight.dtype:
        raise TypeError(f"linear: input dtype {input.dtype} differs from weight dtype {weight.dtype}")
    if bias is None:
        return Linear.apply(input, weight)
    return Linear.apply(input, weight, bias)


class Embedding(Function):
    @staticmethod
    def forward(ctx, weight, ids, padding_idx):
        ctx.args = (ids, weight.shape, padding_idx)
        return weight[ids]  # (V, C)[(...)] -> (..., C)

    @staticmethod
    def backward(ctx, grad):
        ids, (n_rows, dim), padding_idx = ctx.args
        flat_ids = np.ascontiguousarray(ids.reshape(-1))  # (...) -> (N,)
        g = kernels.embedding_backward(flat_ids, np.ascontiguousarray(grad.reshape(-1, dim)), n_rows)  # (V, C)
        if padding_idx is not None:
            g[padding_idx] = 0  # the padding row never learns
        return g


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:  # noqa: A002
    """Look up rows of ``weight`` (num_embeddings, dim) for integer ids ``input`` (any shape)."""
    ids = input if isinstance(input, Tensor) else Tensor(input)
    check_ids(ids, "embedding", weight.shape[0], name="token id")
    return Embedding.apply(weight, ids.data.astype(np.int64, copy=False), padding_idx)


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, p):
        keep = _random.default_generator().random(x.shape, dtype=np.float32) >= p  # (...) bool
        scale = x.dtype.type(1.0 / (1.0 - p))
        mask = keep * scale  # kept units are scaled so the expected value is unchanged
        mask = mask.astype(x.dtype, copy=False)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved
        return grad * mask


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:  # noqa: A002
    """Zero each element with probability ``p`` (training only), scaling the rest by 1/(1-p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    return Dropout.apply(input, float(p))

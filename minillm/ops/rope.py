"""Rotary position embedding (Happy LLM 5.1.3.2) as one fused node.

The book rotates *adjacent pairs*: dims (2i, 2i+1) of each head at position t are turned
by the angle θ_{t,i} = t / theta^(2i/D). (Hugging Face rotates *halves*, (i, i + D/2);
``minillm.io.export_hf`` permutes the wq/wk rows so both give the same model.)
A rotation's backward is the rotation by -θ.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function
from ..tensor import Tensor
from ._util import check_float


class RoPE(Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return kernels.rope_forward(np.ascontiguousarray(x), cos, sin)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved
        return kernels.rope_backward(np.ascontiguousarray(grad), cos, sin)


def rotary_embedding(x: Tensor, cos, sin) -> Tensor:
    """Rotate interleaved pairs of ``x``.  x: (B, T, H, D); cos, sin: (T, D // 2) (tensors or arrays)."""
    check_float(x, "rotary_embedding")
    cos = np.ascontiguousarray(cos.data if isinstance(cos, Tensor) else cos, dtype=x.dtype)
    sin = np.ascontiguousarray(sin.data if isinstance(sin, Tensor) else sin, dtype=x.dtype)
    if x.ndim != 4 or x.shape[-1] % 2 or cos.shape != (x.shape[1], x.shape[-1] // 2) or sin.shape != cos.shape:
        raise ValueError(
            f"rotary_embedding: expected x (B, T, H, D) with even D and cos/sin (T, D/2); got x {x.shape}, "
            f"cos {cos.shape}, sin {sin.shape}"
        )
    return RoPE.apply(x, cos, sin)

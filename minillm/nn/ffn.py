"""The position-wise feed-forward network of a Transformer block (Happy LLM 2.2.2).

    FFN(x) = dropout( w2( act( w1 x ) ) ),   act = ReLU (the 2017 paper, the book) or GELU (BERT, GPT)

``activation="gelu"`` is the exact erf GELU (BERT); ``"gelu_tanh"`` its tanh approximation
0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), which GPT-2 uses (Hugging Face's ``gelu_new``).

The same two matrices act on every position separately: w1 widens (dim -> hidden_dim,
usually 4·dim), w2 narrows back. LLaMA's gated SwiGLU variant lives in ``models/llama.py``.
"""
from __future__ import annotations

from ..tensor import Tensor
from . import functional as F
from .layers import Dropout, Linear
from .module import Module

__all__ = ["FeedForward", "ACTIVATIONS"]

def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": _gelu_tanh}


class FeedForward(Module):
    """x (..., dim) -> (..., dim) through w1 (dim -> hidden_dim), ``activation``, w2, dropout."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, activation: str = "relu", bias: bool = True, dtype=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"FeedForward: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.w1 = Linear(dim, hidden_dim, bias=bias, dtype=dtype)
        self.w2 = Linear(hidden_dim, dim, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = ACTIVATIONS[self.activation](self.w1(x))  # (..., dim) -> (..., hidden_dim)
        return self.dropout(self.w2(h))  # (..., hidden_dim) -> (..., dim)

    def extra_repr(self):
        return f"activation={self.activation!r}"

"""The basic layers: ``Linear``, ``Embedding``, ``RMSNorm``, ``LayerNorm``, ``Dropout``.

Each one holds its parameters and calls one functional op (``minillm.nn.functional``)
in ``forward``; the maths and its gradient live in ``minillm/ops``.
"""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor, get_default_dtype
from . import functional as F
from . import init
from .module import Module, Parameter

__all__ = ["Linear", "Embedding", "RMSNorm", "LayerNorm", "Dropout", "Identity"]


def _positive_int(value, name, cls):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{cls}: {name} must be a positive int, got {value!r}")
    return int(value)


def _empty(shape, dtype):
    return np.empty(shape, dtype=np.dtype(dtype or get_default_dtype()))


class Linear(Module):
    """y = x·Wᵀ + b.  weight: (out_features, in_features); bias: (out_features,) or None.

    Initialised like PyTorch: U(-1/√in_features, 1/√in_features) for both (models such as
    LLaMA re-initialise with N(0, 0.02)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features", "Linear")
        self.out_features = _positive_int(out_features, "out_features", "Linear")
        self.weight = Parameter(_empty((self.out_features, self.in_features), dtype))
        if bias:
            self.bias = Parameter(_empty((self.out_features,), dtype))
        else:
            self.register_parameter("bias", None)  # `layer.bias` is None, as in PyTorch
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # = U(-1/√in, 1/√in)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)  # (..., in) -> (..., out)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: token id -> row of ``weight`` (num_embeddings, embedding_dim), init N(0, 1).

    ``padding_idx``: that row starts at zero and never receives a gradient.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, dtype=None):
        super().__init__()
        self.num_embeddings = _positive_int(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = _positive_int(embedding_dim, "embedding_dim", "Embedding")
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} must be within [-{self.num_embeddings}, {self.num_embeddings})")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self.weight = Parameter(_empty((self.num_embeddings, self.embedding_dim), dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, input_ids) -> Tensor:
        return F.embedding(input_ids, self.weight, self.padding_idx)  # (...) -> (..., embedding_dim)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")


class RMSNorm(Module):
    """y = x / √(mean(x²) + eps) · weight over the last dim (one fused op, ``F.rms_norm``)."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True, dtype=None):
        super().__init__()
        self.dim = _positive_int(dim, "dim", "RMSNorm")
        if eps <= 0:
            raise ValueError(f"RMSNorm: eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.weight = Parameter(np.ones(self.dim, dtype=np.dtype(dtype or get_default_dtype()))) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (self.dim,), self.weight, self.eps)  # (..., dim) -> (..., dim)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class LayerNorm(Module):
    """y = (x - mean) / √(var + eps) · weight + bias over the last dim (Happy LLM 2.2)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, (tuple, list)):
            if len(normalized_shape) != 1:
                raise ValueError(f"LayerNorm: only the last dim can be normalised, got normalized_shape={normalized_shape}")
            normalized_shape = normalized_shape[0]
        self.dim = _positive_int(normalized_shape, "normalized_shape", "LayerNorm")
        self.eps = float(eps)
        dt = np.dtype(dtype or get_default_dtype())
        self.weight = Parameter(np.ones(self.dim, dtype=dt)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.dim, dtype=dt)) if elementwise_affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)  # (..., dim) -> (..., dim)

    def extra_repr(self):
        return f"({self.dim},), eps={self.eps}, elementwise_affine={self.weight is not None}"


class Dropout(Module):
    """During training, zero each element with probability ``p`` and scale the rest by 1/(1-p);
    in eval mode (``model.eval()``), pass the input through unchanged."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Identity(Module):
    """Returns its input (a placeholder layer)."""

    def forward(self, x):
        return x


"""Weight initialisation, in place, with PyTorch's names: ``nn.init.normal_(w, 0.0, 0.02)``.

Each function overwrites ``tensor.data`` (no graph is recorded) with numbers drawn from
the library's seeded generator (``mi.manual_seed``), in the tensor's own dtype, and
returns the tensor.

fan_in / fan_out of a weight of shape (out_features, in_features) are in_features /
out_features; Xavier keeps the variance of activations and gradients balanced, Kaiming
keeps it for ReLU-like layers (PyTorch's ``nn.Linear`` default is ``kaiming_uniform_``
with ``a=√5``, i.e. U(-1/√fan_in, 1/√fan_in)).
"""
from __future__ import annotations

import math

import numpy as np

from .. import random as _random
from ..tensor import Tensor

__all__ = [
    "calculate_gain", "constant_", "kaiming_uniform_", "normal_", "ones_", "uniform_", "xavier_uniform_",
    "zeros_",
]


def _check(tensor, op):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"nn.init.{op}: expected a Tensor or Parameter, got {type(tensor).__name__}")
    if tensor.dtype.kind != "f":
        raise TypeError(f"nn.init.{op}: expected a floating point tensor, got dtype {tensor.dtype}")


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill with N(mean, std²)."""
    _check(tensor, "normal_")
    if std < 0:
        raise ValueError(f"nn.init.normal_: std must be >= 0, got {std}")
    rng = _random.default_generator()
    tensor.data[...] = rng.standard_normal(tensor.shape, dtype=tensor.dtype) * tensor.dtype.type(std) + tensor.dtype.type(mean)
    return tensor


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill with U(a, b)."""
    _check(tensor, "uniform_")
    if b < a:
        raise ValueError(f"nn.init.uniform_: need a <= b, got a={a}, b={b}")
    rng = _random.default_generator()
    tensor.data[...] = rng.random(tensor.shape, dtype=tensor.dtype) * tensor.dtype.type(b - a) + tensor.dtype.type(a)
    return tensor


def constant_(tensor: Tensor, val: float) -> Tensor:
    _check(tensor, "constant_")
    tensor.data[...] = val
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def _fans(tensor: Tensor, op: str):
    if tensor.ndim < 2:
        raise ValueError(f"nn.init.{op}: fan in/out need a tensor with at least 2 dims, got shape {tensor.shape}")
    receptive = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive  # (fan_in, fan_out)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for an activation (PyTorch's table, the common entries)."""
    if nonlinearity in ("linear", "sigmoid", "conv1d", "conv2d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """U(-a, a) with a = gain·√(6 / (fan_in + fan_out))  (Glorot & Bengio, 2010)."""
    _check(tensor, "xavier_uniform_")
    fan_in, fan_out = _fans(tensor, "xavier_uniform_")
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a)


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    """U(-b, b) with b = gain·√(3 / fan)  (He et al., 2015); ``a`` is the leaky-ReLU slope."""
    _check(tensor, "kaiming_uniform_")
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"nn.init.kaiming_uniform_: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(tensor, "kaiming_uniform_")
    fan = fan_in if mode == "fan_in" else fan_out
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound)

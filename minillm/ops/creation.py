"""Creating tensors: ``mi.tensor``, ``zeros``, ``ones``, ``full``, ``arange``, ``randn``, ``rand``...

Shapes can be given as separate ints or one tuple (``mi.zeros(2, 3)`` or ``mi.zeros((2, 3))``).
Random tensors come from the generator seeded by ``mi.manual_seed``.
"""
from __future__ import annotations

import numpy as np

from .. import random as _random
from ..tensor import Tensor, get_default_dtype


def _shape(size) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    shape = tuple(int(s) for s in size)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return shape


def _finish(arr, requires_grad):
    return Tensor(arr, requires_grad=requires_grad)


def tensor(data, dtype=None, requires_grad: bool = False) -> Tensor:
    """Make a tensor from a list, scalar or NumPy array (copied). Python floats -> float32, ints -> int64."""
    t = Tensor(data, dtype=dtype, requires_grad=requires_grad)
    if isinstance(data, (np.ndarray, Tensor)) and t.data is (data.data if isinstance(data, Tensor) else data):
        t.data = t.data.copy()  # like torch.tensor: never alias the caller's array
    return t


def from_numpy(array: np.ndarray) -> Tensor:
    """Wrap a NumPy array without copying (changes to one show in the other)."""
    return Tensor(array)


def zeros(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    return _finish(np.zeros(_shape(size), dtype=dtype or get_default_dtype()), requires_grad)


def ones(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    return _finish(np.ones(_shape(size), dtype=dtype or get_default_dtype()), requires_grad)


def empty(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    return _finish(np.empty(_shape(size), dtype=dtype or get_default_dtype()), requires_grad)


def full(size, fill_value, dtype=None, requires_grad: bool = False) -> Tensor:
    if dtype is None:
        dtype = np.asarray(fill_value).dtype
        dtype = get_default_dtype() if dtype.kind == "f" else (np.int64 if dtype.kind in "iu" else dtype)
    return _finish(np.full(_shape((size,) if isinstance(size, int) else (size,)), fill_value, dtype=dtype), requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    return _finish(np.zeros(t.shape, dtype=dtype or t.dtype), requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    return _finish(np.ones(t.shape, dtype=dtype or t.dtype), requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, requires_grad: bool = False) -> Tensor:
    return _finish(np.full(t.shape, fill_value, dtype=dtype or t.dtype), requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad: bool = False) -> Tensor:
    """``arange(5)`` -> 0..4 (int64); float arguments give the default float dtype."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, end, step))
        dtype = get_default_dtype() if is_float else np.int64
    return _finish(np.arange(start, end, step, dtype=dtype), requires_grad)


def linspace(start, end, steps, dtype=None) -> Tensor:
    return Tensor(np.linspace(start, end, steps, dtype=dtype or get_default_dtype()))


def eye(n, m=None, dtype=None) -> Tensor:
    return Tensor(np.eye(n, m, dtype=dtype or get_default_dtype()))


def randn(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the global seeded generator."""
    dtype = np.dtype(dtype or get_default_dtype())
    return _finish(_random.default_generator().standard_normal(_shape(size), dtype=dtype), requires_grad)


def rand(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1) from the global seeded generator."""
    dtype = np.dtype(dtype or get_default_dtype())
    return _finish(_random.default_generator().random(_shape(size), dtype=dtype), requires_grad)


def randint(low, high=None, size=(), dtype=np.int64) -> Tensor:
    if high is None:
        low, high = 0, low
    return Tensor(_random.default_generator().integers(low, high, size=size, dtype=dtype))


def randperm(n: int) -> Tensor:
    return Tensor(_random.default_generator().permutation(n).astype(np.int64))

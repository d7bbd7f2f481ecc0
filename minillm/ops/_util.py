"""Small helpers shared by the ops: turning arguments into tensors, checking dims and shapes."""
from __future__ import annotations

import numbers

import numpy as np

from .._checks import check_token_ids
from ..tensor import Tensor, get_default_dtype


def as_tensor_like(value, like: Tensor) -> Tensor:
    """Turn a Python/NumPy scalar into a tensor with ``like``'s dtype (no float32 -> float64 upcast).

    Integer tensors combined with a Python float become the default float dtype, as in PyTorch.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, (bool, np.bool_)):
        dtype = like.dtype
        if dtype.kind != "f" and isinstance(value, (float, np.floating)):
            dtype = get_default_dtype()
        elif dtype.kind == "b":
            dtype = np.dtype("int64")
        return Tensor._wrap(np.asarray(value, dtype=dtype))
    if isinstance(value, (bool, np.bool_)):
        return Tensor._wrap(np.asarray(value, dtype=like.dtype))
    return Tensor(value)


def binary_operands(a, b):
    """Both operands as tensors; scalars adopt the other operand's dtype.

    An integer tensor meeting a float one is cast to that float dtype first, so
    ``ids * 0.5`` is float32 (as in PyTorch), never NumPy's float64.
    """
    if isinstance(a, Tensor):
        b = as_tensor_like(b, a)
    elif isinstance(b, Tensor):
        a = as_tensor_like(a, b)
    else:
        raise TypeError("expected at least one Tensor operand")
    if a.dtype.kind == "f" and b.dtype.kind in "iub":
        b = Tensor._wrap(b.data.astype(a.dtype))
    elif b.dtype.kind == "f" and a.dtype.kind in "iub":
        a = Tensor._wrap(a.data.astype(b.dtype))
    return a, b


def broadcast_shape(op: str, *shapes) -> tuple:
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} cannot be broadcast together") from None


def normalize_dim(dim: int, ndim: int, op: str = "dim") -> int:
    """Map a possibly negative ``dim`` into ``range(ndim)`` with a clear error."""
    if not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}: dim must be an int, got {type(dim).__name__}")
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dims (expected -{n} <= dim < {n})")
    return int(dim) % n


def normalize_dims(dim, ndim: int, op: str = "dim"):
    """``None`` -> all axes; int or tuple -> sorted tuple of positive axes."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (list, tuple)):
        axes = tuple(normalize_dim(d, ndim, op) for d in dim)
        if len(set(axes)) != len(axes):
            raise ValueError(f"{op}: dim {dim} names an axis twice")
        return tuple(sorted(axes))
    return (normalize_dim(dim, ndim, op),)


def check_float(t: Tensor, op: str) -> None:
    if t.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating point tensor, got dtype {t.dtype}")


def check_ids(t: Tensor, op: str, upper: int | None = None, name: str = "ids") -> None:
    """Token ids / indices must be integers (and, with ``upper``, inside ``[0, upper)``)."""
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must be an integer tensor (e.g. int64), got dtype {t.dtype}")
    if upper is not None:
        check_token_ids(t.data, upper, op, name=name)

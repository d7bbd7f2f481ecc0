"""Shape and movement ops: reshape/view, transpose/permute, expand, squeeze/unsqueeze,
flatten, contiguous, cat/stack/split/chunk, tril/triu, repeat_interleave.

Each backward is the inverse movement: reshape <-> reshape back, permute <-> inverse
permute, expand <-> sum, cat <-> slice.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, unbroadcast
from ..tensor import Tensor
from ._util import normalize_dim


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


class Permute(Function):
    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return np.transpose(a, dims)

    @staticmethod
    def backward(ctx, grad):
        return np.transpose(grad, np.argsort(ctx.dims))


class Expand(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return np.broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shape)


class Contiguous(Function):
    @staticmethod
    def forward(ctx, a):
        return np.ascontiguousarray(a)

    @staticmethod
    def backward(ctx, grad):
        return grad


class Cat(Function):
    @staticmethod
    def forward(ctx, axis, *arrays):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        bounds = np.cumsum(ctx.sizes)[:-1]
        return tuple(np.split(grad, bounds, axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, axis, *arrays):
        ctx.axis = axis
        return np.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.moveaxis(grad, ctx.axis, 0))


class Tri(Function):
    """tril/triu: keep the lower/upper triangle of the last two dims (and its gradient)."""

    @staticmethod
    def forward(ctx, a, diagonal, upper):
        ctx.args = (diagonal, upper)
        return np.triu(a, diagonal) if upper else np.tril(a, diagonal)

    @staticmethod
    def backward(ctx, grad):
        diagonal, upper = ctx.args
        return np.triu(grad, diagonal) if upper else np.tril(grad, diagonal)


class RepeatInterleave(Function):
    @staticmethod
    def forward(ctx, a, repeats, axis):
        ctx.args = (repeats, axis, a.shape)
        return np.repeat(a, repeats, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        repeats, axis, shape = ctx.args
        # each input slice was copied `repeats` times in a row: sum those copies
        new_shape = shape[:axis] + (shape[axis], repeats) + shape[axis + 1 :]
        return grad.reshape(new_shape).sum(axis=axis + 1)


# ----------------------------------------------------------------------------- public functions
def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def reshape(x: Tensor, *shape) -> Tensor:
    shape = _shape_arg(shape)
    n_infer = sum(1 for s in shape if s == -1)
    known = int(np.prod([s for s in shape if s != -1])) if shape else 1
    if n_infer > 1 or any(s < -1 for s in shape) or (
        (n_infer == 0 and known != x.data.size) or (n_infer == 1 and (known == 0 or x.data.size % known))
    ):
        raise ValueError(f"reshape/view: shape {shape} is invalid for a tensor of shape {x.shape} ({x.data.size} elements)")
    return Reshape.apply(x, shape)


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    d0, d1 = normalize_dim(dim0, x.ndim, "transpose"), normalize_dim(dim1, x.ndim, "transpose")
    dims = list(range(x.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return Permute.apply(x, tuple(dims))


def permute(x: Tensor, *dims) -> Tensor:
    dims = _shape_arg(dims)
    if len(dims) != x.ndim:
        raise ValueError(f"permute: got {len(dims)} dims {dims} for a tensor with {x.ndim} dims")
    dims = tuple(normalize_dim(d, x.ndim, "permute") for d in dims)
    if sorted(dims) != list(range(x.ndim)):
        raise ValueError(f"permute: dims {dims} must be a permutation of 0..{x.ndim - 1}")
    return Permute.apply(x, dims)


def expand(x: Tensor, *sizes) -> Tensor:
    sizes = _shape_arg(sizes)
    if len(sizes) < x.ndim:
        raise ValueError(f"expand: the number of sizes {len(sizes)} must be >= the tensor's dims {x.ndim} (shape {x.shape})")
    lead = len(sizes) - x.ndim
    target = tuple(x.shape[i - lead] if (s == -1 and i >= lead) else s for i, s in enumerate(sizes))
    for i in range(x.ndim):
        if x.shape[i] != 1 and x.shape[i] != target[lead + i]:
            raise ValueError(f"expand: cannot expand shape {x.shape} to {sizes} (dim {i} has size {x.shape[i]}, not 1)")
    return Expand.apply(x, target)


def squeeze(x: Tensor, dim=None) -> Tensor:
    if dim is None:
        shape = tuple(s for s in x.shape if s != 1)
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        axes = {normalize_dim(d, x.ndim, "squeeze") for d in dims}
        shape = tuple(s for i, s in enumerate(x.shape) if not (i in axes and s == 1))
    return Reshape.apply(x, shape)


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    axis = normalize_dim(dim, x.ndim + 1, "unsqueeze")
    return Reshape.apply(x, x.shape[:axis] + (1,) + x.shape[axis:])


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if x.ndim == 0:
        return Reshape.apply(x, (1,))
    s, e = normalize_dim(start_dim, x.ndim, "flatten"), normalize_dim(end_dim, x.ndim, "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    shape = x.shape[:s] + (int(np.prod(x.shape[s : e + 1])),) + x.shape[e + 1 :]
    return Reshape.apply(x, shape)


def contiguous(x: Tensor) -> Tensor:
    if x.data.flags["C_CONTIGUOUS"]:
        return x
    return Contiguous.apply(x)


def _tensors_arg(tensors, op):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty list of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected tensors, got {type(t).__name__}")
    return tensors


def cat(tensors, dim: int = 0) -> Tensor:
    """Concatenate along an existing ``dim``; all other dims must match."""
    tensors = _tensors_arg(tensors, "cat")
    ref = tensors[0]
    axis = normalize_dim(dim, ref.ndim, "cat")
    for t in tensors[1:]:
        if t.ndim != ref.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref.shape)) if i != axis):
            raise ValueError(f"cat: shapes {ref.shape} and {t.shape} differ outside dim {axis}")
    dtype = np.result_type(*[t.dtype for t in tensors])
    tensors = [t if t.dtype == dtype else t.to(dtype) for t in tensors]
    return Cat.apply(axis, *tensors)


def stack(tensors, dim: int = 0) -> Tensor:
    """Join along a new ``dim``; all shapes must be equal."""
    tensors = _tensors_arg(tensors, "stack")
    ref = tensors[0]
    for t in tensors[1:]:
        if t.shape != ref.shape:
            raise ValueError(f"stack: all tensors must have the same shape, got {ref.shape} and {t.shape}")
    axis = normalize_dim(dim, ref.ndim + 1, "stack")
    dtype = np.result_type(*[t.dtype for t in tensors])
    tensors = [t if t.dtype == dtype else t.to(dtype) for t in tensors]
    return Stack.apply(axis, *tensors)


def split(x: Tensor, split_size_or_sections, dim: int = 0):
    """Split into pieces of ``split_size`` (last may be smaller) or of the given ``sections``."""
    from .index import getitem

    axis = normalize_dim(dim, x.ndim, "split")
    n = x.shape[axis]
    if isinstance(split_size_or_sections, (int, np.integer)):
        size = int(split_size_or_sections)
        if size <= 0:
            raise ValueError(f"split: split_size must be positive, got {size}")
        sizes = [min(size, n - i) for i in range(0, n, size)] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} sum to {sum(sizes)}, but dim {axis} has size {n}")
    pieces, start = [], 0
    for s in sizes:
        index = (slice(None),) * axis + (slice(start, start + s),)
        pieces.append(getitem(x, index))
        start += s
    return tuple(pieces)


def chunk(x: Tensor, chunks: int, dim: int = 0):
    """Split into ``chunks`` pieces of ceil(n / chunks) (PyTorch's rule; may return fewer)."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    n = x.shape[normalize_dim(dim, x.ndim, "chunk")]
    return split(x, max(1, -(-n // chunks)), dim)


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    if x.ndim < 2:
        raise ValueError(f"tril: expected at least 2 dims, got shape {x.shape}")
    return Tri.apply(x, diagonal, False)


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    if x.ndim < 2:
        raise ValueError(f"triu: expected at least 2 dims, got shape {x.shape}")
    return Tri.apply(x, diagonal, True)


def repeat_interleave(x: Tensor, repeats: int, dim: int) -> Tensor:
    """Repeat each slice along ``dim`` ``repeats`` times in a row (torch.repeat_interleave)."""
    if not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeat_interleave: repeats must be a positive int, got {repeats!r}")
    return RepeatInterleave.apply(x, int(repeats), normalize_dim(dim, x.ndim, "repeat_interleave"))

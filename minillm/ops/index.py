"""Indexing: ``x[...]`` (basic slices and integer arrays), ``gather``, ``index_select``.

The backward of reading elements is *writing* the gradient back to where they came from.
With integer arrays the same element can be read several times (an embedding lookup with
a repeated token id), so the backward must **add** (``np.add.at``, a scatter-add), not assign.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from ._util import check_ids, normalize_dim


def raw_index(index):
    """Replace Tensors inside an index by their arrays (and validate their dtype)."""
    if isinstance(index, tuple):
        return tuple(raw_index(i) for i in index)
    if isinstance(index, Tensor):
        if index.dtype.kind not in "iub":
            raise IndexError(f"tensors used as indices must be integer or bool, got dtype {index.dtype}")
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _is_advanced(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, np.ndarray) and i.ndim > 0 for i in items)


class GetItem(Function):
    @staticmethod
    def forward(ctx, a, index):
        ctx.args = (a.shape, a.dtype, index)
        return a[index]

    @staticmethod
    def backward(ctx, grad):
        shape, dtype, index = ctx.args
        out = np.zeros(shape, dtype=grad.dtype)
        if _is_advanced(index):
            np.add.at(out, index, grad)  # repeated indices accumulate
        else:
            out[index] = grad  # basic slicing never repeats an element
        return out


class Gather(Function):
    """out[i][j][k] = a[i][index[i][j][k]][k] for dim=1 (torch.gather)."""

    @staticmethod
    def forward(ctx, a, axis, index):
        ctx.args = (a.shape, axis, index)
        return np.take_along_axis(a, index, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        shape, axis, index = ctx.args
        out = np.zeros(shape, dtype=grad.dtype)
        # scatter-add along `axis`: build full index arrays for np.add.at
        idx = list(np.indices(index.shape, sparse=True))
        idx[axis] = index
        np.add.at(out, tuple(idx), grad)
        return out


class IndexSelect(Function):
    @staticmethod
    def forward(ctx, a, axis, index):
        ctx.args = (a.shape, axis, index)
        return np.take(a, index, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        shape, axis, index = ctx.args
        out = np.zeros(shape, dtype=grad.dtype)
        moved = np.moveaxis(out, axis, 0)  # a view: writes land in `out`
        np.add.at(moved, index, np.moveaxis(grad, axis, 0))
        return out


def getitem(x: Tensor, index) -> Tensor:
    index = raw_index(index)
    try:
        return GetItem.apply(x, index)
    except IndexError as e:
        raise IndexError(f"bad index for a tensor of shape {x.shape}: {e}") from None


def gather(x: Tensor, dim: int, index: Tensor) -> Tensor:
    axis = normalize_dim(dim, x.ndim, "gather")
    idx = index if isinstance(index, Tensor) else Tensor(index)
    check_ids(idx, "gather", x.shape[axis], name="index")
    if idx.ndim != x.ndim:
        raise ValueError(f"gather: index has {idx.ndim} dims but the input has {x.ndim} (shapes {idx.shape} and {x.shape})")
    return Gather.apply(x, axis, idx.data)


def index_select(x: Tensor, dim: int, index: Tensor) -> Tensor:
    axis = normalize_dim(dim, x.ndim, "index_select")
    idx = index if isinstance(index, Tensor) else Tensor(index)
    check_ids(idx, "index_select", x.shape[axis], name="index")
    if idx.ndim != 1:
        raise ValueError(f"index_select: index must be 1-D, got shape {idx.shape}")
    return IndexSelect.apply(x, axis, idx.data)

"""Reductions: sum, mean, max/min, var/std, logsumexp, argmax (PyTorch's ``dim=``/``keepdim=``).

The backward of a reduction is a broadcast: the gradient of ``x.sum(dim)`` is the output
gradient copied back along the reduced axes (expand <-> sum are a symmetric pair).
"""
from __future__ import annotations

import builtins
from collections import namedtuple

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from ._util import check_float, normalize_dim, normalize_dims

MaxMin = namedtuple("MaxMin", ["values", "indices"])  # what torch.max(x, dim) returns


def _expand_back(grad: np.ndarray, shape: tuple, axes: tuple, keepdim: bool) -> np.ndarray:
    """Reinsert the reduced axes (if they were dropped) and broadcast to the input shape."""
    if not keepdim:
        grad = np.expand_dims(grad, axes)
    return np.broadcast_to(grad, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.args = (a.shape, axes, keepdim)
        return np.sum(a, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad):
        shape, axes, keepdim = ctx.args
        return np.ascontiguousarray(_expand_back(grad, shape, axes, keepdim))


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.args = (a.shape, axes, keepdim)
        return np.mean(a, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad):
        shape, axes, keepdim = ctx.args
        n = int(np.prod([shape[i] for i in axes])) if axes else 1
        return np.ascontiguousarray(_expand_back(grad / grad.dtype.type(n), shape, axes, keepdim))


class AMax(Function):
    """Max over axes; ties share the gradient evenly (as torch.amax)."""

    @staticmethod
    def forward(ctx, a, axes, keepdim, use_min):
        out = (np.min if use_min else np.max)(a, axis=axes, keepdims=True)
        ctx.save_for_backward(a, out)
        ctx.args = (axes, keepdim)
        return out if keepdim else np.squeeze(out, axis=axes)

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved
        axes, keepdim = ctx.args
        hit = (a == out).astype(grad.dtype)
        hit /= hit.sum(axis=axes, keepdims=True)
        return _expand_back(grad, a.shape, axes, keepdim) * hit


class MaxWithIndices(Function):
    """``x.max(dim)``: values and indices along one dim; the gradient goes to the chosen index."""

    @staticmethod
    def forward(ctx, a, axis, keepdim, idx_k):
        values = np.take_along_axis(a, idx_k, axis=axis)  # idx_k: the arg-max/min, keeping the reduced axis
        ctx.args = (a.shape, axis, keepdim, idx_k)
        return values if keepdim else np.squeeze(values, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        shape, axis, keepdim, idx_k = ctx.args
        g = grad if keepdim else np.expand_dims(grad, axis)
        out = np.zeros(shape, dtype=grad.dtype)
        np.put_along_axis(out, idx_k, g, axis=axis)
        return out


class Var(Function):
    """Variance with Bessel's ``correction`` (1 = unbiased, PyTorch's default)."""

    @staticmethod
    def forward(ctx, a, axes, keepdim, correction):
        n = int(np.prod([a.shape[i] for i in axes])) if axes else 1
        mean = np.mean(a, axis=axes, keepdims=True)
        centered = a - mean
        denom = a.dtype.type(builtins.max(n - correction, 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.sum(centered * centered, axis=axes, keepdims=keepdim) / denom
        ctx.save_for_backward(centered)
        ctx.args = (axes, keepdim, denom)
        return out

    @staticmethod
    def backward(ctx, grad):
        (centered,) = ctx.saved
        axes, keepdim, denom = ctx.args
        return _expand_back(grad, centered.shape, axes, keepdim) * (2 * centered / denom)


class LogSumExp(Function):
    """log Σ exp(x), computed as m + log Σ exp(x - m) so ±1e4 logits stay finite."""

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        m = np.max(a, axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)  # rows of all -inf give -inf, not NaN
        with np.errstate(divide="ignore"):
            out = np.log(np.sum(np.exp(a - m), axis=axes, keepdims=True)) + m
        ctx.save_for_backward(a, out)
        ctx.args = (axes, keepdim)
        return out if keepdim else np.squeeze(out, axis=axes)

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved
        axes, keepdim = ctx.args
        with np.errstate(invalid="ignore"):
            softmax = np.exp(a - out)  # d logsumexp / dx = softmax(x)
        softmax = np.where(np.isneginf(out), 0, softmax)  # an all -inf row gets no gradient, not NaN
        return _expand_back(grad, a.shape, axes, keepdim) * softmax


# ----------------------------------------------------------------------------- public functions
def sum(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    axes = normalize_dims(dim, x.ndim, "sum")
    if x.dtype.kind == "b":  # counting True values, as in PyTorch
        x = Tensor._wrap(x.data.astype(np.int64))
    return Sum.apply(x, axes, keepdim)


def mean(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    check_float(x, "mean")
    return Mean.apply(x, normalize_dims(dim, x.ndim, "mean"), keepdim)


def _max_min(x: Tensor, dim, keepdim: bool, use_min: bool):
    name = "min" if use_min else "max"
    if x.data.size == 0:
        raise ValueError(f"{name}(): cannot reduce an empty tensor of shape {x.shape}")
    if dim is None or isinstance(dim, (tuple, list)):
        # Over all dims or several dims there is no single index: return the values only.
        return AMax.apply(x, normalize_dims(dim, x.ndim, name), keepdim, use_min)
    axis = normalize_dim(dim, x.ndim, name)
    idx_k = np.expand_dims((np.argmin if use_min else np.argmax)(x.data, axis=axis), axis)  # computed once
    values = MaxWithIndices.apply(x, axis, keepdim, idx_k)
    idx = idx_k if keepdim else np.squeeze(idx_k, axis=axis)
    return MaxMin(values, Tensor._wrap(idx.astype(np.int64)))


def max(x: Tensor, dim=None, keepdim: bool = False):  # noqa: A001
    """``x.max()`` -> scalar; ``x.max(dim)`` -> ``(values, indices)`` like PyTorch;
    ``x.max((0, 1))`` -> values over several dims (no indices)."""
    return _max_min(x, dim, keepdim, use_min=False)


def min(x: Tensor, dim=None, keepdim: bool = False):  # noqa: A001
    return _max_min(x, dim, keepdim, use_min=True)


def amax(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return AMax.apply(x, normalize_dims(dim, x.ndim, "amax"), keepdim, False)


def amin(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return AMax.apply(x, normalize_dims(dim, x.ndim, "amin"), keepdim, True)


def _correction(correction, unbiased):
    if unbiased is not None:  # the older PyTorch keyword
        return 1 if unbiased else 0
    return correction


def var(x: Tensor, dim=None, keepdim: bool = False, correction=1, unbiased=None) -> Tensor:
    check_float(x, "var")
    return Var.apply(x, normalize_dims(dim, x.ndim, "var"), keepdim, _correction(correction, unbiased))


def std(x: Tensor, dim=None, keepdim: bool = False, correction=1, unbiased=None) -> Tensor:
    from .elementwise import sqrt

    return sqrt(var(x, dim, keepdim, correction, unbiased))


def logsumexp(x: Tensor, dim, keepdim: bool = False) -> Tensor:
    check_float(x, "logsumexp")
    return LogSumExp.apply(x, normalize_dims(dim, x.ndim, "logsumexp"), keepdim)


def argmax(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Index of the max (flattened when ``dim`` is None). Not differentiable."""
    if dim is None:
        return Tensor._wrap(np.asarray(np.argmax(x.data), dtype=np.int64))
    axis = normalize_dim(dim, x.ndim, "argmax")
    return Tensor._wrap(np.argmax(x.data, axis=axis, keepdims=keepdim).astype(np.int64))


def argmin(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return Tensor._wrap(np.asarray(np.argmin(x.data), dtype=np.int64))
    axis = normalize_dim(dim, x.ndim, "argmin")
    return Tensor._wrap(np.argmin(x.data, axis=axis, keepdims=keepdim).astype(np.int64))

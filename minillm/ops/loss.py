"""Losses: ``cross_entropy`` (the language-modelling loss of every chapter) and ``mse_loss``.

``cross_entropy`` is one fused node: log-softmax and the negative log-likelihood are
computed together from the row log-sum-exp, so no probability array is stored, and the
backward is simply ``softmax(logits) - onehot(target)`` per row.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function
from ..tensor import Tensor
from ._util import check_float, check_ids

_REDUCTIONS = ("mean", "sum", "none")


class CrossEntropy(Function):
    """logits (N, C), target (N,) -> per-row losses reduced by ``reduction``."""

    @staticmethod
    def forward(ctx, logits, target, ignore_index, label_smoothing, reduction):
        logits = np.ascontiguousarray(logits)
        losses, lse = kernels.cross_entropy_forward(logits, target, ignore_index, label_smoothing)
        n_valid = int(np.count_nonzero(target != ignore_index))
        ctx.save_for_backward(logits, target, lse)
        ctx.args = (ignore_index, label_smoothing, reduction, n_valid)
        if reduction == "none":
            return losses
        total = losses.sum(dtype=logits.dtype)
        if reduction == "sum":
            return total
        # mean over the targets that are not ignored (NaN if there are none, as in PyTorch)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(total / logits.dtype.type(n_valid), dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad):
        logits, target, lse = ctx.saved
        ignore_index, label_smoothing, reduction, n_valid = ctx.args
        n = logits.shape[0]
        if reduction == "none":
            g_rows = np.ascontiguousarray(grad, dtype=logits.dtype)
        elif reduction == "sum":
            g_rows = np.full(n, grad, dtype=logits.dtype)
        else:
            g_rows = np.full(n, grad / max(n_valid, 1), dtype=logits.dtype)
        g = kernels.cross_entropy_backward(logits, target, lse, g_rows, ignore_index, label_smoothing)
        return g


def cross_entropy(
    input: Tensor,  # noqa: A002 - PyTorch's name
    target: Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy between unnormalised ``input`` logits and class-index ``target``.

    Shapes as in PyTorch: input (N, C) with target (N,), or (N, C, d1, ...) with target
    (N, d1, ...), or (C,) with a 0-d target. Targets equal to ``ignore_index`` (default
    -100, used to mask prompt and padding tokens) contribute nothing, and ``"mean"``
    averages over the remaining ones.
    """
    check_float(input, "cross_entropy")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    target = target if isinstance(target, Tensor) else Tensor(target)
    check_ids(target, "cross_entropy", name="target")
    if input.ndim == 1:  # (C,) with a scalar target
        input, target = input.reshape(1, -1), target.reshape(1)
    if input.ndim < 1 or target.shape != input.shape[:1] + input.shape[2:]:
        raise ValueError(
            f"cross_entropy: input of shape {input.shape} needs target of shape "
            f"{input.shape[:1] + input.shape[2:]}, got {target.shape}"
        )
    n_classes = input.shape[1]
    t = target.data.astype(np.int64, copy=False)
    bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
    if bad.any():
        raise IndexError(
            f"cross_entropy: target contains {int(t[bad].flat[0])}, outside [0, {n_classes}) "
            f"and not ignore_index={ignore_index}"
        )
    out_shape = target.shape
    if input.ndim > 2:  # (N, C, d1, ...) -> (N*d1*..., C)
        input = input.permute(0, *range(2, input.ndim), 1).reshape(-1, n_classes)
        t = t.reshape(-1)
    out = CrossEntropy.apply(input, np.ascontiguousarray(t), int(ignore_index), float(label_smoothing), reduction)
    return out.reshape(out_shape) if reduction == "none" else out


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean squared error, composed from primitive ops (its backward comes for free)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"mse_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    target = target if isinstance(target, Tensor) else Tensor(target, dtype=input.dtype)
    if np.broadcast_shapes(input.shape, target.shape) != input.shape:
        raise ValueError(f"mse_loss: target shape {target.shape} does not match input shape {input.shape}")
    diff = input - target
    sq = diff * diff
    if reduction == "none":
        return sq
    return sq.sum() if reduction == "sum" else sq.mean()

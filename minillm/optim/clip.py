"""Gradient clipping by global norm (Happy LLM 4.2 / 5.3; ``torch.nn.utils.clip_grad_norm_``).

A single bad batch can produce a huge gradient and throw a model far from where it
was. Clipping looks at all gradients together as one long vector ``G`` and, if it is
longer than ``max_norm``, shrinks it (keeping its direction)::

    total_norm = ||G||_p = (sum over params of ||g_i||_p^p) ^ (1/p)      (max |g| for p = inf)
    coef = max_norm / (total_norm + 1e-6)
    if coef < 1:  g_i = g_i * coef   for every parameter

Worked example: gradients [3, 4] and [0] have total_norm 5; with max_norm=1 they
become [0.6, 0.8] and [0]. The function returns the norm *before* clipping, which is
worth logging: a norm that keeps hitting the limit means the lr is too high.
"""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor
from .optimizer import _params_list

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    """Scale the gradients in place so their global ``norm_type``-norm is at most ``max_norm``.

    ``parameters``: a tensor or an iterable of tensors (parameters without a gradient
    are skipped). Returns the total norm before clipping as a Python float (0.0 if no
    parameter has a gradient). A non-finite norm (inf/nan gradients) is returned
    without scaling -- or raises ``RuntimeError`` if ``error_if_nonfinite``.
    """
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    if norm_type <= 0:
        raise ValueError(f"norm_type must be > 0 (or inf), got {norm_type}")
    grads = []
    for p in _params_list(parameters):
        if not isinstance(p, Tensor):
            raise TypeError(f"clip_grad_norm_ expects Tensors, got {type(p).__name__}")
        if p.grad is not None:
            grads.append(p.grad.data)
    if not grads:
        return 0.0

    # Per-tensor norms in the gradient's own dtype, then the norm of those norms
    # (a float32 sum of squares over ~1e7 values is still accurate: NumPy sums pairwise).
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    else:
        per_tensor = [float(np.linalg.norm(g.reshape(-1), ord=norm_type)) if g.size else 0.0 for g in grads]
        total = float(np.linalg.norm(np.array(per_tensor), ord=norm_type))

    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError(
                f"the total norm of order {norm_type} of the gradients is {total}; "
                "set error_if_nonfinite=False to skip this check"
            )
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= g.dtype.type(coef)  # in place, in the gradient's dtype
    return total

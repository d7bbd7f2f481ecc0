"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay (Happy LLM 4.2).

The update, for each parameter ``p`` with gradient ``g`` (PyTorch's ``torch.optim.SGD``)::

    g = g + weight_decay * p                       # L2 penalty (weight_decay/2 * |p|^2) folded into g
    if momentum != 0:
        b = g                                      # first step: the buffer starts at g
        b = momentum * b + (1 - dampening) * g     # later steps
        g = g + momentum * b   if nesterov         # look ahead along the velocity
        g = b                  otherwise
    p = p - lr * g

Worked example (lr=0.1, momentum=0.9, p=1, g=1 at every step): the buffer goes
1, 1.9, 2.71 ... so p goes 0.9, 0.71, 0.439 -- momentum makes steps grow while the
gradient keeps pointing the same way.
"""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _as_float, _grad_array

__all__ = ["SGD"]


class SGD(Optimizer):
    """``SGD(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False)``, as in PyTorch.

    State per parameter (only when ``momentum != 0``): ``"momentum_buffer"`` (an array like p).
    """

    _array_state_keys = ("momentum_buffer",)

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        super()._check_group(group)
        if float(group["momentum"]) < 0:
            raise ValueError(f"invalid momentum={group['momentum']} (must be >= 0)")
        if float(group["weight_decay"]) < 0:
            raise ValueError(f"invalid weight_decay={group['weight_decay']} (must be >= 0)")
        if group["nesterov"] and (float(group["momentum"]) <= 0 or float(group["dampening"]) != 0):
            raise ValueError(
                f"nesterov momentum requires momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def _update_group(self, group: dict) -> None:
        lr = _as_float(group["lr"])
        momentum = _as_float(group["momentum"])
        dampening = _as_float(group["dampening"])
        weight_decay = _as_float(group["weight_decay"])
        nesterov = bool(group["nesterov"])
        for p in group["params"]:
            g = _grad_array(p)
            if g is None:  # no gradient this step (frozen, or unused in the forward pass)
                continue
            if weight_decay != 0:
                g = g + weight_decay * p.data  # a new array: never modify p.grad itself
            if momentum != 0:
                state = self.state.setdefault(p, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = np.array(g, dtype=p.dtype, copy=True)  # first step: no dampening (PyTorch)
                    state["momentum_buffer"] = buf
                else:
                    buf *= momentum
                    buf += (1 - dampening) * g
                g = g + momentum * buf if nesterov else buf
            p.data -= lr * g

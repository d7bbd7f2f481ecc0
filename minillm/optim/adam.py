"""Adam and AdamW (Happy LLM 4.2; the optimizer of the book's pretraining and SFT scripts, 5.3 / 6.x).

Adam keeps, per parameter, a running mean of the gradient (first moment ``m``) and of
its square (second moment ``v``), and steps by ``m / sqrt(v)``: each coordinate gets
its own step size, large where gradients are small and steady, small where they are
large or noisy. At step ``t`` (counting from 1), with gradient ``g``::

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g^2
    m_hat = m / (1 - beta1^t)          # bias correction: m, v start at 0, so early
    v_hat = v / (1 - beta2^t)          # averages are too small by exactly this factor
    p = p - lr * m_hat / (sqrt(v_hat) + eps)

Worked example (first step, any g != 0, eps -> 0): m_hat = g and v_hat = g^2, so
``p`` moves by exactly ``lr * sign(g)`` -- Adam's first step has the size of ``lr``.

The two differ only in weight decay:

* ``Adam(weight_decay=wd)`` adds the L2 term to the gradient, ``g = g + wd * p``, which
  then gets divided by ``sqrt(v_hat)`` like the rest -- heavily-updated weights are
  barely decayed.
* ``AdamW(weight_decay=wd)`` *decouples* it (Loshchilov & Hutter, 2019): first
  ``p = p * (1 - lr * wd)``, then the plain Adam step. Every weight shrinks by the
  same fraction; this is what LLM training uses (nanoGPT, llama2.c, the book).

Both run the fused kernel ``kernels.adamw_step`` (a Numba loop, or its NumPy twin in
``kernels/reference.py``), in place on ``p.data`` and the state arrays.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from .optimizer import Optimizer, _as_float, _grad_array

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)``, as in PyTorch.

    State per parameter: ``"step"`` (int, updates done so far), ``"exp_avg"`` (m) and
    ``"exp_avg_sq"`` (v), arrays like p. Not implemented: ``amsgrad``, ``maximize``.
    """

    _array_state_keys = ("exp_avg", "exp_avg_sq")
    _decoupled = False  # AdamW sets True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        super()._check_group(group)
        betas = group["betas"]
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = (float(betas[0]), float(betas[1]))
        for i, b in enumerate(group["betas"]):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"invalid beta parameter at index {i}: {b} (must be in [0, 1))")
        if float(group["eps"]) < 0:
            raise ValueError(f"invalid eps={group['eps']} (must be >= 0)")
        if float(group["weight_decay"]) < 0:
            raise ValueError(f"invalid weight_decay={group['weight_decay']} (must be >= 0)")

    def _check_param_state(self, pstate: dict, label: str) -> None:
        missing = [k for k in ("step", "exp_avg", "exp_avg_sq") if k not in pstate]
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: {label} state is missing {missing}")
        pstate["step"] = int(pstate["step"])

    def _update_group(self, group: dict) -> None:
        lr = _as_float(group["lr"])
        beta1, beta2 = (_as_float(b) for b in group["betas"])
        eps = _as_float(group["eps"])
        weight_decay = _as_float(group["weight_decay"])
        for p in group["params"]:
            g = _grad_array(p)
            if g is None:
                continue
            state = self.state.get(p)
            if not state:  # lazy init at the first update; C order so the kernel can flatten in place
                state = {
                    "step": 0,
                    "exp_avg": np.zeros(p.shape, dtype=p.dtype),
                    "exp_avg_sq": np.zeros(p.shape, dtype=p.dtype),
                }
                self.state[p] = state
            state["step"] += 1
            if self._decoupled:
                decay = weight_decay  # the kernel does p *= 1 - lr * wd first
            else:
                if weight_decay != 0:
                    g = g + weight_decay * p.data  # classic L2: part of the gradient
                decay = 0.0
            kernels.adamw_step(
                p.data, g, state["exp_avg"], state["exp_avg_sq"], state["step"], lr, beta1, beta2, eps, decay
            )


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)``, as in PyTorch.

    Decoupled weight decay: ``p *= 1 - lr * weight_decay`` before the Adam step (note
    that the decay follows the *scheduled* lr). Use ``param_groups_for_weight_decay`` to
    exempt norms, biases and embeddings.
    """

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

"""The ``Optimizer`` base class: parameter groups, per-parameter state, save/restore (Happy LLM 4.2, 5.3).

Every optimizer in this package does the same three things, so they live here once:

* **param groups** -- ``optimizer.param_groups`` is a list of dicts. Each holds
  ``"params"`` (a list of tensors) and that group's hyperparameters (``"lr"``,
  ``"weight_decay"``, ...). A learning-rate schedule changes training by writing
  ``group["lr"]`` before each step; the weight-decay helper puts norms/biases in a
  group of their own with ``weight_decay=0``.
* **state** -- ``optimizer.state[p]`` is a dict of whatever the update rule must
  remember between steps for parameter ``p`` (momentum buffer, Adam's moments and
  step count). It is created lazily, at ``p``'s first update.
* **state_dict / load_state_dict** -- the PyTorch layout, with tensors replaced by
  integer indices (the position of each parameter across all groups)::

      {"state": {0: {"step": 3, "exp_avg": ndarray, "exp_avg_sq": ndarray}, ...},
       "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), ..., "params": [0, 1, 2]}, ...]}

  Only ints, floats, strings, lists and NumPy arrays: ``flatten_state_dict`` splits it
  into arrays (for safetensors) and a JSON-able rest, so nothing executable is ever written.

Parameters are ``Tensor``s; the update is done in place on ``p.data`` (the raw NumPy
array) with ``p.grad.data``. All arithmetic stays in the parameter's dtype: the
hyperparameters are turned into Python floats before use, because a ``np.float64``
scalar times a float32 array gives float64 under NumPy 2.
"""
from __future__ import annotations

import abc
import copy
from typing import Callable, Iterable, Optional

import numpy as np

from .. import autograd
from ..tensor import Tensor

__all__ = ["Optimizer"]


class Optimizer(abc.ABC):
    """Base class. Subclasses set ``defaults`` and implement ``_update_group(group)``.

    ``params`` may be

    * an iterable of tensors (e.g. ``model.parameters()``) -> one group;
    * an iterable of ``(name, tensor)`` pairs (e.g. ``model.named_parameters()``) -> one
      group whose ``"param_names"`` lets ``load_state_dict`` check names, not just shapes;
    * an iterable of dicts, each ``{"params": [...], **hyperparameters}`` -> one group
      each; keys a group leaves out are taken from the optimizer's defaults.
    """

    # Keys of optimizer.state[p] that hold arrays shaped like p (checked on load).
    _array_state_keys: tuple = ()

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list = []
        self.state: dict = {}  # Tensor -> dict; Tensor hashes by identity, so p is its own key
        if isinstance(params, Tensor):
            raise TypeError(
                "params should be an iterable of Tensors or dicts, got a single Tensor; pass [tensor]"
            )
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict) -> None:
        """Add a group (e.g. newly unfrozen layers); missing hyperparameters come from ``defaults``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError(f"a param group needs a 'params' entry; got keys {sorted(group)}")
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        params = list(params)
        # (name, tensor) pairs, as model.named_parameters() yields them
        if params and isinstance(params[0], tuple):
            if "param_names" in group:
                raise ValueError("give parameter names either as (name, tensor) pairs or as 'param_names', not both")
            group["param_names"] = [str(name) for name, _ in params]
            params = [p for _, p in params]
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but param {i} of the group is {type(p).__name__}")
            if p.grad_fn is not None:
                raise ValueError(f"can't optimize a non-leaf Tensor (param {i} has grad_fn {p.grad_fn})")
            if p.dtype.kind != "f":
                raise TypeError(f"optimizer can only optimize floating point tensors, param {i} has dtype {p.dtype}")
        if "param_names" in group:
            group["param_names"] = list(group["param_names"])
            if len(group["param_names"]) != len(params):
                raise ValueError(
                    f"param group has {len(params)} params but {len(group['param_names'])} param_names"
                )
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError("some parameters appear more than once (in this group or in another group)")
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group: dict) -> None:
        """Validate a group's hyperparameters (overridden by subclasses)."""
        if float(group["lr"]) < 0:
            raise ValueError(f"invalid learning rate lr={group['lr']} (must be >= 0)")

    # ------------------------------------------------------------------ the training-step API
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients of the last backward (they accumulate otherwise).

        ``set_to_none=True`` (the default, as in PyTorch) drops ``p.grad``: cheaper than
        writing zeros, and ``step()`` then skips parameters that got no gradient.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.data[...] = 0

    def step(self, closure: Optional[Callable] = None):
        """Update every parameter that has a gradient; returns ``closure()``'s value if given."""
        loss = None
        if closure is not None:
            with autograd.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._update_group(group)
        return loss

    @abc.abstractmethod
    def _update_group(self, group: dict) -> None:
        """Apply one update to every parameter of ``group`` that has a gradient."""

    # ------------------------------------------------------------------ save / restore
    def state_dict(self) -> dict:
        """A snapshot: ``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``.

        Arrays are *copied*: the optimizer updates its own arrays in place, so a
        reference would keep changing after you took it.
        """
        index: dict = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index[id(p)]] = {
                        k: (v.copy() if isinstance(v, np.ndarray) else copy.deepcopy(v))
                        for k, v in self.state[p].items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore ``state_dict()`` output; the saved hyperparameters (e.g. ``lr``) replace the current ones.

        Validates first (nothing is changed if it fails): same number of groups, same
        number of params per group, same names if both sides know them, and every state
        array shaped like its parameter. Arrays are copied and cast to the parameter's dtype.
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"optimizer state_dict must have keys 'state' and 'param_groups'; got {got}")
        saved_groups = state_dict["param_groups"]
        name = type(self).__name__
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the saved state has {len(saved_groups)} parameter groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        # saved index -> (parameter, its name or None)
        params_by_index: dict = {}
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: group {gi} has {len(saved['params'])} params in the saved state "
                    f"but {len(group['params'])} in this optimizer (a different model or config?)"
                )
            names_saved, names_now = saved.get("param_names"), group.get("param_names")
            if names_saved is not None and names_now is not None and list(names_saved) != list(names_now):
                bad = next(i for i, (a, b) in enumerate(zip(names_saved, names_now)) if a != b)
                raise ValueError(
                    f"{name}.load_state_dict: group {gi} param {bad} is {names_saved[bad]!r} in the saved state "
                    f"but {names_now[bad]!r} here"
                )
            for j, (idx, p) in enumerate(zip(saved["params"], group["params"])):
                params_by_index[int(idx)] = (p, names_now[j] if names_now else None)

        new_state: dict = {}
        for idx, pstate in state_dict["state"].items():
            idx = int(idx)  # JSON turns int keys into strings
            if idx not in params_by_index:
                raise ValueError(
                    f"{name}.load_state_dict: state for param index {idx}, but the saved groups list only "
                    f"{sorted(params_by_index)}"
                )
            p, pname = params_by_index[idx]
            label = f"param {idx}" + (f" ({pname})" if pname else "")
            restored = {}
            for key, value in pstate.items():
                if isinstance(value, np.ndarray):
                    if value.shape != p.shape:
                        raise ValueError(
                            f"{name}.load_state_dict: {label} state {key!r} has shape {value.shape}, "
                            f"the parameter has shape {p.shape}"
                        )
                    value = np.array(value, dtype=p.dtype, copy=True, order="C")
                elif key in self._array_state_keys and value is not None:
                    raise TypeError(f"{name}.load_state_dict: {label} state {key!r} should be an array, got {type(value).__name__}")
                else:
                    value = copy.deepcopy(value)
                restored[key] = value
            self._check_param_state(restored, label)
            new_state[p] = restored

        new_groups = []
        for saved, group in zip(saved_groups, self.param_groups):
            g = {k: _untuple(k, copy.deepcopy(v)) for k, v in saved.items() if k != "params"}
            g["params"] = group["params"]
            self._check_group(g)
            new_groups.append(g)
        self.param_groups = new_groups
        self.state = new_state

    def _check_param_state(self, pstate: dict, label: str) -> None:
        """Check one parameter's restored state has the keys this optimizer needs (subclasses)."""

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            n = sum(int(p.data.size) for p in group["params"])
            lines.append(f"Parameter Group {i}  ({len(group['params'])} tensors, {n:,} values)")
            for key in sorted(group):
                if key not in ("params", "param_names"):
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def _untuple(key, value):
    """JSON has no tuples: ``betas`` comes back as a list; give it back its tuple shape."""
    if key == "betas" and isinstance(value, list):
        return tuple(value)
    return value


def _as_float(x) -> float:
    """Hyperparameter -> Python float, so ``x * float32_array`` stays float32 on NumPy 1 and 2."""
    return float(x)


def _grad_array(p: Tensor) -> Optional[np.ndarray]:
    """``p.grad`` as a raw array in ``p``'s dtype, or None when ``p`` got no gradient."""
    g = p.grad
    if g is None:
        return None
    g = g.data if isinstance(g, Tensor) else np.asarray(g)
    if g.shape != p.shape:
        raise ValueError(f"gradient shape {g.shape} does not match parameter shape {p.shape}")
    if g.dtype != p.dtype:
        raise TypeError(f"gradient dtype {g.dtype} does not match parameter dtype {p.dtype}")
    return g


def _params_list(params: Iterable) -> list:
    if isinstance(params, Tensor):
        return [params]
    return list(params)

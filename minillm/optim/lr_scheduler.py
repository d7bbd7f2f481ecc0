"""Learning-rate schedules: pure functions and small scheduler objects (Happy LLM 4.2, 5.3, 6.x).

LLM training almost always uses *linear warmup then cosine decay* (nanoGPT, llama2.c,
the book's pretraining script): a few hundred steps ramping the lr up from near zero
(Adam's second-moment estimate is poor at first, so big early steps are risky), then
a slow cosine glide down to ``min_lr`` (often ``max_lr / 10``).

``step`` is always the number of optimizer updates already done (0 for the first
update), and a function returns the lr to use for that update.

Pure functions (use them in a hand-written loop, nanoGPT style)::

    for step in range(max_steps):
        lr = cosine_with_warmup(step, max_lr=1e-3, warmup_steps=100, total_steps=max_steps, min_lr=1e-4)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ...

Scheduler objects do that write for you (PyTorch style): the constructor sets the lr of
update 0, and each ``scheduler.step()`` after ``optimizer.step()`` sets the next one::

    scheduler = WarmupCosine(optimizer, warmup_steps=100, total_steps=max_steps, min_lr=1e-4)
    for step in range(max_steps):
        ...; optimizer.step(); scheduler.step()

Each group's own starting lr (``group["initial_lr"]``) plays the role of ``max_lr``.
"""
from __future__ import annotations

import abc
import math
from typing import Callable

__all__ = [
    "constant_lr", "cosine_with_warmup", "linear_decay", "LRScheduler", "LambdaLR", "ConstantLR",
    "WarmupCosine", "LinearDecay",
]


def _check(warmup_steps: int, total_steps: int) -> None:
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps < warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must be >= warmup_steps ({warmup_steps})")


def _warmup(step: int, max_lr: float, warmup_steps: int) -> float:
    """Linear warmup ``max_lr * (step + 1) / warmup_steps``: update 0 already moves
    (a step with lr 0 would be wasted) and update ``warmup_steps - 1`` uses ``max_lr``."""
    return max_lr * (step + 1) / warmup_steps


def constant_lr(step: int, lr: float, warmup_steps: int = 0) -> float:
    """``lr`` for every step (after an optional linear warmup).

    >>> constant_lr(5, 1e-3)
    0.001
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if step < warmup_steps:
        return _warmup(step, lr, warmup_steps)
    return float(lr)


def cosine_with_warmup(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Linear warmup to ``max_lr``, then cosine decay to ``min_lr`` at ``total_steps``, then ``min_lr``.

    With ``W = warmup_steps``, ``T = total_steps``::

        lr(s) = max_lr * (s + 1) / W                                   s < W
        lr(s) = min_lr + (max_lr - min_lr) * (1 + cos(pi * r)) / 2     W <= s <= T,  r = (s - W) / (T - W)
        lr(s) = min_lr                                                 s > T

    At ``s = W`` the cosine starts at ``max_lr`` (r = 0); half way it is the mean of
    ``max_lr`` and ``min_lr``; at ``s = T`` it reaches ``min_lr`` (r = 1).

    >>> [round(cosine_with_warmup(s, 1.0, 2, 6, 0.0), 3) for s in range(8)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    """
    _check(warmup_steps, total_steps)
    if step < warmup_steps:
        return _warmup(step, max_lr, warmup_steps)
    if step >= total_steps:
        return float(min_lr)
    ratio = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1 over the decay phase
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)


def linear_decay(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Linear warmup to ``max_lr``, then a straight line down to ``min_lr`` at ``total_steps``::

        lr(s) = max_lr * (s + 1) / W                                   s < W
        lr(s) = max_lr - (max_lr - min_lr) * (s - W) / (T - W)         W <= s <= T
        lr(s) = min_lr                                                 s > T

    >>> [linear_decay(s, 1.0, 0, 4, 0.0) for s in range(6)]
    [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    _check(warmup_steps, total_steps)
    if step < warmup_steps:
        return _warmup(step, max_lr, warmup_steps)
    if step >= total_steps:
        return float(min_lr)
    ratio = (step - warmup_steps) / (total_steps - warmup_steps)
    return max_lr - (max_lr - min_lr) * ratio


# ---------------------------------------------------------------------------- scheduler objects
class LRScheduler(abc.ABC):
    """Base class: writes ``get_lr()`` into ``optimizer.param_groups[i]["lr"]``.

    ``last_step`` is the index of the update whose lr is currently set (0 after
    construction). ``state_dict()`` is a small JSON-able dict, saved in checkpoints.
    """

    def __init__(self, optimizer, last_step: int = 0):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            # remember each group's starting lr: schedules are relative to it
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        self.last_step = int(last_step)
        self._apply()

    @abc.abstractmethod
    def lr_at(self, step: int, base_lr: float) -> float:
        """The learning rate of update ``step`` for a group whose peak is ``base_lr``."""

    def get_lr(self) -> list:
        """The lr of each group for update ``last_step``."""
        return [float(self.lr_at(self.last_step, base)) for base in self.base_lrs]

    def get_last_lr(self) -> list:
        """The lrs currently written into the optimizer."""
        return list(self._last_lr)

    def _apply(self) -> None:
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def step(self) -> None:
        """Move to the next update's lr (call after ``optimizer.step()``)."""
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict:
        """Everything but the optimizer (and any function): JSON-serialisable."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer" and not callable(v)}

    def load_state_dict(self, state: dict) -> None:
        if "last_step" not in state or "base_lrs" not in state:
            raise ValueError(f"scheduler state needs 'last_step' and 'base_lrs'; got keys {sorted(state)}")
        if len(state["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"scheduler state has {len(state['base_lrs'])} base lrs, the optimizer has "
                f"{len(self.optimizer.param_groups)} param groups"
            )
        for key, value in state.items():
            if key not in self.__dict__:
                raise ValueError(f"{type(self).__name__}.load_state_dict: unknown key {key!r}")
            setattr(self, key, list(value) if isinstance(value, (list, tuple)) else value)
        self._apply()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_step={self.last_step}, lr={self._last_lr})"


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(step)`` (PyTorch's ``LambdaLR``); the function is not saved."""

    def __init__(self, optimizer, lr_lambda: Callable[[int], float], last_step: int = 0):
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_step)

    def lr_at(self, step: int, base_lr: float) -> float:
        return base_lr * self.lr_lambda(step)


class ConstantLR(LRScheduler):
    """``constant_lr`` as an object: each group's own lr, after an optional warmup."""

    def __init__(self, optimizer, warmup_steps: int = 0, last_step: int = 0):
        self.warmup_steps = int(warmup_steps)
        super().__init__(optimizer, last_step)

    def lr_at(self, step: int, base_lr: float) -> float:
        return constant_lr(step, base_lr, self.warmup_steps)


class WarmupCosine(LRScheduler):
    """``cosine_with_warmup`` as an object; each group's starting lr is its ``max_lr``."""

    def __init__(self, optimizer, warmup_steps: int, total_steps: int, min_lr: float = 0.0, last_step: int = 0):
        _check(int(warmup_steps), int(total_steps))
        self.warmup_steps, self.total_steps, self.min_lr = int(warmup_steps), int(total_steps), float(min_lr)
        super().__init__(optimizer, last_step)

    def lr_at(self, step: int, base_lr: float) -> float:
        return cosine_with_warmup(step, base_lr, self.warmup_steps, self.total_steps, self.min_lr)


class LinearDecay(LRScheduler):
    """``linear_decay`` as an object; each group's starting lr is its ``max_lr``."""

    def __init__(self, optimizer, warmup_steps: int, total_steps: int, min_lr: float = 0.0, last_step: int = 0):
        _check(int(warmup_steps), int(total_steps))
        self.warmup_steps, self.total_steps, self.min_lr = int(warmup_steps), int(total_steps), float(min_lr)
        super().__init__(optimizer, last_step)

    def lr_at(self, step: int, base_lr: float) -> float:
        return linear_decay(step, base_lr, self.warmup_steps, self.total_steps, self.min_lr)

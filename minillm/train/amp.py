"""Mixed precision: fp16 with dynamic loss scaling, and bf16 emulated (``torch.amp``; Happy LLM 6.1's ``--bf16``).

The book's pretraining script passes ``--bf16`` and its DeepSpeed config has an ``fp16`` block with a
loss scaler. What they do, on NumPy:

**fp16** (float16: 5 exponent bits, 10 mantissa bits) halves the bytes of every weight, activation
and gradient. Its range is the catch: values below 6e-8 round to zero, and the gradients of a
language model are full of numbers like 1e-9. *Loss scaling* multiplies the loss by a large S
(65536 to start) before backward, so every gradient is S times larger and stays representable;
before the optimizer step the float32 copies are divided by S again. ``GradScaler`` picks S
dynamically, as PyTorch's does::

    grads finite?   yes -> step; after growth_interval good steps in a row, S *= growth_factor (2)
                    no  -> skip this step (the update would be inf/nan), S *= backoff_factor (0.5)

**Master weights**: the optimizer keeps float32 weights. ``MixedPrecision`` puts float16 copies of
them into the model for forward and backward only, and turns the float16 gradients back into
float32 gradients of the master weights afterwards, so AdamW's tiny updates (lr * 1e-3 relative)
are not rounded away by float16's 3 decimal digits.

**bf16** (bfloat16: 8 exponent bits like float32, 7 mantissa bits) has float32's *range* and
fewer digits. No gradient underflows, so bf16 needs no loss scaling -- that is why the book (and
most LLM training today) prefers it. NumPy has no bfloat16, so we emulate it: float32 arrays whose
mantissa is rounded to bf16's 7 bits (round to nearest even). Emulation rounds the weights on
their way into forward and the gradients on their way out; activations stay float32, so it shows
bf16's effect on weights and gradients, not its speed.

On this CPU neither is faster: NumPy's float16 matmul is not done by BLAS (a tiny LLaMA step is
~100x slower than in float32), and emulated bf16 does float32 work plus the rounding (~1.3x slower,
and the rounded weight copies add memory; docs/chapter6.md has the measurements). The Trainer
uses both through ``TrainConfig(bf16=True)`` / ``fp16=True`` (the CLI's ``--bf16`` / ``--fp16``). What mixed precision
buys here is understanding -- on a GPU with tensor cores it buys 2-8x speed and half the memory.
``tests/test_amp.py`` checks the scaler's state machine on injected overflows and that short runs
in fp16 and bf16 land within a stated tolerance of float32.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from ..tensor import Tensor

__all__ = ["GradScaler", "MixedPrecision", "round_to_bfloat16"]


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16's precision (7 mantissa bits, round to nearest even), still float32.

    A float32 is 1 sign, 8 exponent, 23 mantissa bits; bfloat16 is its top 16 bits. Rounding adds
    0x7FFF plus the lowest kept bit to the 32-bit pattern, then clears the low 16 bits. Worked
    example: 1 + 2**-8 lies exactly between two bf16 numbers (1 and 1 + 2**-7) and rounds to the
    even one, 1.0; 1 + 3 * 2**-8 rounds up to 1 + 2**-6. inf and nan stay inf and nan.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"round_to_bfloat16 expects float32, got {x.dtype}")
    bits = np.ascontiguousarray(x).view(np.uint32)
    lsb = (bits >> 16) & 1
    rounded = ((bits + np.uint32(0x7FFF) + lsb) & np.uint32(0xFFFF0000)).astype(np.uint32)
    out = rounded.view(np.float32)
    nan = np.isnan(x)
    if nan.any():  # the carry could turn a nan's payload into inf; keep it nan
        out = np.where(nan, np.float32(np.nan), out)
    return out.reshape(x.shape)


class GradScaler:
    """Dynamic loss scaling for fp16 (``torch.amp.GradScaler``'s arguments and state machine).

    The training step with it::

        scaler.scale(loss).backward()      # gradients are scale x too large, and representable
        scaler.unscale_(optimizer)         # divide them by scale; notes inf/nan
        clip_grad_norm_(params, 1.0)       # (optional) on the true gradients
        scaler.step(optimizer)             # skipped if any gradient was inf/nan
        scaler.update()                    # back off after an overflow, grow after growth_interval good steps
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True):
        if not (isinstance(init_scale, (int, float)) and init_scale > 0 and math.isfinite(init_scale)):
            raise ValueError(f"GradScaler: init_scale must be a finite number > 0, got {init_scale!r}")
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor!r}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor!r}")
        if not isinstance(growth_interval, int) or isinstance(growth_interval, bool) or growth_interval < 1:
            raise ValueError(f"GradScaler: growth_interval must be an int >= 1, got {growth_interval!r}")
        self.enabled = bool(enabled)
        self._scale = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = float(growth_factor), float(backoff_factor), growth_interval
        self._growth_tracker = 0  # good steps since the last change of scale
        self._found_inf = None  # None: not unscaled yet this step
        self.skipped_steps = 0

    def get_scale(self) -> float:
        return self._scale if self.enabled else 1.0

    def scale(self, loss: Tensor) -> Tensor:
        """``loss * scale`` (a new Tensor; backward through it gives scaled gradients)."""
        if not isinstance(loss, Tensor):
            raise TypeError(f"GradScaler.scale expects a Tensor, got {type(loss).__name__}")
        return loss * self.get_scale() if self.enabled else loss

    def unscale_(self, optimizer) -> bool:
        """Divide every gradient of ``optimizer``'s parameters by the scale (in place); returns True if one was inf/nan."""
        if not self.enabled:
            self._found_inf = False
            return False
        if self._found_inf is not None:
            raise RuntimeError("GradScaler.unscale_() was already called since the last update()")
        inv = 1.0 / self._scale
        found = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                g *= g.dtype.type(inv)
                if not np.isfinite(g).all():
                    found = True
        self._found_inf = found
        return found

    def step(self, optimizer) -> bool:
        """``optimizer.step()`` unless the gradients held an inf/nan (unscales first if needed); returns True if it stepped."""
        if self._found_inf is None:
            self.unscale_(optimizer)
        if self._found_inf:
            self.skipped_steps += 1
            return False
        optimizer.step()
        return True

    def update(self) -> None:
        """Back off after an overflow, grow after ``growth_interval`` good steps in a row."""
        if not self.enabled:
            return
        if self._found_inf is None:
            raise RuntimeError("GradScaler.update(): call step() (or unscale_) first in this iteration")
        if self._found_inf:
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        self._found_inf = None

    def state_dict(self) -> dict:
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in ("scale", "_growth_tracker") if k not in state]
        if missing:
            raise ValueError(f"GradScaler.load_state_dict: missing {missing}; got keys {sorted(state)}")
        self._scale, self._growth_tracker = float(state["scale"]), int(state["_growth_tracker"])
        for k in ("growth_factor", "backoff_factor", "growth_interval"):
            if k in state:
                setattr(self, k, type(getattr(self, k))(state[k]))


class MixedPrecision:
    """Run ``model``'s forward and backward in ``dtype`` ("float16" or "bfloat16") over float32 master weights.

        mp = MixedPrecision(model, "float16")
        with mp.autocast():                       # low-precision weights in the model
            loss = model(x, targets=y).loss
            scaler.scale(loss).backward()         # fp16 gradients
        # on leaving: float32 weights back, gradients turned into float32 (bf16: rounded to bf16 first)
        scaler.step(optimizer); scaler.update()

    The model's parameters must be float32 (the master weights the optimizer updates).
    """

    DTYPES = ("float16", "bfloat16")

    def __init__(self, model, dtype: str = "bfloat16"):
        if dtype not in self.DTYPES:
            raise ValueError(f"MixedPrecision: dtype must be one of {self.DTYPES}, got {dtype!r}")
        params = list(model.parameters())
        wrong = sorted({str(p.dtype) for p in params if p.dtype != np.float32})
        if wrong:
            raise TypeError(f"MixedPrecision: the master weights must be float32, got {wrong}")
        self.model, self.dtype, self.params = model, dtype, params
        self._master = None

    def _low(self, a: np.ndarray) -> np.ndarray:
        return a.astype(np.float16) if self.dtype == "float16" else round_to_bfloat16(a)

    @contextlib.contextmanager
    def autocast(self):
        if self._master is not None:
            raise RuntimeError("MixedPrecision.autocast() is already active")
        self._master = [p.data for p in self.params]
        before = [p.grad for p in self.params]  # gradients accumulated so far (float32), kept aside
        for p in self.params:
            p.data = self._low(p.data)
            p.grad = None
        # float16 overflows are expected (a too-large loss scale) and caught by GradScaler: no NumPy warnings
        quiet = np.errstate(over="ignore", invalid="ignore") if self.dtype == "float16" else contextlib.nullcontext()
        try:
            with quiet:
                yield self
        finally:
            for p, master, old in zip(self.params, self._master, before):
                p.data = master
                g = p.grad
                if g is not None:
                    g32 = g.data.astype(np.float32) if self.dtype == "float16" else round_to_bfloat16(g.data)
                    g = Tensor(g32)
                if old is not None and g is not None:
                    old.data += g.data  # accumulation across micro-batches happens in float32
                    g = old
                p.grad = g if g is not None else old
            self._master = None

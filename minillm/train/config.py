"""``TrainConfig``: every knob of the training loop in one typed, validated dataclass (Happy LLM 5.3, 6.1).

The defaults are sized for a tiny model on a laptop CPU. The fields mirror the
arguments of the book's pretraining script and of Hugging Face's ``TrainingArguments``
(``gradient_accumulation_steps``, ``max_grad_norm``, ``warmup_steps``, ...), under the
short names nanoGPT uses.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

__all__ = ["TrainConfig", "RESUME_KEYS"]

SCHEDULES = ("cosine", "linear", "constant")

# Fields that change the numbers a run computes. Resuming from a checkpoint written
# with different values would silently give a different run, so it is refused
# (``Trainer.load_checkpoint(..., strict_config=False)`` overrides). The others
# (intervals, out_dir, progress ...) may change between runs, and so may max_steps as
# long as the decay horizon (``decay_steps``: lr_decay_steps, or else max_steps) stays
# the same -- to train longer on the old schedule, set lr_decay_steps to the old max_steps.
RESUME_KEYS = (
    "batch_size", "grad_accum_steps", "lr", "min_lr", "warmup_steps", "lr_schedule", "decay_steps",
    "weight_decay", "betas", "eps", "grad_clip", "seed",
)


@dataclass
class TrainConfig:
    """Settings of one training run.

    Steps count *optimizer updates*; each update sums the gradients of
    ``grad_accum_steps`` micro-batches, so one update sees
    ``batch_size * grad_accum_steps`` sequences (the "effective batch size").
    """

    out_dir: str = "out"  # checkpoints/, metrics.jsonl, loss_curve.png, config.json go here
    max_steps: int = 1000  # optimizer updates to run in total (a resumed run continues up to this)
    batch_size: Optional[int] = None  # sequences per micro-batch; if set, must equal the loader's batch_size
    grad_accum_steps: int = 1  # micro-batches per update: a large batch on little memory

    # AdamW + schedule (used when the Trainer builds the optimizer; the schedule always)
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup (tiny models like it high)
    min_lr: float = 1e-4  # floor of the decay, often lr / 10 (nanoGPT, the book)
    warmup_steps: int = 100  # linear warmup from lr / warmup_steps to lr
    lr_schedule: str = "cosine"  # "cosine" | "linear" | "constant"
    lr_decay_steps: Optional[int] = None  # where the decay reaches min_lr; None -> max_steps
    weight_decay: float = 0.1  # AdamW's decoupled decay, on >= 2-D weights only
    betas: tuple = (0.9, 0.95)  # beta2 = 0.95 (not 0.999) is the LLM habit: adapts faster to changing gradients
    eps: float = 1e-8
    grad_clip: float = 1.0  # clip the global grad norm to this; 0 disables (the norm is still logged)

    # evaluation, logging, checkpoints
    eval_interval: int = 100  # evaluate every N updates (and at the end); 0 disables
    eval_batches: Optional[int] = 20  # validation batches per evaluation (the same ones every time); None = a full pass
    log_interval: int = 10  # write a metrics.jsonl line every N updates
    checkpoint_interval: int = 500  # save every N updates (and at the end); 0 = only at the end
    keep_last: int = 3  # checkpoints kept on disk; older ones are deleted
    seed: int = 0  # seeds minillm's RNG (dropout) at the start of a fresh run

    progress: bool = True  # tqdm bar with loss / lr / tokens per second / ETA
    plot: bool = True  # loss_curve.png at each evaluation (needs matplotlib; skipped without it)
    overwrite: bool = False  # a fresh run may replace the run already in out_dir (else it is refused)

    # mixed precision (TrainingArguments' names; the book's pretraining script passes --bf16). The
    # optimizer keeps float32 master weights either way, so checkpoints are the same files; a run may
    # change precision when it resumes. On a CPU neither is faster: see minillm/train/amp.py.
    bf16: bool = False  # forward/backward on weights and gradients rounded to bfloat16 (emulated); no loss scaling
    fp16: bool = False  # forward/backward in NumPy float16 with dynamic loss scaling (GradScaler); very slow on CPU

    def __post_init__(self):
        for name in ("progress", "plot", "overwrite", "bf16", "fp16"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if self.bf16 and self.fp16:
            raise ValueError("TrainConfig: bf16 and fp16 are both True; choose one precision")
        self.betas = tuple(self.betas)
        positive = ("max_steps", "grad_accum_steps", "keep_last", "log_interval")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("warmup_steps", "eval_interval", "checkpoint_interval", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an int >= 0, got {value!r}")
        for name in ("batch_size", "eval_batches", "lr_decay_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"TrainConfig.{name} must be None or an int >= 1, got {value!r}")
        for name in ("lr", "min_lr", "weight_decay", "eps", "grad_clip"):  # finite numbers, not "1e-3" or nan
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"TrainConfig.{name} must be a finite number, got {value!r}")
        if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"TrainConfig.min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_steps > self.decay_steps:
            raise ValueError(
                f"TrainConfig.warmup_steps ({self.warmup_steps}) must be <= lr_decay_steps or max_steps "
                f"({self.decay_steps})"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.weight_decay < 0 or self.eps < 0 or self.grad_clip < 0:
            raise ValueError(
                "TrainConfig.weight_decay, eps and grad_clip must be >= 0, got "
                f"{self.weight_decay}, {self.eps}, {self.grad_clip}"
            )

    @property
    def mixed_precision(self) -> Optional[str]:
        """``"bfloat16"``, ``"float16"`` or None (float32 throughout)."""
        return "bfloat16" if self.bf16 else "float16" if self.fp16 else None

    @property
    def decay_steps(self) -> int:
        """The step where the decay reaches ``min_lr``."""
        return self.lr_decay_steps if self.lr_decay_steps is not None else self.max_steps

    def to_dict(self) -> dict:
        """JSON-able dict of the fields (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def resume_values(self) -> dict:
        """The values of ``RESUME_KEYS`` (with ``decay_steps`` resolved), as stored in a checkpoint."""
        d = self.to_dict()
        d["decay_steps"] = self.decay_steps
        return {k: d[k] for k in RESUME_KEYS}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig got unknown fields {unknown}; known fields: {sorted(names)}")
        return cls(**d)


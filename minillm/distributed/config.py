"""A DeepSpeed JSON config, read onto our flags (the book's ``ds_config_zero2.json``, Happy LLM 6.1.5).

The book launches ``deepspeed pretrain.py --deepspeed ./ds_config_zero2.json``. Our
``--deepspeed FILE`` reads the same file and maps the fields that mean something here:

    DeepSpeed field                              ours
    zero_optimization.stage                      --zero-stage (0, 1, 2)
    zero_optimization.reduce_bucket_size         bucket_cap_mb (elements -> MB of our dtype)
    gradient_accumulation_steps                  TrainConfig.grad_accum_steps
    train_micro_batch_size_per_gpu               per-rank batch (global batch = micro * world size)
    train_batch_size                             checked = micro * grad_accum * world size
    gradient_clipping                            TrainConfig.grad_clip
    optimizer {type AdamW, params lr betas eps weight_decay}    TrainConfig.lr, betas, eps, weight_decay
    scheduler {type WarmupLR|WarmupCosineLR|WarmupDecayLR, params warmup_num_steps, warmup_max_lr}
                                                 TrainConfig.lr_schedule constant|cosine|linear, warmup_steps, lr
    steps_per_print                              TrainConfig.log_interval
    bf16.enabled                                 TrainConfig.bf16 (--bf16)
    fp16.enabled                                 TrainConfig.fp16 (--fp16); the loss scaler is torch's GradScaler
                                                 (initial scale 2**16, growth interval 2000): loss_scale must be 0
                                                 (dynamic) and initial_scale_power 16 when fp16 is on

``"auto"`` means "take it from the command line", as in Hugging Face's integration. Fields
DeepSpeed has but that describe GPU machinery (``offload_optimizer`` with a device other than
"none", ``overlap_comm``, ``contiguous_gradients``, ``allgather_bucket_size``, ...) are accepted
when they ask for nothing we would silently ignore; any other field is an error naming it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["DeepSpeedConfig", "load_deepspeed_config"]

_TOP = {"fp16", "bf16", "optimizer", "scheduler", "zero_optimization", "gradient_accumulation_steps",
        "gradient_clipping", "steps_per_print", "train_batch_size", "train_micro_batch_size_per_gpu",
        "wall_clock_breakdown"}
_ZERO = {"stage", "offload_optimizer", "allgather_partitions", "allgather_bucket_size", "overlap_comm",
         "reduce_scatter", "reduce_bucket_size", "contiguous_gradients"}
_SCHEDULES = {"WarmupLR": "constant", "WarmupCosineLR": "cosine", "WarmupDecayLR": "linear"}
# fp16 fields that only describe the loss scaler (we accept them when fp16 is off)
_FP16 = {"enabled", "loss_scale", "loss_scale_window", "initial_scale_power", "hysteresis", "min_loss_scale", "auto_cast"}


@dataclass
class DeepSpeedConfig:
    """The fields of a DeepSpeed config that map onto minillm; None means "auto" (the command line decides)."""

    zero_stage: int = 0
    bucket_elements: Optional[int] = None  # reduce_bucket_size
    grad_accum_steps: Optional[int] = None
    micro_batch_size: Optional[int] = None
    train_batch_size: Optional[int] = None
    grad_clip: Optional[float] = None
    log_interval: Optional[int] = None
    optimizer: dict = field(default_factory=dict)  # TrainConfig fields: lr, betas, eps, weight_decay
    schedule: dict = field(default_factory=dict)  # TrainConfig fields: lr_schedule, warmup_steps, lr
    precision: dict = field(default_factory=dict)  # TrainConfig fields: fp16, bf16 (when not "auto")
    source: str = "<dict>"

    def train_config_overrides(self) -> dict:
        """``TrainConfig`` field -> value for every field this config sets (not "auto")."""
        out = {**self.optimizer, **self.schedule, **self.precision}
        if self.grad_accum_steps is not None:
            out["grad_accum_steps"] = self.grad_accum_steps
        if self.grad_clip is not None:
            out["grad_clip"] = self.grad_clip
        if self.log_interval is not None:
            out["log_interval"] = self.log_interval
        return out

    def bucket_cap_mb(self, itemsize: int = 4) -> Optional[float]:
        return None if self.bucket_elements is None else self.bucket_elements * itemsize / 2**20

    def global_batch_size(self, world_size: int, default: int, grad_accum_steps: int) -> int:
        """The global micro-batch (all ranks together), checked against ``train_batch_size``."""
        batch = default if self.micro_batch_size is None else self.micro_batch_size * world_size
        if self.train_batch_size is not None and self.train_batch_size != batch * grad_accum_steps:
            raise ValueError(
                f"{self.source}: train_batch_size={self.train_batch_size} but train_micro_batch_size_per_gpu x "
                f"gradient_accumulation_steps x world size = {batch // world_size} x {grad_accum_steps} x {world_size} "
                f"= {batch * grad_accum_steps}"
            )
        return batch


def _auto(value):
    return None if value == "auto" else value


def _unknown(got: dict, known: set, where: str) -> None:
    extra = sorted(set(got) - known)
    if extra:
        raise ValueError(f"{where}: unknown field(s) {extra}; known here: {sorted(known)}")


def _pos_int(value, where: str) -> Optional[int]:
    value = _auto(value)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():  # JSON's 2e8
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where} must be an integer >= 1 or \"auto\", got {value!r}")
    return value


def _number(value, where: str) -> Optional[float]:
    value = _auto(value)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{where} must be a number or \"auto\", got {value!r}")
    return float(value)


def _precision(section, name: str, where: str) -> Optional[bool]:
    """``{name}.enabled``: True/False, or None for "auto" or absent (the command line decides)."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ValueError(f"{where}: {name} must be an object, got {section!r}")
    _unknown(section, _FP16 if name == "fp16" else {"enabled"}, f"{where}: {name}")
    enabled = _auto(section.get("enabled", "auto"))
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"{where}: {name}.enabled must be true, false or \"auto\", got {enabled!r}")
    if enabled and name == "fp16":  # our scaler is torch's GradScaler: dynamic, starting at 2**16
        if _auto(section.get("loss_scale", 0)) not in (None, 0):
            raise ValueError(f"{where}: fp16.loss_scale={section['loss_scale']!r}: only dynamic loss scaling (0) is "
                             "supported")
        if _auto(section.get("initial_scale_power", 16)) not in (None, 16):
            raise ValueError(f"{where}: fp16.initial_scale_power={section['initial_scale_power']!r}: the scaler starts "
                             "at 2**16 (torch's GradScaler); set 16 or \"auto\"")
    return enabled


def load_deepspeed_config(source) -> DeepSpeedConfig:
    """Read a DeepSpeed config (a path to JSON, or a dict); errors name the file and the field."""
    where = "<dict>"
    if isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        try:
            with open(source, encoding="utf-8") as f:
                source = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(source, dict):
        raise ValueError(f"{where}: a DeepSpeed config must be a JSON object, got {type(source).__name__}")
    _unknown(source, _TOP, where)
    fp16 = _precision(source.get("fp16"), "fp16", where)
    bf16 = _precision(source.get("bf16"), "bf16", where)
    if fp16 and bf16:
        raise ValueError(f"{where}: fp16.enabled and bf16.enabled are both true; choose one")
    if source.get("wall_clock_breakdown", False) not in (False, "auto"):
        raise ValueError(f"{where}: wall_clock_breakdown=true is not supported (tokens/s are in metrics.jsonl)")
    cfg = DeepSpeedConfig(source=where)
    cfg.precision = {k: v for k, v in (("fp16", fp16), ("bf16", bf16)) if v is not None}

    zero = source.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise ValueError(f"{where}: zero_optimization must be an object, got {zero!r}")
    _unknown(zero, _ZERO, f"{where}: zero_optimization")
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2) or isinstance(stage, bool):
        raise ValueError(f"{where}: zero_optimization.stage must be 0, 1 or 2 (stage 3, parameter sharding, is not "
                         f"implemented), got {stage!r}")
    cfg.zero_stage = stage
    offload = zero.get("offload_optimizer", {"device": "none"})
    if not isinstance(offload, dict) or offload.get("device", "none") != "none":
        raise ValueError(f"{where}: zero_optimization.offload_optimizer must have device \"none\" (everything already "
                         f"lives in CPU memory), got {offload!r}")
    _unknown(offload, {"device", "pin_memory"}, f"{where}: zero_optimization.offload_optimizer")
    for name in ("allgather_partitions", "contiguous_gradients", "overlap_comm"):
        if not isinstance(zero.get(name, True), bool):
            raise ValueError(f"{where}: zero_optimization.{name} must be true or false, got {zero[name]!r}")
    if zero.get("reduce_scatter", True) is False and stage == 2:
        raise ValueError(f"{where}: zero_optimization.reduce_scatter=false with stage 2: stage 2 is the reduce-scatter")
    cfg.bucket_elements = _pos_int(zero.get("reduce_bucket_size"), f"{where}: zero_optimization.reduce_bucket_size")
    _pos_int(zero.get("allgather_bucket_size"), f"{where}: zero_optimization.allgather_bucket_size")

    cfg.grad_accum_steps = _pos_int(source.get("gradient_accumulation_steps"), f"{where}: gradient_accumulation_steps")
    cfg.micro_batch_size = _pos_int(source.get("train_micro_batch_size_per_gpu"), f"{where}: train_micro_batch_size_per_gpu")
    cfg.train_batch_size = _pos_int(source.get("train_batch_size"), f"{where}: train_batch_size")
    cfg.grad_clip = _number(source.get("gradient_clipping"), f"{where}: gradient_clipping")
    cfg.log_interval = _pos_int(source.get("steps_per_print"), f"{where}: steps_per_print")

    opt = source.get("optimizer")
    if opt is not None:
        if not isinstance(opt, dict) or opt.get("type") not in ("AdamW", "Adam"):
            raise ValueError(f"{where}: optimizer.type must be \"AdamW\" (the Trainer's optimizer), got {opt!r}"[:300])
        _unknown(opt, {"type", "params"}, f"{where}: optimizer")
        params = opt.get("params", {})
        _unknown(params, {"lr", "betas", "eps", "weight_decay"}, f"{where}: optimizer.params")
        for name in ("lr", "eps", "weight_decay"):
            value = _number(params.get(name), f"{where}: optimizer.params.{name}")
            if value is not None:
                cfg.optimizer[name] = value
        betas = _auto(params.get("betas"))
        if betas is not None:
            if not (isinstance(betas, list) and len(betas) == 2 and all(isinstance(b, (int, float)) for b in betas)):
                raise ValueError(f"{where}: optimizer.params.betas must be two numbers or \"auto\", got {betas!r}")
            cfg.optimizer["betas"] = tuple(float(b) for b in betas)

    sched = source.get("scheduler")
    if sched is not None:
        if not isinstance(sched, dict) or sched.get("type") not in _SCHEDULES:
            raise ValueError(f"{where}: scheduler.type must be one of {sorted(_SCHEDULES)}, got {sched!r}"[:300])
        _unknown(sched, {"type", "params"}, f"{where}: scheduler")
        params = sched.get("params", {})
        _unknown(params, {"warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "total_num_steps", "warmup_type"},
                 f"{where}: scheduler.params")
        cfg.schedule["lr_schedule"] = _SCHEDULES[sched["type"]]
        warm = _auto(params.get("warmup_num_steps"))
        if warm is not None:
            if not isinstance(warm, int) or isinstance(warm, bool) or warm < 0:
                raise ValueError(f"{where}: scheduler.params.warmup_num_steps must be an integer >= 0, got {warm!r}")
            cfg.schedule["warmup_steps"] = warm
        peak = _number(params.get("warmup_max_lr"), f"{where}: scheduler.params.warmup_max_lr")
        if peak is not None:
            cfg.schedule["lr"] = peak
        low = _number(params.get("warmup_min_lr"), f"{where}: scheduler.params.warmup_min_lr")
        if low not in (None, 0.0):
            raise ValueError(f"{where}: scheduler.params.warmup_min_lr must be 0 or \"auto\" (our warmup starts at "
                             f"lr / warmup_steps), got {low}")
        total = _pos_int(params.get("total_num_steps"), f"{where}: scheduler.params.total_num_steps")
        if total is not None:
            cfg.schedule["lr_decay_steps"] = total
        if params.get("warmup_type", "linear") not in ("linear", "auto"):
            raise ValueError(f"{where}: scheduler.params.warmup_type must be \"linear\", got {params['warmup_type']!r}")
    return cfg

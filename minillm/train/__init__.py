"""``minillm.train``: the training loop and its checkpoints (Happy LLM 5.3, 6.1, 6.2).

    from minillm.train import Trainer, TrainConfig

    config = TrainConfig(out_dir="out/pretrain", max_steps=2000, grad_accum_steps=4, lr=1e-3, warmup_steps=100)
    trainer = Trainer(model, None, train_loader, val_loader, config)   # None: AdamW built from the config
    trainer.resume()                                                   # continue if out_dir has a checkpoint
    trainer.train()

    config.py      TrainConfig (validated dataclass) and RESUME_KEYS
    trainer.py     Trainer: accumulation, clipping, schedule, evaluation, samples, logging, resume
    checkpoint.py  atomic safetensors + JSON checkpoint directories, keep-last-N
    metrics.py     metrics.jsonl logger and the loss-curve plot
    sampling.py    make_sample_fn: prompt continuations at each evaluation
"""
from .checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint, save_checkpoint
from .config import RESUME_KEYS, TrainConfig
from .metrics import MetricsLogger, plot_metrics, read_metrics
from .sampling import make_sample_fn
from .trainer import (
    CheckpointMismatchError, OutputDirInUseError, Trainer, check_out_dir, default_forward, make_scheduler,
    used_run_files,
)

__all__ = [
    "CheckpointMismatchError", "MetricsLogger", "RESUME_KEYS", "TrainConfig", "Trainer", "default_forward",
    "latest_checkpoint", "list_checkpoints", "make_sample_fn", "make_scheduler", "plot_metrics",
    "read_checkpoint", "read_metrics", "save_checkpoint", "OutputDirInUseError", "check_out_dir", "used_run_files",
]

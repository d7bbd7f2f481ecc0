"""The training loop (Happy LLM 5.3 "pretrain a small LLM", 6.1 / 6.2 pretraining and SFT with a Trainer).

One optimizer update ("step") in this loop::

    for micro in range(grad_accum_steps):            # a big batch, one slice at a time
        loss = model(x, targets=y).loss               # mean cross-entropy over the micro-batch
        (loss / grad_accum_steps).backward()          # grads add up across micro-batches
    grad_norm = clip_grad_norm_(params, grad_clip)   # tame a rare huge gradient
    optimizer.step(); optimizer.zero_grad()          # AdamW update, forget the grads
    scheduler.step()                                 # warmup + cosine: the lr of the next update

Dividing by ``grad_accum_steps`` makes the summed gradient the gradient of the *mean*
loss over the whole effective batch, so changing ``grad_accum_steps`` does not change
the right learning rate. Around that core: periodic evaluation (validation loss and
perplexity ``exp(loss)``), sample generations, a tqdm bar, ``metrics.jsonl``, a loss
curve PNG and checkpoints (see ``checkpoint.py``).

**Exact resume**: a checkpoint holds everything the next step depends on -- weights,
AdamW moments and step counts, the schedule position, minillm's RNG state (dropout) and
the data loader's position -- so a run stopped at step k and resumed computes exactly
the same losses as one that never stopped (``tests/test_train.py`` checks this).

**Mixed precision** (``TrainConfig(bf16=True)`` or ``fp16=True``, the CLI's ``--bf16``/``--fp16``):
each micro-batch's forward and backward run inside ``MixedPrecision.autocast()`` on low-precision
copies of the float32 master weights; fp16 also scales the loss and skips an update whose
gradients overflowed (``GradScaler``). See ``amp.py`` for what it costs on a CPU.

Data parallel on N MPI ranks (6.1.5) is ``minillm.distributed.DistributedTrainer``, which fills in
this class's five seams (``is_world_process_zero``, ``_prepare_out_dir``, ``_loss_weight``,
``_reduce_step_stats``, ``_clip_and_step``); the training loop itself is the same on one process and on N.

    trainer = Trainer(model, None, train_loader, val_loader, TrainConfig(out_dir="out", max_steps=2000))
    trainer.resume()      # continue from out/checkpoints/step_* if there is one
    trainer.train()
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import time
import warnings
from typing import Callable, Optional

import numpy as np

from .._runtime import tune_malloc
from .. import __version__
from .._files import atomic_write
from ..autograd import no_grad
from ..io.checkpoint import model_config_dict
from ..nn.module import Module
from ..optim import (
    AdamW, ConstantLR, LinearDecay, WarmupCosine, clip_grad_norm_, flatten_state_dict,
    param_groups_for_weight_decay, unflatten_state_dict,
)
from ..optim.serialization import to_json_value
from ..random import get_rng_state, manual_seed, set_rng_state
from ..tensor import Tensor
from ..io.guards import check_float_sources
from .amp import GradScaler, MixedPrecision
from .checkpoint import STATE_FILE, checkpoint_step, list_checkpoints, read_checkpoint
from .checkpoint import save_checkpoint as _write_checkpoint
from .config import RESUME_KEYS, TrainConfig
from .metrics import MetricsLogger, plot_metrics

__all__ = ["Trainer", "CheckpointMismatchError", "OutputDirInUseError", "default_forward", "make_scheduler",
           "check_out_dir", "used_run_files"]


class CheckpointMismatchError(ValueError):
    """The checkpoint was written for a different model, optimizer or training config."""


class OutputDirInUseError(ValueError):
    """A fresh run was started in an ``out_dir`` that holds another run."""


# What a run leaves in its out_dir. Any of them means "used": a fresh run there would overwrite
# the checkpoints, append to the metrics (two runs in one loss plot) and let keep_last delete
# the other run's checkpoints. ``model``/``adapter`` are what the CLI and examples save at the end.
_RUN_MARKERS = ("metrics.jsonl", "checkpoints", "model", "adapter")
# What the Trainer itself writes (cleared by overwrite=True before a fresh run).
_TRAINER_FILES = ("metrics.jsonl", "checkpoints", "loss_curve.png", "config.json")


def used_run_files(out_dir: str) -> list:
    """The files/folders in ``out_dir`` that show another run used it (empty list: a fresh folder)."""
    found = []
    for name in _RUN_MARKERS:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and os.listdir(path) or os.path.isfile(path) and os.path.getsize(path) > 0:
            found.append(name)
    return found


def check_out_dir(out_dir: str, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse (``OutputDirInUseError``) to start a fresh run in a used ``out_dir``.

    ``resume=True`` (continue the run that is there) or ``overwrite=True`` (replace it) say the
    user knows. The CLI and the examples call this before any work; ``Trainer.train`` calls it
    again, so a library user gets the same protection.
    """
    used = used_run_files(out_dir)
    if used and not (overwrite or resume):
        raise OutputDirInUseError(
            f"{out_dir} already holds a training run ({', '.join(used)}); starting a new run there would overwrite "
            "its checkpoints and mix its metrics. Choose another output folder, resume it (--resume / "
            "Trainer.resume()), or replace it (--overwrite / TrainConfig(overwrite=True))"
        )


# ---------------------------------------------------------------------------- helpers
def _as_tensor(x):
    if x is None or isinstance(x, Tensor):
        return x
    return Tensor(np.asarray(x))  # shares the array: batches are fresh arrays anyway


def default_forward(model, batch):
    """Call ``model`` on a batch from ``minillm.data.DataLoader``; returns its output.

    Accepts ``(input_ids, targets)``, ``(input_ids, targets, attention_mask)`` (SFT)
    or a dict with ``input_ids`` and ``targets``/``labels`` (and ``attention_mask``).
    """
    if isinstance(batch, dict):
        x = batch["input_ids"]
        y = batch["targets"] if "targets" in batch else batch.get("labels")
        mask = batch.get("attention_mask")
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        x, y = batch[0], batch[1]
        mask = batch[2] if len(batch) == 3 else None
    else:
        raise TypeError(
            "default_forward expects (input_ids, targets), (input_ids, targets, attention_mask) or a dict; "
            f"got {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            + ". Pass forward_fn=... to the Trainer for other batch layouts."
        )
    if y is None:
        raise ValueError("the batch has no targets: the Trainer needs them to compute a loss")
    if mask is None:
        return model(_as_tensor(x), targets=_as_tensor(y))
    return model(_as_tensor(x), targets=_as_tensor(y), attention_mask=_as_tensor(mask))


def _count_tokens(batch) -> int:
    """Tokens fed to the model (for tokens per second): the size of input_ids."""
    x = batch["input_ids"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(np.asarray(x.data if isinstance(x, Tensor) else x).size)


def _forever(loader):
    """Batches without end: ``loader.iter_forever()`` if it has one, else re-iterate every epoch."""
    if hasattr(loader, "iter_forever"):
        yield from loader.iter_forever()
        return
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the data loader yielded no batches")


def _len_or_none(loader) -> Optional[int]:
    try:
        return len(loader)
    except TypeError:
        return None


def make_scheduler(optimizer, config: TrainConfig):
    """The schedule named by ``config.lr_schedule``; each group's starting lr is its peak."""
    if config.lr_schedule == "cosine":
        return WarmupCosine(optimizer, config.warmup_steps, config.decay_steps, config.min_lr)
    if config.lr_schedule == "linear":
        return LinearDecay(optimizer, config.warmup_steps, config.decay_steps, config.min_lr)
    return ConstantLR(optimizer, config.warmup_steps)


def _json_lenient(value):
    """Like ``to_json_value`` but turns unknown objects (dtypes, paths) into strings: for config records."""
    if isinstance(value, dict):
        return {str(k): _json_lenient(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_lenient(v) for v in value]
    try:
        return to_json_value(value)
    except TypeError:
        return str(value)


# ---------------------------------------------------------------------------- the Trainer
class Trainer:
    """Train ``model`` on ``train_loader``; see the module docstring.

    Arguments:
        model: an ``nn.Module`` whose call ``model(input_ids, targets=...)`` returns an
            object with ``.loss`` (or the loss tensor itself).
        optimizer: an optimizer, or None to build ``AdamW`` from the config with weight
            decay only on >= 2-D non-embedding weights (``param_groups_for_weight_decay``).
        train_loader: yields batches; a ``minillm.data.DataLoader`` (resumable) is expected.
        val_loader: optional; ``evaluate()`` reads its first ``eval_batches`` batches.
        config: a ``TrainConfig``.
        sample_fn: optional ``sample_fn(model, step) -> str | list[str]``, called at each
            evaluation (model in eval mode, no grad); the texts go to metrics.jsonl.
            minillm's RNG state is restored afterwards, so sampling never changes training.
        forward_fn: optional ``forward_fn(model, batch) -> loss`` (or an output with
            ``.loss``) for batch layouts ``default_forward`` does not know. If the output also
            has ``.metrics`` (a dict of numbers), they are averaged like the loss and logged
            beside it (as ``val_<name>`` in evaluations): DPO logs its rewards this way.

    The learning-rate schedule is built from the config; its peak for each group is
    that group's starting lr (``config.lr`` when the Trainer builds the optimizer).
    """

    def __init__(self, model, optimizer=None, train_loader=None, val_loader=None, config: Optional[TrainConfig] = None,
                 sample_fn: Optional[Callable] = None, forward_fn: Optional[Callable] = None):
        if train_loader is None:
            raise ValueError("Trainer needs a train_loader")
        self.config = config if config is not None else TrainConfig()
        if not isinstance(self.config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(self.config).__name__}")
        tune_malloc()  # reuse freed activation memory across steps (process-wide; MINILLM_MALLOC_TUNING=0 turns it off)
        cfg = self.config
        loader_bs = getattr(train_loader, "batch_size", None)
        if cfg.batch_size is not None and loader_bs is not None and loader_bs != cfg.batch_size:
            raise ValueError(
                f"TrainConfig.batch_size={cfg.batch_size} but train_loader.batch_size={loader_bs}; "
                "make them equal (or leave TrainConfig.batch_size=None)"
            )
        if not isinstance(model, Module):
            raise TypeError(f"Trainer: model must be an nn.Module (it needs parameters(), state_dict() and mode()), "
                            f"got {type(model).__name__}")
        self.model = model
        if optimizer is None:
            optimizer = AdamW(param_groups_for_weight_decay(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                              eps=cfg.eps)
        self.optimizer = optimizer
        self.scheduler = make_scheduler(optimizer, cfg)
        # mixed precision (TrainConfig.bf16 / fp16): low-precision copies of the float32 master weights
        # in forward and backward; fp16 also scales the loss (GradScaler) so small gradients survive
        self.amp = MixedPrecision(model, cfg.mixed_precision) if cfg.mixed_precision else None
        self.scaler = GradScaler() if cfg.fp16 else None
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.sample_fn = sample_fn
        self.forward_fn = forward_fn
        # the validation loader's starting state: every evaluation reads the same batches
        self._val_start = val_loader.state_dict() if hasattr(val_loader, "state_dict") else None

        self.step = 0  # optimizer updates done
        self.tokens_seen = 0
        self.best_val_loss = math.inf
        self.losses: list = []  # train loss of each update run by this Trainer object
        self.last_eval: Optional[dict] = None
        self.last_checkpoint: Optional[str] = None
        self._resumed = False
        self._resume_requested = False  # resume() was called (even if it found no checkpoint)
        self._batches = None
        self._last_metrics: dict = {}  # the extra numbers of the last compute_loss (see forward_fn)
        self.metrics = MetricsLogger(os.path.join(cfg.out_dir, "metrics.jsonl"))

    # ------------------------------------------------------------------ one loss
    def compute_loss(self, batch) -> Tensor:
        """The scalar loss of one batch (forward pass only)."""
        out = self.forward_fn(self.model, batch) if self.forward_fn is not None else default_forward(self.model, batch)
        loss = out.loss if hasattr(out, "loss") else out
        # an output may carry more numbers to log with the loss (DPO's rewards/margins, ...)
        extra = getattr(out, "metrics", None) if loss is not out else None
        self._last_metrics = {k: float(v) for k, v in extra.items()} if isinstance(extra, dict) else {}
        if not isinstance(loss, Tensor):
            raise TypeError(f"the model's loss must be a Tensor, got {type(loss).__name__} (did you pass targets?)")
        if loss.data.size != 1:
            raise ValueError(f"the loss must be a scalar, got shape {loss.shape}")
        return loss

    def _params(self) -> list:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    # ------------------------------------------------------------------ the seams a subclass may change
    # ``minillm.distributed.DistributedTrainer`` overrides these five to train on N processes;
    # on one process they are the plain steps below, and the loop never knows the difference.
    def is_world_process_zero(self) -> bool:
        """True in the process that writes files, logs and evaluates (always, on one process)."""
        return True

    def _prepare_out_dir(self) -> None:
        """Refuse a used out_dir for a fresh run (``check_out_dir``), clear it on overwrite, write config.json."""
        cfg = self.config
        if self.step == 0 and not self._resumed:  # a fresh run: never on top of another one
            check_out_dir(cfg.out_dir, overwrite=cfg.overwrite, resume=self._resume_requested)
            for name in _TRAINER_FILES:  # overwrite=True (or a resume that found no checkpoint): start clean
                path = os.path.join(cfg.out_dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
        os.makedirs(cfg.out_dir, exist_ok=True)
        atomic_write(os.path.join(cfg.out_dir, "config.json"),
                     json.dumps({"train": cfg.to_dict(), "model": model_config_dict(self.model)}, indent=1))

    def _loss_weight(self, batch) -> float:
        """What this process's micro-batch loss counts for in the global batch (1.0 on one process)."""
        return 1.0

    def _reduce_step_stats(self, loss_sum: float, tokens: int) -> tuple:
        """The step's summed micro-batch losses and token count over the whole (global) batch."""
        return loss_sum, tokens

    def _clip_and_step(self, params: list, max_norm: float) -> float:
        """Clip the accumulated gradients, update, forget them; returns the norm before clipping.

        fp16 (``self.scaler``): divide the gradients by the loss scale first, and skip the update
        if any is inf/nan (the scaler then backs off), as ``torch.amp.GradScaler`` does."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # the true gradients (clipping needs them)
            grad_norm = clip_grad_norm_(params, max_norm)  # inf/nan norm: nothing is scaled
            self.scaler.step(self.optimizer)  # skipped on overflow
            self.scaler.update()
            self.optimizer.zero_grad()
            return grad_norm
        grad_norm = clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return grad_norm

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict:
        """Run updates until ``config.max_steps``; returns the last metrics."""
        cfg = self.config
        self._prepare_out_dir()
        if self.step == 0 and not self._resumed:
            manual_seed(cfg.seed)  # a fresh run: dropout masks depend only on the seed
        if self._batches is None:
            self._batches = _forever(self.train_loader)
        params = self._params()
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf  # inf: measure, never scale
        accum = cfg.grad_accum_steps
        self.optimizer.zero_grad()
        self.model.train()

        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            tqdm = None
        bar = None
        if tqdm is not None and cfg.progress and self.is_world_process_zero():
            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        window = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0, "extra": {}}
        result: dict = {}
        try:
            while self.step < cfg.max_steps:
                lr = float(self.optimizer.param_groups[0]["lr"])
                t0 = time.perf_counter()
                loss_sum, tokens = 0.0, 0
                for _ in range(accum):
                    batch = next(self._batches)
                    with self.amp.autocast() if self.amp is not None else contextlib.nullcontext():
                        loss = self.compute_loss(batch)
                        weight = self._loss_weight(batch)
                        if weight != 1.0:  # N ranks: a shard holding more target tokens counts for more
                            loss = loss * weight
                        value = float(loss.item())
                        if not math.isfinite(value):
                            raise FloatingPointError(
                                f"loss is {value} at step {self.step + 1}: lower the lr (now {lr:.3g}) or enable "
                                f"grad_clip; the last good checkpoint is {self.last_checkpoint}"
                            )
                        if self.scaler is not None:
                            loss = self.scaler.scale(loss)  # fp16: gradients scale x larger, above float16's underflow
                        (loss / accum).backward()  # grads of the mean loss over the accumulated batch
                    loss_sum += value
                    for k, v in self._last_metrics.items():
                        window["extra"][k] = window["extra"].get(k, 0.0) + v / accum
                    tokens += _count_tokens(batch)
                loss_sum, tokens = self._reduce_step_stats(loss_sum, tokens)
                grad_norm = self._clip_and_step(params, max_norm)
                self.scheduler.step()
                self.step += 1
                self.tokens_seen += tokens
                seconds = time.perf_counter() - t0

                train_loss = loss_sum / accum
                self.losses.append(train_loss)
                window["loss"] += train_loss
                window["steps"] += 1
                window["tokens"] += tokens
                window["seconds"] += seconds
                tok_per_sec = window["tokens"] / max(window["seconds"], 1e-9)
                if bar is not None:
                    bar.set_postfix(loss=f"{train_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tok_per_sec:,.0f}",
                                    refresh=False)
                    bar.update(1)

                final = self.step == cfg.max_steps
                if self.step % cfg.log_interval == 0 or final:
                    result = {
                        "step": self.step, "train_loss": window["loss"] / window["steps"], "lr": lr,
                        "grad_norm": grad_norm, "tokens_per_sec": tok_per_sec, "tokens_seen": self.tokens_seen,
                        **{k: v / window["steps"] for k, v in window["extra"].items()},
                    }
                    if self.scaler is not None:  # fp16: the loss scale now, and the updates skipped on overflow
                        result.update(loss_scale=self.scaler.get_scale(), skipped_steps=self.scaler.skipped_steps)
                    if self.is_world_process_zero():
                        self.metrics.log(result)
                    window = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0, "extra": {}}
                if (self.val_loader is not None and cfg.eval_interval and (self.step % cfg.eval_interval == 0 or final)
                        and self.is_world_process_zero()):
                    result = {**result, **self._evaluate_and_sample(bar)}
                if (cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0) or final:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        if cfg.plot and self.is_world_process_zero():
            plot_metrics(self.metrics.path, os.path.join(cfg.out_dir, "loss_curve.png"))
        return result

    # ------------------------------------------------------------------ evaluation
    @no_grad()
    def evaluate(self) -> dict:
        """``{"val_loss", "val_ppl"}`` over the first ``eval_batches`` validation batches.

        The loss is the mean of the per-batch mean losses; perplexity is ``exp(val_loss)``,
        the number of tokens the model is "choosing between" on average (a uniform guess
        over V tokens has perplexity V).
        """
        if self.val_loader is None:
            raise ValueError("evaluate() needs a val_loader")
        if self._val_start is not None:
            self.val_loader.load_state_dict(self._val_start)
        n = self.config.eval_batches
        batches = iter(self.val_loader) if n is None else itertools.islice(_forever(self.val_loader), n)
        losses, extra = [], {}
        with self.model.mode(training=False):  # dropout off; each module's own mode restored after
            for batch in batches:
                losses.append(float(self.compute_loss(batch).item()))
                for k, v in self._last_metrics.items():
                    extra[k] = extra.get(k, 0.0) + v
        if not losses:
            raise ValueError("the validation loader yielded no batches")
        val_loss = sum(losses) / len(losses)
        val_ppl = math.exp(val_loss) if val_loss < 700 else math.inf  # exp overflows past ~709
        return {"val_loss": val_loss, "val_ppl": val_ppl, **{f"val_{k}": v / len(losses) for k, v in extra.items()}}

    def _evaluate_and_sample(self, bar) -> dict:
        metrics = self.evaluate()
        self.best_val_loss = min(self.best_val_loss, metrics["val_loss"])
        self.last_eval = {"step": self.step, **metrics}
        self.metrics.log(self.last_eval)
        say = bar.write if bar is not None else (lambda s: None)
        say(f"step {self.step}: val_loss {metrics['val_loss']:.4f}, val_ppl {metrics['val_ppl']:.2f}")
        if self.sample_fn is not None:
            rng = get_rng_state()  # sampling must not change the training run's random numbers
            try:
                with no_grad(), self.model.mode(training=False):
                    samples = self.sample_fn(self.model, self.step)
            finally:
                set_rng_state(rng)
            samples = [samples] if isinstance(samples, str) else list(samples)
            self.metrics.log({"step": self.step, "samples": [str(s) for s in samples]})
            for s in samples:
                say(f"  sample: {s!r}")
        if self.config.plot:
            plot_metrics(self.metrics.path, os.path.join(self.config.out_dir, "loss_curve.png"))
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def _model_arrays(self) -> tuple:
        """(name -> array with each shared array once, alias name -> stored name, name -> shape)."""
        arrays, tied, shapes, first = {}, {}, {}, {}
        for name, t in self.model.state_dict().items():
            arr = t.data if isinstance(t, Tensor) else np.asarray(t)
            shapes[name] = list(arr.shape)
            if id(arr) in first:  # a tied weight: store it once
                tied[name] = first[id(arr)]
                continue
            first[id(arr)] = name
            arrays[name] = arr
        return arrays, tied, shapes

    def save_checkpoint(self) -> str:
        """Write ``out_dir/checkpoints/step_<step>/`` (atomically) and keep the last ``keep_last``."""
        model_arrays, tied, shapes = self._model_arrays()
        opt_arrays, opt_meta = flatten_state_dict(self.optimizer.state_dict())
        loader_state = self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
        state = {
            "minillm_version": __version__,
            "config": self.config.to_dict(),
            "resume_values": self.config.resume_values(),
            "model_config": model_config_dict(self.model),
            "model_params": shapes,
            "tied": tied,
            "optimizer_class": type(self.optimizer).__name__,
            "optimizer": opt_meta,
            "scheduler": _json_lenient(self.scheduler.state_dict()),
            "rng": {"minillm": get_rng_state()},
            "train_loader": _json_lenient(loader_state),
            "train_batches_per_epoch": _len_or_none(self.train_loader),
            "tokens_seen": self.tokens_seen,
            "best_val_loss": self.best_val_loss if math.isfinite(self.best_val_loss) else None,
        }
        if self.scaler is not None:  # fp16: the loss scale and its growth counter, for an exact resume
            state["grad_scaler"] = self.scaler.state_dict()
        path = _write_checkpoint(self.config.out_dir, self.step, model_arrays, opt_arrays, to_json_value(state),
                                 keep_last=self.config.keep_last)
        self.last_checkpoint = path
        return path

    def _mismatches(self, state: dict, strict_config: bool) -> list:
        problems = []
        if strict_config:
            saved_cfg = state.get("resume_values", {})
            now_cfg = self.config.resume_values()
            for key in RESUME_KEYS:
                if key in saved_cfg and saved_cfg[key] != now_cfg.get(key):
                    hint = ""
                    if key == "decay_steps":
                        hint = (f" (the lr reaches min_lr at step {saved_cfg[key]} in the checkpoint's schedule; "
                                f"set lr_decay_steps={saved_cfg[key]} to keep it; on the command line: --lr-decay-steps "
                                f"{saved_cfg[key]})")
                    elif key == "warmup_steps":
                        hint = (f" (set warmup_steps={saved_cfg[key]} to keep it; on the command line: --warmup-steps "
                                f"{saved_cfg[key]})")
                    problems.append(f"config.{key}: checkpoint {saved_cfg[key]!r}, now {now_cfg.get(key)!r}{hint}")
            saved_n, now_n = state.get("train_batches_per_epoch"), _len_or_none(self.train_loader)
            if saved_n is not None and now_n is not None and saved_n != now_n:
                problems.append(f"train_loader: {saved_n} batches per epoch in the checkpoint, {now_n} now "
                                "(different data or batch size)")
        saved_model, now_model = state.get("model_config"), model_config_dict(self.model)
        if saved_model is not None and now_model is not None:
            for key in sorted(set(saved_model) | set(now_model)):
                if saved_model.get(key) != now_model.get(key):
                    problems.append(f"model config {key}: checkpoint {saved_model.get(key)!r}, now {now_model.get(key)!r}")
        saved_shapes = state.get("model_params", {})
        now_shapes = {k: list(v) for k, v in self._model_arrays()[2].items()}
        for name in sorted(set(saved_shapes) | set(now_shapes)):
            if name not in now_shapes:
                problems.append(f"parameter {name}: in the checkpoint but not in the model")
            elif name not in saved_shapes:
                problems.append(f"parameter {name}: in the model but not in the checkpoint")
            elif saved_shapes[name] != now_shapes[name]:
                problems.append(f"parameter {name}: shape {tuple(saved_shapes[name])} in the checkpoint, "
                                f"{tuple(now_shapes[name])} in the model")
        if state.get("optimizer_class") != type(self.optimizer).__name__:
            problems.append(f"optimizer: checkpoint {state.get('optimizer_class')}, now {type(self.optimizer).__name__}")
        return problems

    def _prepare_checkpoint(self, path: str, strict_config: bool) -> dict:
        """Read checkpoint ``path`` and check everything in it against this Trainer; change nothing.

        Raises ``CheckpointMismatchError`` when the checkpoint is intact but for another run
        (model, optimizer, training config), and ``ValueError`` / ``OSError`` naming the file
        when it is damaged (a missing or mistyped field of trainer_state.json, a truncated
        safetensors file).
        """
        model_arrays, opt_arrays, state = read_checkpoint(path)
        state_path = os.path.join(path, STATE_FILE)
        _check_state_fields(state, state_path, checkpoint_step(path))
        problems = self._mismatches(state, strict_config)
        step = state["step"]
        if step > self.config.max_steps:
            problems.append(f"step: the checkpoint is at step {step}, past max_steps={self.config.max_steps}; "
                            "raise max_steps (--steps) to train further")
        if problems:
            shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
            raise CheckpointMismatchError(
                f"checkpoint {path} does not match this run:\n  " + "\n  ".join(shown)
                + "\nStart a new out_dir, or pass strict_config=False to accept training-config changes."
            )
        # the arrays themselves (not only the JSON's list of them) must fit the model
        model_file = os.path.join(path, "model.safetensors")
        stored = set(self._model_arrays()[0])
        if set(model_arrays) != stored:
            raise ValueError(f"{model_file}: tensors {sorted(set(model_arrays) ^ stored)[:8]} differ from the model's")
        shapes = self._model_arrays()[2]
        wrong = [f"{n}: {a.shape} in the file, {tuple(shapes[n])} in the model" for n, a in model_arrays.items()
                 if tuple(a.shape) != tuple(shapes[n])]
        if wrong:
            raise ValueError(f"{model_file}: " + "; ".join(wrong[:8]))
        check_float_sources(model_arrays, self.model, model_file)
        for alias, name in state["tied"].items():
            if name not in model_arrays:
                raise ValueError(f"{state_path}: tied weight {alias!r} points to {name!r}, which the checkpoint lacks")
        try:
            opt_state = unflatten_state_dict(opt_arrays, state["optimizer"])
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{state_path}: damaged optimizer metadata ({type(e).__name__}: {e})") from None
        loader_state = state.get("train_loader")
        if loader_state is not None and not hasattr(self.train_loader, "load_state_dict"):
            raise CheckpointMismatchError(
                "the checkpoint stores a data-loader position but this train_loader has no load_state_dict()"
            )
        # the loader and the RNG check their own state: try it on them and put theirs back at once
        rng_now = get_rng_state()
        try:
            set_rng_state(state["rng"]["minillm"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{state_path}: damaged rng state ({type(e).__name__}: {e})") from None
        finally:
            set_rng_state(rng_now)
        if loader_state is not None and hasattr(self.train_loader, "state_dict"):
            loader_now = self.train_loader.state_dict()
            try:
                self.train_loader.load_state_dict(loader_state)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{state_path}: damaged train_loader state ({type(e).__name__}: {e})") from None
            finally:
                self.train_loader.load_state_dict(loader_now)
        return {"path": path, "state": state, "model": model_arrays, "optimizer": opt_state}

    def _apply_checkpoint(self, plan: dict) -> None:
        """Load a checkpoint ``_prepare_checkpoint`` accepted. The parts that validate their own
        input (optimizer, data loader, RNG) go first, each undone if a later one refuses."""
        state, path = plan["state"], plan["path"]
        state_path = os.path.join(path, STATE_FILE)
        # Hyperparameters (lr, betas, weight decay, the schedule's shape) come from this run's
        # config -- equal to the checkpoint's unless strict_config=False was asked for; the
        # checkpoint provides the state: moments, step counts, the schedule's position.
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        opt_before = self.optimizer.state_dict()
        loader_before = self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
        rng_before = get_rng_state()
        try:
            self.optimizer.load_state_dict(plan["optimizer"])  # validates everything before it changes anything
            if state.get("train_loader") is not None:
                self.train_loader.load_state_dict(state["train_loader"])
            set_rng_state(state["rng"]["minillm"])
        except (KeyError, TypeError, ValueError) as e:
            self.optimizer.load_state_dict(opt_before)
            if loader_before is not None:
                self.train_loader.load_state_dict(loader_before)
            set_rng_state(rng_before)
            raise ValueError(f"{state_path}: {type(e).__name__}: {e} (nothing was loaded)") from None
        for group, h in zip(self.optimizer.param_groups, hyper):
            group.update(h)
        self.model.load_state_dict(plan["model"], strict=True)  # names, shapes and dtypes were checked
        if self.scaler is not None and isinstance(state.get("grad_scaler"), dict):
            self.scaler.load_state_dict(state["grad_scaler"])  # absent (a bf16/fp32 run's checkpoint): start fresh
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), "last_step": state["scheduler"]["last_step"]})
        self.step = state["step"]
        self.tokens_seen = state.get("tokens_seen", 0)
        best = state.get("best_val_loss")
        self.best_val_loss = math.inf if best is None else float(best)
        self._batches = None  # restart the batch stream from the restored loader position
        self._resumed = True
        self.last_checkpoint = path
        if self.is_world_process_zero():
            self.metrics.truncate_after(self.step)  # the steps after it will be logged again

    def load_checkpoint(self, path: str, strict_config: bool = True) -> None:
        """Restore everything from checkpoint directory ``path`` so ``train()`` continues exactly.

        Raises ``CheckpointMismatchError`` listing every difference if the checkpoint was
        written for another model, optimizer or (with ``strict_config``) a training config
        whose ``RESUME_KEYS`` differ (or a train loader with another number of batches per
        epoch), and ``ValueError`` naming the file when it is damaged. These checks all run
        before anything is loaded: on an error the Trainer is unchanged.
        """
        self._apply_checkpoint(self._prepare_checkpoint(path, strict_config))

    def resume(self, out_dir: Optional[str] = None, strict_config: bool = True) -> Optional[str]:
        """Load the newest intact checkpoint in ``out_dir`` (default ``config.out_dir``); returns its path or None.

        A damaged newest checkpoint (truncated file, broken trainer_state.json) is skipped with a
        warning and the previous one is used; a checkpoint of another run
        (``CheckpointMismatchError``) stops the resume, since the older ones belong to it too.
        """
        self._resume_requested = True
        found = list_checkpoints(out_dir if out_dir is not None else self.config.out_dir)
        damaged = []
        for _, path in reversed(found):
            try:
                plan = self._prepare_checkpoint(path, strict_config)
            except CheckpointMismatchError:
                raise
            except (ValueError, OSError) as e:
                damaged.append(f"{path}: {e}")
                warnings.warn(f"checkpoint {path} is damaged, trying the previous one: {e}", stacklevel=2)
                continue
            self._apply_checkpoint(plan)
            return path
        if damaged:
            raise ValueError("every checkpoint is damaged; nothing was loaded:\n  " + "\n  ".join(damaged))
        return None


def _check_state_fields(state: dict, where: str, dir_step: Optional[int]) -> None:
    """Every field ``load_checkpoint`` uses, with its JSON type and range, before anything is applied."""
    def need(key, types, what):
        if key not in state:
            raise ValueError(f"{where}: missing field {key!r}")
        value = state[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"{where}: field {key!r} must be {what}, got {value!r}"[:300])
        return value

    def nonneg_int(value, key):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where}: field {key!r} must be an integer >= 0, got {value!r}")
        return value

    step = nonneg_int(need("step", (int,), "an integer"), "step")
    if dir_step is not None and step != dir_step:
        raise ValueError(f"{where}: step {step} does not match its directory name (step {dir_step})")
    need("resume_values", (dict,), "an object")
    params = need("model_params", (dict,), "an object")
    for name, shape in params.items():
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"{where}: model_params[{name!r}] must be a list of integers, got {shape!r}")
    tied = need("tied", (dict,), "an object")
    if not all(isinstance(v, str) for v in tied.values()):
        raise ValueError(f"{where}: field 'tied' must map names to names, got {tied!r}")
    need("optimizer_class", (str,), "a string")
    need("optimizer", (dict,), "an object")
    sched = need("scheduler", (dict,), "an object")
    last = nonneg_int(sched.get("last_step"), "scheduler.last_step")
    if last != step:
        raise ValueError(f"{where}: scheduler.last_step {last} does not match step {step}")
    rng = need("rng", (dict,), "an object")
    if not isinstance(rng.get("minillm"), dict):
        raise ValueError(f"{where}: field 'rng' must hold the generator state under 'minillm', got {rng!r}"[:300])
    if state.get("model_config") is not None and not isinstance(state["model_config"], dict):
        raise ValueError(f"{where}: field 'model_config' must be an object or null")
    if state.get("train_loader") is not None and not isinstance(state["train_loader"], dict):
        raise ValueError(f"{where}: field 'train_loader' must be an object or null")
    if state.get("train_batches_per_epoch") is not None:
        nonneg_int(state["train_batches_per_epoch"], "train_batches_per_epoch")
    nonneg_int(state.get("tokens_seen", 0), "tokens_seen")
    scaler = state.get("grad_scaler")
    if scaler is not None and not (isinstance(scaler, dict) and isinstance(scaler.get("scale"), (int, float))
                                   and isinstance(scaler.get("_growth_tracker"), int)):
        raise ValueError(f"{where}: field 'grad_scaler' must hold a numeric 'scale' and '_growth_tracker', got {scaler!r}"[:300])
    best = state.get("best_val_loss")
    if best is not None and (not isinstance(best, (int, float)) or isinstance(best, bool)):
        raise ValueError(f"{where}: field 'best_val_loss' must be a number or null, got {best!r}")

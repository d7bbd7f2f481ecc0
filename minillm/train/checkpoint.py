"""Checkpoints on disk: safetensors for arrays, JSON for the rest, data only (Happy LLM 5.3, 6.1).

One checkpoint is one directory::

    out_dir/checkpoints/step_00000500/
        model.safetensors        the model's weights, by state_dict name (a tied weight stored once)
        optimizer.safetensors    the optimizer's arrays ("state.<i>.exp_avg", ...)
        trainer_state.json       step, configs, optimizer hyperparameters and step counts,
                                 schedule, RNG state, data-loader position

**Crash safety**: everything is written into ``.tmp-step_00000500-<pid>/`` and then
renamed to ``step_00000500/``. A rename is atomic, so a ``step_*`` directory is always
complete: a crash mid-save leaves only a ``.tmp-*`` directory, which is ignored (and
cleared by the next save). Only after the new checkpoint exists are old ones deleted
(``keep_last``).

Why not ``torch.save`` as the book does? Its format rebuilds Python objects named in the
file, so opening a downloaded checkpoint can run anything; a safetensors file is only a JSON header plus
raw bytes, and it opens in any language.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Optional

from .._files import atomic_write, fsync_dir
from ..io.jsonfile import read_json_object
from ..io.safetensors import load_safetensors, save_safetensors

__all__ = [
    "CHECKPOINT_FORMAT", "save_checkpoint", "read_checkpoint", "list_checkpoints", "latest_checkpoint",
    "checkpoint_dir_name", "checkpoint_step", "STATE_FILE",
]

CHECKPOINT_FORMAT = "minillm.checkpoint/1"
_STEP_DIR = re.compile(r"^step_(\d+)$")
MODEL_FILE, OPTIMIZER_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "trainer_state.json"


def checkpoint_step(path: str) -> Optional[int]:
    """The step in a checkpoint directory's name (``step_00000500`` -> 500), or None."""
    m = _STEP_DIR.match(os.path.basename(os.path.normpath(path)))
    return int(m.group(1)) if m else None


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(out_dir: str) -> list:
    """``[(step, path), ...]`` of the complete checkpoints under ``out_dir/checkpoints``, oldest first."""
    root = os.path.join(out_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = _STEP_DIR.match(name)
        path = os.path.join(root, name)
        if m and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: str) -> Optional[str]:
    """Path of the newest complete checkpoint, or None."""
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def save_checkpoint(out_dir: str, step: int, model_arrays: dict, optimizer_arrays: dict, state: dict,
                    keep_last: Optional[int] = None) -> str:
    """Write one checkpoint atomically and keep only the newest ``keep_last``; returns its path.

    ``state`` must be JSON-serialisable; ``"format"`` and ``"step"`` are added to it.
    """
    root = os.path.join(out_dir, "checkpoints")
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):  # leftovers of a save that crashed
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)

    final = os.path.join(root, checkpoint_dir_name(step))
    tmp = os.path.join(root, f".tmp-{checkpoint_dir_name(step)}-{os.getpid()}")
    os.makedirs(tmp)
    try:
        # each file is complete and on disk (fsynced) before the directory rename publishes them
        save_safetensors(model_arrays, os.path.join(tmp, MODEL_FILE), metadata={"format": CHECKPOINT_FORMAT})
        save_safetensors(optimizer_arrays, os.path.join(tmp, OPTIMIZER_FILE), metadata={"format": CHECKPOINT_FORMAT})
        state = dict(state, format=CHECKPOINT_FORMAT, step=int(step))
        atomic_write(os.path.join(tmp, STATE_FILE), json.dumps(state, indent=1, allow_nan=True))
        if os.path.exists(final):  # saving the same step again: move the old one aside first
            old = os.path.join(root, f".tmp-old-{checkpoint_dir_name(step)}-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(root)  # the rename itself survives a power cut
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    if keep_last is not None:
        for _, path in list_checkpoints(out_dir)[:-keep_last]:
            shutil.rmtree(path, ignore_errors=True)
    return final


def read_checkpoint(path: str) -> tuple:
    """``(model_arrays, optimizer_arrays, state)`` of the checkpoint directory ``path``."""
    state_path = os.path.join(path, STATE_FILE)
    if not os.path.isfile(state_path):
        raise FileNotFoundError(f"{path} is not a minillm checkpoint directory (no {STATE_FILE})")
    state = read_json_object(state_path)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{state_path}: format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    model_arrays = load_safetensors(os.path.join(path, MODEL_FILE))
    optimizer_arrays = load_safetensors(os.path.join(path, OPTIMIZER_FILE))
    return model_arrays, optimizer_arrays, state

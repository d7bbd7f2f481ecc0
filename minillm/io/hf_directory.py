"""One Hugging Face model directory on disk: ``config.json`` + ``model.safetensors``.

What every ``export_hf_*`` / ``import_hf_*`` of ``minillm.io`` does the same way, whatever the
model family (the family files, ``hf.py``, ``hf_gpt2.py``, ``hf_t5.py``, ``hf_bert.py``, only
rename tensors and translate configs):

* ``write_hf_directory``: the tensors as ``model.safetensors`` (``{"format": "pt"}`` metadata,
  as ``save_pretrained`` writes it) and the config as indented JSON;
* ``hf_weights_path``: the single ``model.safetensors`` of a directory; a ``.bin`` checkpoint is
  never read, since unpickling one can run code (``read_hf_directory``: the config, translated
  by the family's reader, and that path);
* ``load_checked_state``: ``load_state_dict(strict=True)`` with a mismatch reported as a
  ``ValueError`` naming the file it came from.
"""
from __future__ import annotations

import json
import os

from .._files import atomic_write
from .jsonfile import read_json_object
from .safetensors import save_safetensors

__all__ = ["write_hf_directory", "hf_weights_path", "read_hf_directory", "load_checked_state"]


def write_hf_directory(directory, tensors: dict, config: dict) -> None:
    """Write ``tensors`` (HF names -> arrays) and ``config`` (a ``config.json`` dict) into ``directory``."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    save_safetensors(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    atomic_write(os.path.join(directory, "config.json"), json.dumps(config, indent=2) + "\n")


def hf_weights_path(directory) -> str:
    """``directory/model.safetensors``; FileNotFoundError naming the directory when it is missing."""
    path = os.path.join(os.fspath(directory), "model.safetensors")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{os.fspath(directory)}: no model.safetensors (.bin checkpoints are not read: they can run code when loaded)")
    return path


def read_hf_directory(directory, config_from_hf) -> tuple:
    """``(config, weights path)``: ``config_from_hf(config.json's dict, its path)`` (the family's
    checked translation into our config) and ``hf_weights_path(directory)``."""
    cfg_path = os.path.join(os.fspath(directory), "config.json")
    return config_from_hf(read_json_object(cfg_path), cfg_path), hf_weights_path(directory)


def load_checked_state(model, state: dict, source: str) -> None:
    """``model.load_state_dict(state, strict=True)``; a shape or name mismatch is a ValueError naming ``source``."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{source}: {e}") from None

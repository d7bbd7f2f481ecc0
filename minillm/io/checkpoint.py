"""``save_model`` / ``load_model``: a model directory = ``config.json`` + ``model.safetensors``.

    save_model(model, "out/tiny")      # out/tiny/config.json, out/tiny/model.safetensors
    model = load_model("out/tiny")     # same class, same config, same weights

``config.json`` holds the ``ModelConfig`` fields and ``"model_type": "minillm-llama"``;
``model.safetensors`` the ``state_dict`` (a tied output head is stored once, under
``tok_embeddings.weight``). Every problem names the file (and the tensor or field).
"""
from __future__ import annotations

import json
import os

from ..models.llama import ModelConfig, Transformer
from .jsonfile import read_json_object
from .safetensors import atomic_write_bytes, load_safetensors, save_safetensors

__all__ = ["save_model", "load_model", "CONFIG_NAME", "WEIGHTS_NAME"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "minillm-llama"


def _unique_state(model) -> dict:
    """state_dict without the second name of a shared (tied) array."""
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        if id(t.data) in seen:
            continue
        seen.add(id(t.data))
        out[name] = t.data
    return out


def save_model(model: Transformer, directory) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
    if not isinstance(model, Transformer):
        raise TypeError(f"save_model: expected a minillm.models.llama.Transformer, got {type(model).__name__}")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    save_safetensors(_unique_state(model), os.path.join(directory, WEIGHTS_NAME), metadata={"format": "minillm"})
    config = {"model_type": MODEL_TYPE, **model.args.to_dict()}
    atomic_write_bytes(os.path.join(directory, CONFIG_NAME), (json.dumps(config, indent=2) + "\n").encode())


def read_config(directory) -> ModelConfig:
    path = os.path.join(os.fspath(directory), CONFIG_NAME)
    raw = read_json_object(path, f" (is {directory!s} a model directory written by save_model?)")
    if raw.pop("model_type", None) != MODEL_TYPE:
        raise ValueError(
            f"{path}: not a minillm model config (expected \"model_type\": \"{MODEL_TYPE}\"; "
            "for Hugging Face directories use import_hf)"
        )
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def load_model(directory) -> Transformer:
    """Build the model described by ``directory/config.json`` and load ``model.safetensors`` into it."""
    config = read_config(directory)
    path = os.path.join(os.fspath(directory), WEIGHTS_NAME)
    tensors = load_safetensors(path)
    model = Transformer(config)
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
    return model

"""``save_model`` / ``load_model``: a model directory = ``config.json`` + ``model.safetensors``.

    save_model(model, "out/tiny")      # out/tiny/config.json, out/tiny/model.safetensors
    model = load_model("out/tiny")     # same class, same config, same weights

``config.json`` holds the model's config fields and its ``"model_type"`` (``"minillm-llama"``
for the book's LLaMA); ``model.safetensors`` the ``state_dict`` (a tied output head is stored
once, under ``tok_embeddings.weight``). Every problem names the file (and the tensor or field).

This file names no model family: it finds the class for a ``"model_type"`` in the registry
``minillm.models.MODEL_TYPES`` (model_type -> (config class, model class)), so a new family
is saved and loaded as soon as it has its line there. ``model_config_dict`` is the one reader
of a model's config (``Trainer`` checkpoints and ``PeftModel`` adapter files use it too).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np

from .._files import atomic_write
from ..models import MODEL_TYPES
from .guards import check_float_sources, check_header_shapes, refuse_lora_layers
from .jsonfile import read_json_object
from .safetensors import load_safetensors, read_safetensors_shapes, save_safetensors

__all__ = ["save_model", "load_model", "model_config_dict", "check_config_against_weights", "STATE_SHAPES",
           "CONFIG_NAME", "WEIGHTS_NAME"]

#: model class -> ``fn(config, max_tensors) -> {state_dict name: shape}`` (a tied weight listed once) plus
#: the cost of its buffers: lets ``load_model`` compare ``config.json`` with the weights' header
#: *before* it allocates the model (a hostile ``"vocab_size": 1000000000`` costs nothing then).
#: Each family's file in ``io`` registers its function (``hf.py`` LLaMA, ``hf_gpt2.py``, ``hf_t5.py``,
#: ``hf_bert.py`` BERT/RoBERTa/ALBERT and their task heads).
STATE_SHAPES: dict = {}

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _json_default(value):
    """json.dumps fallback: NumPy scalars/arrays as numbers/lists, anything else (a dtype, a path) as text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def model_config_dict(model) -> Optional[dict]:
    """The model's config as a JSON-ready dict, or None if it has none.

    The config is the dataclass in ``model.config`` (Hugging Face's name), ``model.args``
    (the book's) or ``model.params`` (llama2.c's); its ``to_dict()`` if it has one, else
    ``dataclasses.asdict``. Values come back as JSON would give them (tuples as lists, NumPy
    numbers as Python numbers), so a dict read back from a file compares equal to a fresh one.
    """
    for attr in ("config", "args", "params"):
        cfg = getattr(model, attr, None)
        if cfg is None or isinstance(cfg, type):
            continue
        if hasattr(cfg, "to_dict"):
            d = cfg.to_dict()
        elif dataclasses.is_dataclass(cfg):
            d = dataclasses.asdict(cfg)
        else:
            continue
        return json.loads(json.dumps(d, default=_json_default))
    return None


def _model_type(model, where: str) -> str:
    for name, (_, cls) in MODEL_TYPES.items():
        if isinstance(model, cls):
            return name
    known = ", ".join(f"{cls.__module__}.{cls.__name__}" for _, cls in MODEL_TYPES.values())
    raise TypeError(f"{where}: expected a registered model class ({known}; see minillm.models.MODEL_TYPES), got {type(model).__name__}")


def _unique_state(model) -> dict:
    """state_dict without the second name of a shared (tied) array."""
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        if id(t.data) in seen:
            continue
        seen.add(id(t.data))
        out[name] = t.data
    return out


def save_model(model, directory) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
    refuse_lora_layers(model, "save_model")
    model_type = _model_type(model, "save_model")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    save_safetensors(_unique_state(model), os.path.join(directory, WEIGHTS_NAME), metadata={"format": "minillm"})
    config = {"model_type": model_type, **model_config_dict(model)}
    atomic_write(os.path.join(directory, CONFIG_NAME), json.dumps(config, indent=2) + "\n")


def read_config(directory):
    """``(model class, config)`` described by ``directory/config.json``."""
    path = os.path.join(os.fspath(directory), CONFIG_NAME)
    raw = read_json_object(path, f" (is {directory!s} a model directory written by save_model?)")
    model_type = raw.pop("model_type", None)
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"{path}: not a minillm model config (\"model_type\" is {model_type!r}, expected one of "
            f"{sorted(MODEL_TYPES)}; for Hugging Face directories use import_hf)"
        )
    config_cls, model_cls = MODEL_TYPES[model_type]
    try:
        return model_cls, config_cls.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def check_config_against_weights(model_cls, config, shapes: dict, source: str) -> None:
    """Refuse a config whose tensors differ from the weights file's header (``shapes``:
    name -> shape), before the model is built. A model class with no registered
    ``STATE_SHAPES`` function is not checked here (its ``load_state_dict`` still is)."""
    expected_fn = STATE_SHAPES.get(model_cls)
    if expected_fn is None:
        return
    try:
        expected = expected_fn(config, max_tensors=len(shapes))  # also bounds the buffers
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    check_header_shapes(expected, shapes, source)


def load_model(directory):
    """Build the model described by ``directory/config.json`` and load ``model.safetensors`` into it.

    Order: config (strict types) -> weights header (names, shapes) checked against the config
    -> only then is the model allocated and the tensors read.
    """
    model_cls, config = read_config(directory)
    path = os.path.join(os.fspath(directory), WEIGHTS_NAME)
    shapes = {n: s for n, (_, s) in read_safetensors_shapes(path).items()}
    check_config_against_weights(model_cls, config, shapes, path)
    tensors = load_safetensors(path)
    model = model_cls(config)
    check_float_sources(tensors, model, path)
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
    return model

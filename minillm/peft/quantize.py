"""Quantized model directories: ``save_quantized`` / ``load_quantized`` (safetensors + JSON).

A model after ``quantize_model(model, "int8" | "nf4")`` keeps its codes and scales as buffers,
so its ``state_dict`` is already what goes on disk. The directory holds ``config.json`` and
``model.safetensors`` as ``minillm.io.save_model`` writes them, plus
``quantization_config.json`` (``quant_type``, ``double_quant``, the quantized layers' names):
``load_quantized`` builds the model from the config, quantizes the same layers the same way,
and loads the stored codes (strict: every name, shape and dtype must match).
"""
from __future__ import annotations

import json
import os

from .._files import atomic_write
from ..io.checkpoint import CONFIG_NAME, WEIGHTS_NAME, _model_type, model_config_dict, read_config
from ..io.jsonfile import read_json_object
from ..io.safetensors import load_safetensors, save_safetensors
from ..nn.lora import LoRALinear
from ..nn.quant import QUANT_TYPES, QuantLinear, quantize_model

__all__ = ["save_quantized", "load_quantized", "QUANT_CONFIG_NAME"]

QUANT_CONFIG_NAME = "quantization_config.json"


def _quantized_layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]


def save_quantized(model, directory) -> None:
    """Write a quantized model (codes, scales and float weights) to ``directory``."""
    layers = _quantized_layers(model)
    if not layers:
        raise ValueError(f"save_quantized: {type(model).__name__} has no quantized layer; call quantize_model first")
    if any(isinstance(m, LoRALinear) for _, m in model.named_modules()):
        raise ValueError("save_quantized: the model has LoRA layers; save the adapter with save_pretrained and the base here")
    kinds = {type(m) for _, m in layers}
    if len(kinds) != 1:
        raise ValueError(f"save_quantized: mixed quantization types {sorted(k.__name__ for k in kinds)}")
    model_type = _model_type(model, "save_quantized")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    seen, tensors = set(), {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in seen:  # a tied weight once
            seen.add(id(t))
            tensors[name] = t.data
    save_safetensors(tensors, os.path.join(directory, WEIGHTS_NAME), metadata={"format": "minillm-quantized"})
    atomic_write(os.path.join(directory, CONFIG_NAME), json.dumps({"model_type": model_type, **model_config_dict(model)}, indent=2) + "\n")
    first = layers[0][1]
    qcfg = {"quant_type": first.quant_type, "double_quant": bool(getattr(first, "double_quant", False)),
            "quantized_modules": [n for n, _ in layers]}
    atomic_write(os.path.join(directory, QUANT_CONFIG_NAME), json.dumps(qcfg, indent=2) + "\n")


def load_quantized(directory):
    """The quantized model saved by ``save_quantized``."""
    directory = os.fspath(directory)
    qpath = os.path.join(directory, QUANT_CONFIG_NAME)
    if not os.path.isfile(qpath):
        raise FileNotFoundError(f"load_quantized: no {QUANT_CONFIG_NAME} in {directory!r} (written by save_quantized)")
    q = read_json_object(qpath)
    if q.get("quant_type") not in QUANT_TYPES or not isinstance(q.get("double_quant"), bool) \
            or not isinstance(q.get("quantized_modules"), list):
        raise ValueError(f"load_quantized: {qpath} must give quant_type in {QUANT_TYPES}, double_quant (bool) and "
                         f"quantized_modules (list), got {q}")
    model_cls, config = read_config(directory)
    model = model_cls(config)
    quantize_model(model, q["quant_type"], double_quant=q["double_quant"])
    got = [n for n, _ in _quantized_layers(model)]
    if got != q["quantized_modules"]:
        raise ValueError(f"load_quantized: {qpath} lists quantized layers {q['quantized_modules']}, the model has {got}")
    path = os.path.join(directory, WEIGHTS_NAME)
    tensors = load_safetensors(path)
    state = model.state_dict()
    wrong = [f"{n}: file {tensors[n].dtype} {tensors[n].shape}, model {state[n].dtype} {state[n].shape}"
             for n in tensors if n in state and (tensors[n].shape != state[n].shape or tensors[n].dtype != state[n].dtype)]
    if wrong:
        raise ValueError(f"load_quantized: {path} does not fit: " + "; ".join(wrong))
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"load_quantized: {path}: {e}") from None
    return model



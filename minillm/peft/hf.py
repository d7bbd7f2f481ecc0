"""Adapter files in Hugging Face ``peft``'s layout, for the model ``minillm.io.export_hf`` writes.

``export_hf_adapter(model, directory)`` writes what ``peft.PeftModel.from_pretrained(hf_model,
directory)`` loads onto ``transformers.LlamaForCausalLM.from_pretrained(export_hf directory)``;
``import_hf_adapter(model, directory)`` reads a directory that ``peft``'s ``save_pretrained``
wrote back onto our ``Transformer``. Both give the same logits as the other side (the
optional test ``tests/test_peft_hf_parity.py`` checks it against ``peft`` itself).

=================  ==============================================  ==========================================
method             peft's file                                     what changes on the way
=================  ==============================================  ==========================================
LoRA               ``base_model.model.<HF module>.lora_A.weight``  names (``layers.0.attention.wq`` ->
                   / ``lora_B.weight``; ``LoraConfig`` fields      ``model.layers.0.self_attn.q_proj``); the
                                                                    rows of B for ``wq`` / ``wk`` are permuted
prefix tuning      ``prompt_embeddings`` (P, L·2·kv_dim),          each *key* vector's dims are permuted
                   layout (P, 2L, Hkv, D), key of layer l at 2l
prompt tuning      ``prompt_embeddings`` (P, dim)                  nothing
P-tuning           written as prompt tuning (see below)            nothing
=================  ==============================================  ==========================================

Why the permutations: the book's RoPE rotates adjacent pairs (2i, 2i+1) of each head and
Hugging Face's rotates halves (i, i + D/2); ``export_hf`` reorders the rows of ``wq`` / ``wk``
inside each head (``permute_rope_rows_to_hf``). A LoRA update ΔW = B·A of ``wq`` must move
with them: P·(B·A) = (P·B)·A, so B's rows are reordered and A is unchanged. Prefix keys are
vectors in the same per-head coordinates as the (rotated) keys, so each one is reordered the
same way; values are not rotated and are left alone. The positions already agree: with
``peft`` the prefix is ``past_key_values`` of length P, so the real tokens get RoPE positions
P, P+1, ..., as in ``minillm.peft.prompt``.

Not exported, and why: Houlsby adapters (``peft`` has no bottleneck adapter for causal LMs);
LoRA with ``bias != "none"`` or ``modules_to_save`` (our names for those tensors would need
their own mapping; refused with a clear error); a merged LoRA (export the merged model with
``export_hf`` instead). P-tuning is written as ``PROMPT_TUNING``: at inference both are the same
table of P input embeddings, and ``peft``'s ``P_TUNING`` would rebuild an encoder and feed the
saved table through it when loaded to train. Files are written atomically, as safetensors + JSON only.
"""
from __future__ import annotations

import json
import os
import re
from collections import OrderedDict

import numpy as np

from .._files import atomic_write
from ..io.hf import _LAYER_MAP, permute_rope_rows_from_hf, permute_rope_rows_to_hf
from ..io.jsonfile import read_json_object
from ..io.safetensors import load_safetensors, save_safetensors
from ..nn.lora import LoraConfig
from ..nn.module import Module
from .model import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, PeftModel
from .prompt import PeftModelForCausalLM, PrefixTuningConfig, PromptTuningConfig

__all__ = ["export_hf_adapter", "import_hf_adapter"]

_PEFT_PREFIX = "base_model.model."  # peft's name of the wrapped LlamaForCausalLM inside a saved LoRA adapter
_MODULE_TO_HF = {k[: -len(".weight")]: v[: -len(".weight")] for k, v in _LAYER_MAP.items() if "norm" not in k}
_MODULE_FROM_HF = {v: k for k, v in _MODULE_TO_HF.items()}


def _module_to_hf(name: str) -> str:
    """``layers.0.attention.wq`` -> ``model.layers.0.self_attn.q_proj``."""
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if not m or m.group(2) not in _MODULE_TO_HF:
        raise ValueError(f"export_hf_adapter: no Hugging Face name for the adapted module '{name}'")
    return f"model.layers.{m.group(1)}.{_MODULE_TO_HF[m.group(2)]}"


def _module_from_hf(name: str, where: str) -> str:
    """``model.layers.0.self_attn.q_proj`` -> ``layers.0.attention.wq``."""
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    if not m or m.group(2) not in _MODULE_FROM_HF:
        raise ValueError(f"import_hf_adapter: {where}: no minillm module for the Hugging Face module '{name}'")
    return f"layers.{m.group(1)}.{_MODULE_FROM_HF[m.group(2)]}"


def _permute_key_dims(table: np.ndarray, n_layers: int, n_kv_heads: int, to_hf: bool) -> np.ndarray:
    """A prefix table (P, L·2·kv_dim) with every key's head dims reordered (pairs <-> halves)."""
    P, width = table.shape
    D = width // (2 * n_layers * n_kv_heads)
    t = table.reshape(P, n_layers, 2, n_kv_heads, D).copy()  # (P, L, key|value, Hkv, D)
    keys = t[:, :, 0]  # (P, L, Hkv, D)
    if to_hf:
        keys = keys.reshape(P, n_layers, n_kv_heads, D // 2, 2).swapaxes(3, 4)  # (.., D/2, 2) -> (.., 2, D/2)
    else:
        keys = keys.reshape(P, n_layers, n_kv_heads, 2, D // 2).swapaxes(3, 4)  # (.., 2, D/2) -> (.., D/2, 2)
    t[:, :, 0] = keys.reshape(P, n_layers, n_kv_heads, D)
    return t.reshape(P, width)


def _write(directory: str, tensors: dict, config: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    save_safetensors(tensors, os.path.join(directory, ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    atomic_write(os.path.join(directory, ADAPTER_CONFIG_NAME), json.dumps(config, indent=2) + "\n")


# ====================================================================== export
def export_hf_adapter(model: Module, directory, base_model_name_or_path: str | None = None) -> None:
    """Write ``model``'s adapter (LoRA, prefix, prompt or P-tuning) in ``peft``'s layout.

    ``base_model_name_or_path``: recorded in adapter_config.json (peft's field), e.g. the
    directory ``export_hf`` wrote the base model to."""
    directory = os.fspath(directory)
    if isinstance(model, PeftModel):
        _export_lora(model, directory, base_model_name_or_path)
    elif isinstance(model, PeftModelForCausalLM):
        _export_prompt(model, directory, base_model_name_or_path)
    else:
        raise TypeError(f"export_hf_adapter: expected a PeftModel or PeftModelForCausalLM, got {type(model).__name__}")


def _export_lora(model: PeftModel, directory: str, base_path) -> None:
    cfg = model.peft_config
    if not isinstance(cfg, LoraConfig):
        raise ValueError(f"export_hf_adapter: {type(cfg).__name__} has no counterpart in peft for causal LMs; "
                         "only LoRA, prefix, prompt and P-tuning adapters are exported")
    if cfg.bias != "none" or cfg.modules_to_save:
        raise ValueError(f"export_hf_adapter: LoRA with bias={cfg.bias!r}, modules_to_save={cfg.modules_to_save!r} is not "
                         "exported; only bias='none' without modules_to_save")
    layers = list(model.lora_layers())
    if any(m.merged for _, m in layers):
        raise ValueError("export_hf_adapter: the adapters are merged into the base weights; unmerge_adapter() first, "
                         "or export the merged model itself with minillm.io.export_hf")
    a = model.base_model.args
    tensors, targets = OrderedDict(), []
    for name, m in layers:
        hf = _module_to_hf(name)
        B = m.lora_B.weight.data
        if name.endswith("attention.wq"):
            B = permute_rope_rows_to_hf(B, a.n_heads)
        elif name.endswith("attention.wk"):
            B = permute_rope_rows_to_hf(B, a.n_kv_heads)
        tensors[f"{_PEFT_PREFIX}{hf}.lora_A.weight"] = np.ascontiguousarray(m.lora_A.weight.data)
        tensors[f"{_PEFT_PREFIX}{hf}.lora_B.weight"] = np.ascontiguousarray(B)
        targets.append(hf)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_path,
        "r": cfg.r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
        "target_modules": targets,  # the full module names: exactly the layers adapted here
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "modules_to_save": None, "init_lora_weights": True, "inference_mode": True,
    }
    _write(directory, tensors, config)


def _export_prompt(model: PeftModelForCausalLM, directory: str, base_path) -> None:
    cfg = model.peft_config
    a = model.base_model.args
    table = model.adapter_state_dict()["prompt_embeddings"]  # the encoder's output, if any
    common = {"task_type": "CAUSAL_LM", "base_model_name_or_path": base_path, "num_virtual_tokens": cfg.num_virtual_tokens,
              "num_transformer_submodules": 1, "num_layers": a.n_layers, "inference_mode": True}
    if isinstance(cfg, PrefixTuningConfig):
        table = _permute_key_dims(table, a.n_layers, a.n_kv_heads, to_hf=True)
        config = {"peft_type": "PREFIX_TUNING", **common, "token_dim": model.kv_dim, "num_attention_heads": a.n_kv_heads,
                  "encoder_hidden_size": a.dim, "prefix_projection": False}
    else:  # prompt tuning, and P-tuning's encoder output (the same P input embeddings at inference)
        config = {"peft_type": "PROMPT_TUNING", **common, "token_dim": a.dim, "num_attention_heads": a.n_heads,
                  "prompt_tuning_init": "RANDOM"}
    _write(directory, {"prompt_embeddings": np.ascontiguousarray(table)}, config)


# ====================================================================== import
def import_hf_adapter(model: Module, directory, is_trainable: bool = False) -> Module:
    """A ``peft`` adapter directory (LoRA, prefix or prompt tuning, saved by ``peft`` on the
    Hugging Face export of ``model``) on our ``model``: a ``PeftModel`` or ``PeftModelForCausalLM``."""
    directory = os.fspath(directory)
    cpath, wpath = os.path.join(directory, ADAPTER_CONFIG_NAME), os.path.join(directory, ADAPTER_WEIGHTS_NAME)
    for p in (cpath, wpath):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"import_hf_adapter: no {os.path.basename(p)} in {directory!r}")
    meta = read_json_object(cpath)
    kind = meta.get("peft_type")
    tensors = load_safetensors(wpath)
    if kind == "LORA":
        peft = _import_lora(model, meta, tensors, cpath, wpath, is_trainable)
    elif kind in ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"):
        peft = _import_prompt(model, meta, tensors, cpath, wpath, is_trainable)
    else:
        raise ValueError(f"import_hf_adapter: {cpath}: peft_type {kind!r} is not supported (LORA, PREFIX_TUNING, "
                         "PROMPT_TUNING, P_TUNING)")
    if not is_trainable:
        peft.eval()
    return peft


def _import_lora(model, meta, tensors, cpath, wpath, is_trainable) -> PeftModel:
    for field, ok in (("use_rslora", False), ("use_dora", False), ("fan_in_fan_out", False), ("bias", "none")):
        if meta.get(field, ok) != ok:
            raise ValueError(f"import_hf_adapter: {cpath}: {field}={meta.get(field)!r} is not supported (only {ok!r})")
    for field in ("rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform"):
        if meta.get(field):
            raise ValueError(f"import_hf_adapter: {cpath}: {field}={meta.get(field)!r} is not supported")
    pairs = {}
    for key, w in tensors.items():
        m = re.fullmatch(re.escape(_PEFT_PREFIX) + r"(.+)\.(lora_A|lora_B)(?:\.default)?\.weight", key)
        if not m:
            raise ValueError(f"import_hf_adapter: {wpath}: unexpected tensor '{key}' (expected "
                             f"{_PEFT_PREFIX}<module>.lora_A.weight / lora_B.weight)")
        pairs.setdefault(_module_from_hf(m.group(1), wpath), {})[m.group(2)] = w
    incomplete = sorted(n for n, d in pairs.items() if set(d) != {"lora_A", "lora_B"})
    if not pairs or incomplete:
        raise ValueError(f"import_hf_adapter: {wpath}: needs lora_A and lora_B for every module; incomplete: {incomplete}")
    names = sorted(pairs, key=lambda n: [int(t) if t.isdigit() else t for t in n.split(".")])
    r = {pairs[n]["lora_A"].shape[0] for n in names}
    if r != {meta.get("r")}:
        raise ValueError(f"import_hf_adapter: {cpath}: r={meta.get('r')!r} but the tensors have ranks {sorted(r)}")
    cfg = LoraConfig(r=int(meta["r"]), lora_alpha=meta.get("lora_alpha", 8), lora_dropout=meta.get("lora_dropout", 0.0),
                     target_modules=names, inference_mode=not is_trainable)
    a = model.args
    state = {}
    for n in names:
        B = pairs[n]["lora_B"]
        if n.endswith("attention.wq"):
            B = permute_rope_rows_from_hf(B, a.n_heads)
        elif n.endswith("attention.wk"):
            B = permute_rope_rows_from_hf(B, a.n_kv_heads)
        state[f"{n}.lora_A.weight"], state[f"{n}.lora_B.weight"] = pairs[n]["lora_A"], B
    peft = PeftModel(model, cfg, _target_names=names)
    try:
        peft._load_adapter_weights(os.path.dirname(wpath), state)
    except BaseException:
        peft.unload()
        raise
    return peft


def _import_prompt(model, meta, tensors, cpath, wpath, is_trainable) -> PeftModelForCausalLM:
    if set(tensors) != {"prompt_embeddings"}:
        raise ValueError(f"import_hf_adapter: {wpath} must hold exactly 'prompt_embeddings', got {sorted(tensors)}")
    table = tensors["prompt_embeddings"]
    P = meta.get("num_virtual_tokens")
    if meta.get("num_transformer_submodules", 1) != 1:
        raise ValueError(f"import_hf_adapter: {cpath}: num_transformer_submodules must be 1 (decoder-only)")
    a = model.args
    if meta["peft_type"] == "PREFIX_TUNING":
        kv_dim = a.n_kv_heads * (a.dim // a.n_heads)
        want = (P, a.n_layers * 2 * kv_dim)
        cfg = PrefixTuningConfig(num_virtual_tokens=P, prefix_projection=False,
                                 inference_mode=not is_trainable)
    else:
        want = (P, a.dim)
        cfg = PromptTuningConfig(num_virtual_tokens=P, inference_mode=not is_trainable)
    if table.shape != want or table.dtype.kind != "f":
        raise ValueError(f"import_hf_adapter: {wpath}: prompt_embeddings is {table.dtype} {table.shape}, "
                         f"this model needs float {want}")
    if meta["peft_type"] == "PREFIX_TUNING":
        table = _permute_key_dims(table, a.n_layers, a.n_kv_heads, to_hf=False)
    peft = PeftModelForCausalLM(model, cfg)
    peft.prompt_encoder.embedding.weight.data[...] = table
    peft.merged = True
    return peft

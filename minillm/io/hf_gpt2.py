"""Hugging Face interop for GPT-2: ``export_hf_gpt2`` writes a directory that
``transformers.GPT2LMHeadModel.from_pretrained(dir)`` loads; ``import_hf_gpt2`` reads one back.

Names map one to one (ours -> Hugging Face's); the model already uses HF's names except in
the two shared ``minillm.nn`` blocks it reuses:

    transformer.wpe.embedding.weight        transformer.wpe.weight
    transformer.h.{i}.mlp.w1.weight/bias    transformer.h.{i}.mlp.c_fc.weight/bias
    transformer.h.{i}.mlp.w2.weight/bias    transformer.h.{i}.mlp.c_proj.weight/bias
    (everything else)                       (the same name)
    (lm_head.weight: tied to transformer.wte.weight, not stored)

HF's GPT-2 keeps OpenAI's ``Conv1D`` layers, y = x·W + b with W (in, out), where our
``nn.Linear`` computes y = x·Wᵀ + b with W (out, in). So every 2-D weight of ``c_attn``,
``c_proj``, ``c_fc`` is transposed here, on the way out and on the way back in.
``c_attn``'s 3·C outputs are [q | k | v] in both, so no reordering is needed.
"""
from __future__ import annotations

import functools

import numpy as np

from ..models.gpt import GPT, GPTConfig
from . import checkpoint
from .hf_directory import read_hf_directory, write_hf_directory
from .guards import (bounded_shapes, check_float_sources, check_weights_file, json_bool, json_float, json_int,
                     refuse_lora_layers)
from .safetensors import load_safetensors

__all__ = ["export_hf_gpt2", "import_hf_gpt2", "gpt2_hf_config", "to_hf_gpt2_state_dict", "from_hf_gpt2_state_dict",
           "gpt_state_shapes"]

_RENAME = {"wpe.embedding.weight": "wpe.weight", "mlp.w1.": "mlp.c_fc.", "mlp.w2.": "mlp.c_proj."}
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # HF names stored (in, out)


def _gpt_entries(c: GPTConfig):
    C, I = c.n_embd, c.hidden_dim
    yield "transformer.wte.weight", (c.vocab_size, C)  # lm_head.weight is tied to it: listed once
    yield "transformer.wpe.embedding.weight", (c.max_seq_len, C)
    for i in range(c.n_layer):
        p = f"transformer.h.{i}."
        yield from ((p + "ln_1.weight", (C,)), (p + "ln_1.bias", (C,)),
                    (p + "attn.c_attn.weight", (3 * C, C)), (p + "attn.c_attn.bias", (3 * C,)),
                    (p + "attn.c_proj.weight", (C, C)), (p + "attn.c_proj.bias", (C,)),
                    (p + "ln_2.weight", (C,)), (p + "ln_2.bias", (C,)),
                    (p + "mlp.w1.weight", (I, C)), (p + "mlp.w1.bias", (I,)),
                    (p + "mlp.w2.weight", (C, I)), (p + "mlp.w2.bias", (C,)))
    yield from (("transformer.ln_f.weight", (C,)), ("transformer.ln_f.bias", (C,)))


def gpt_state_shapes(config: GPTConfig, max_tensors: int | None = None) -> dict:
    """``{state_dict name: shape}`` of ``GPT(config)`` (the tied head listed once), from the config
    alone: ``load_model`` and ``import_hf_gpt2`` compare it with the weights' header before allocating."""
    return bounded_shapes(_gpt_entries(config), max_tensors)


checkpoint.STATE_SHAPES[GPT] = gpt_state_shapes


def _to_hf_name(name: str) -> str:
    for ours, theirs in _RENAME.items():
        name = name.replace(ours, theirs)
    return name


def to_hf_gpt2_state_dict(model: GPT) -> dict[str, np.ndarray]:
    """Our parameters under HF ``GPT2LMHeadModel`` names, Conv1D weights transposed to (in, out)."""
    if not isinstance(model, GPT):
        raise TypeError(f"export_hf_gpt2: expected a minillm.models.gpt.GPT, got {type(model).__name__}")
    out = {}
    for name, p in model.named_parameters():  # the tied lm_head is listed once, as transformer.wte.weight
        hf = _to_hf_name(name)
        out[hf] = np.ascontiguousarray(p.data.T) if hf.endswith(_CONV1D) else p.data
    return out


def from_hf_gpt2_state_dict(tensors: dict, model: GPT, where: str = "import_hf_gpt2") -> dict[str, np.ndarray]:
    """HF ``GPT2LMHeadModel`` tensors -> a state_dict for ``model`` (Conv1D weights transposed back).
    Names may lack the ``transformer.`` prefix (a bare ``GPT2Model``). Raises ``ValueError``
    listing missing or unexpected tensor names."""
    names = list(model.state_dict())
    want = {_to_hf_name(n): n for n in names if n != "lm_head.weight"}  # HF name -> ours (the head is tied to wte)
    prefixed = {(k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k): v for k, v in tensors.items()}
    ignored = {k for k in prefixed if k == "lm_head.weight" or k.endswith((".attn.bias", ".attn.masked_bias"))}  # tied head, old mask buffers
    missing = sorted(h for h in want if h not in prefixed)
    unexpected = sorted(k for k in prefixed if k not in want and k not in ignored)
    if missing or unexpected:
        raise ValueError(f"{where}: missing tensors {missing[:8]}; unexpected tensors {unexpected[:8]}")
    state = {}
    for hf, ours in want.items():
        w = np.asarray(prefixed[hf])
        state[ours] = np.ascontiguousarray(w.T) if hf.endswith(_CONV1D) else w
    if "lm_head.weight" in names:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


def gpt2_hf_config(config: GPTConfig, dtype: str = "float32", bos_token_id=None, eos_token_id=None, pad_token_id=None) -> dict:
    """A ``GPT2Config`` dict for our config."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.max_seq_len,
        "n_ctx": config.max_seq_len,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.n_inner,
        "activation_function": "gelu_new",  # the tanh approximation
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "use_cache": True,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def export_hf_gpt2(model: GPT, directory, bos_token_id=None, eos_token_id=None, pad_token_id=None) -> None:
    """Write ``config.json`` + ``model.safetensors`` in Hugging Face's GPT-2 layout."""
    tensors = to_hf_gpt2_state_dict(model)  # checks it is a GPT
    refuse_lora_layers(model, "export_hf_gpt2")
    write_hf_directory(directory, tensors, gpt2_hf_config(model.config, str(model.lm_head.weight.dtype), bos_token_id,
                                                          eos_token_id, pad_token_id))


def config_from_hf_gpt2(c: dict, where: str) -> GPTConfig:
    if c.get("model_type") != "gpt2":
        raise ValueError(f"{where}: model_type is {c.get('model_type')!r}; import_hf_gpt2 reads GPT-2 models only")
    act = c.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{where}: activation_function {act!r} is not supported (only the tanh GELU, gelu_new)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if json_bool(c, flag, where, default=False):
            raise ValueError(f"{where}: {flag}=True is not supported")
    if not json_bool(c, "scale_attn_weights", where, default=True) or not json_bool(c, "tie_word_embeddings", where, default=True):
        raise ValueError(f"{where}: only scale_attn_weights=True and tie_word_embeddings=True are supported")
    # every field with its JSON type checked (the guards of io/guards.py, as import_hf uses them)
    try:
        return GPTConfig(vocab_size=json_int(c, "vocab_size", where, minimum=1), max_seq_len=json_int(c, "n_positions", where, minimum=1),
                         n_embd=json_int(c, "n_embd", where, minimum=1), n_layer=json_int(c, "n_layer", where, minimum=1),
                         n_head=json_int(c, "n_head", where, minimum=1),
                         n_inner=json_int(c, "n_inner", where, default=None, minimum=1, allow_none=True),
                         layer_norm_epsilon=json_float(c, "layer_norm_epsilon", where, default=1e-5, positive=True))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def import_hf_gpt2(directory, dtype=np.float32) -> GPT:
    """Read a Hugging Face GPT-2 directory (config.json + model.safetensors) into our ``GPT``."""
    config, path = read_hf_directory(directory, config_from_hf_gpt2)
    def to_file(name, shape):  # HF's name; Conv1D stores (in, out)
        hf = _to_hf_name(name)
        return hf, (shape[::-1] if hf.endswith(_CONV1D) else shape)

    check_weights_file(path, functools.partial(gpt_state_shapes, config), to_file,
                       file_name=lambda k: k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k,
                       ignore=lambda k: k == "lm_head.weight" or k.endswith((".attn.bias", ".attn.masked_bias")))
    model = GPT(config)
    state = from_hf_gpt2_state_dict(load_safetensors(path), model, path)
    check_float_sources(state, model, path)  # an int or bool tensor is refused, never cast
    if np.dtype(dtype) != np.float32:
        model.to(dtype)
    model.load_state_dict({k: v.astype(dtype, copy=False) for k, v in state.items()}, strict=True)
    return model

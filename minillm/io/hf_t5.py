"""Hugging Face interop for T5: ``export_hf_t5`` writes a directory that
``transformers.T5ForConditionalGeneration.from_pretrained(dir)`` loads; ``import_hf_t5`` reads one.

``models/t5.py`` already uses Hugging Face's parameter names and layouts (``nn.Linear`` and HF's
``nn.Linear`` both store (out, in)), so this file only copies tensors and translates the config.
The shared embedding is stored once as ``shared.weight`` (``encoder/decoder.embed_tokens`` are
tied to it); ``lm_head.weight`` is stored only when untied (T5 v1.1).

Note: transformers 5.x always ties T5's LM head to ``shared`` and keeps only the v1.0/v1.1
difference of *scaling* (``scale_decoder_outputs``); an untied model therefore round-trips
through our files and transformers 4.x, but transformers 5.x would tie its head on load.
"""
from __future__ import annotations

import functools

import numpy as np

from ..models.t5 import T5Config, T5ForConditionalGeneration
from . import checkpoint
from .hf_directory import load_checked_state, read_hf_directory, write_hf_directory
from .guards import (bounded_shapes, check_float_sources, check_weights_file, json_bool, json_float, json_int,
                     refuse_lora_layers)
from .safetensors import load_safetensors

__all__ = ["export_hf_t5", "import_hf_t5", "t5_hf_config", "t5_state_shapes"]

_TIED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _t5_entries(c: T5Config):
    d, inner, ff = c.d_model, c.num_heads * c.d_kv, c.d_ff
    yield "shared.weight", (c.vocab_size, d)

    def attention(p, relative_bias):
        yield from ((p + "q.weight", (inner, d)), (p + "k.weight", (inner, d)), (p + "v.weight", (inner, d)),
                    (p + "o.weight", (d, inner)))
        if relative_bias:  # computed in the first block of each stack only, then shared
            yield p + "relative_attention_bias.weight", (c.relative_attention_num_buckets, c.num_heads)

    def ffn(p):
        wi = ("wi_0", "wi_1") if c.feed_forward_proj == "gated-gelu" else ("wi",)
        yield from ((f"{p}DenseReluDense.{w}.weight", (ff, d)) for w in wi)
        yield from ((p + "DenseReluDense.wo.weight", (d, ff)), (p + "layer_norm.weight", (d,)))

    decoder_layers = c.num_layers if c.num_decoder_layers is None else c.num_decoder_layers
    for stack, n in (("encoder", c.num_layers), ("decoder", decoder_layers)):
        for i in range(n):
            p = f"{stack}.block.{i}.layer."
            yield from attention(p + "0.SelfAttention.", i == 0)
            yield p + "0.layer_norm.weight", (d,)
            if stack == "decoder":
                yield from attention(p + "1.EncDecAttention.", False)
                yield p + "1.layer_norm.weight", (d,)
            yield from ffn(p + ("2." if stack == "decoder" else "1."))
        yield f"{stack}.final_layer_norm.weight", (d,)
    if not c.tie_word_embeddings:
        yield "lm_head.weight", (c.vocab_size, d)


def t5_state_shapes(config: T5Config, max_tensors: int | None = None) -> dict:
    """``{state_dict name: shape}`` of ``T5ForConditionalGeneration(config)`` (tied weights listed once),
    from the config alone: ``load_model`` and ``import_hf_t5`` compare it with the weights' header
    before allocating. T5 keeps HF's names, so the same dict checks both kinds of file."""
    return bounded_shapes(_t5_entries(config), max_tensors)


checkpoint.STATE_SHAPES[T5ForConditionalGeneration] = t5_state_shapes


def t5_hf_config(c: T5Config, dtype: str = "float32") -> dict:
    """A ``T5Config`` dict (Hugging Face's field names are ours)."""
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "is_encoder_decoder": True,
        "vocab_size": c.vocab_size,
        "d_model": c.d_model,
        "d_kv": c.d_kv,
        "d_ff": c.d_ff,
        "num_layers": c.num_layers,
        "num_decoder_layers": c.num_decoder_layers,
        "num_heads": c.num_heads,
        "relative_attention_num_buckets": c.relative_attention_num_buckets,
        "relative_attention_max_distance": c.relative_attention_max_distance,
        "dropout_rate": c.dropout_rate,
        "layer_norm_epsilon": c.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": c.feed_forward_proj,
        "tie_word_embeddings": c.tie_word_embeddings,
        "pad_token_id": c.pad_token_id,
        "eos_token_id": c.eos_token_id,
        "decoder_start_token_id": c.decoder_start_token_id,
        "use_cache": True,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def export_hf_t5(model: T5ForConditionalGeneration, directory) -> None:
    """Write ``config.json`` + ``model.safetensors`` in Hugging Face's T5 layout."""
    if not isinstance(model, T5ForConditionalGeneration):
        raise TypeError(f"export_hf_t5: expected a minillm.models.t5.T5ForConditionalGeneration, got {type(model).__name__}")
    refuse_lora_layers(model, "export_hf_t5")
    tensors = {name: p.data for name, p in model.named_parameters()}  # tied tensors are listed once (shared.weight)
    write_hf_directory(directory, tensors, t5_hf_config(model.config, str(model.shared.weight.dtype)))


def config_from_hf_t5(c: dict, where: str) -> T5Config:
    if c.get("model_type") != "t5":
        raise ValueError(f"{where}: model_type is {c.get('model_type')!r}; import_hf_t5 reads T5 models only")
    ff = c.get("feed_forward_proj", "relu")
    if ff not in ("relu", "gated-gelu"):
        raise ValueError(f"{where}: feed_forward_proj {ff!r} is not supported (only 'relu' and 'gated-gelu')")
    tie = json_bool(c, "tie_word_embeddings", where, default=True)  # "false" is refused, not read as True
    if tie and json_bool(c, "scale_decoder_outputs", where, default=True) is False:
        raise ValueError(f"{where}: a tied LM head without output scaling (scale_decoder_outputs=False) is not supported")
    try:
        def ids(key, default):  # a token id: a JSON int >= 0 (null means the default)
            return json_int(c, key, where, default=default, minimum=0, allow_none=True) or default

        return T5Config(
            vocab_size=json_int(c, "vocab_size", where, minimum=1), d_model=json_int(c, "d_model", where, minimum=1),
            d_kv=json_int(c, "d_kv", where, minimum=1), d_ff=json_int(c, "d_ff", where, minimum=1),
            num_layers=json_int(c, "num_layers", where, minimum=1),
            num_decoder_layers=json_int(c, "num_decoder_layers", where, default=None, minimum=1, allow_none=True),
            num_heads=json_int(c, "num_heads", where, minimum=1),
            relative_attention_num_buckets=json_int(c, "relative_attention_num_buckets", where, default=32, minimum=1),
            relative_attention_max_distance=json_int(c, "relative_attention_max_distance", where, default=128, minimum=1),
            dropout_rate=json_float(c, "dropout_rate", where, default=0.1),
            layer_norm_epsilon=json_float(c, "layer_norm_epsilon", where, default=1e-6, positive=True),
            feed_forward_proj=ff, tie_word_embeddings=tie, pad_token_id=ids("pad_token_id", 0),
            eos_token_id=ids("eos_token_id", 1), decoder_start_token_id=ids("decoder_start_token_id", 0),
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def import_hf_t5(directory, dtype=np.float32) -> T5ForConditionalGeneration:
    """Read a Hugging Face T5 directory (config.json + model.safetensors) into our model."""
    config, path = read_hf_directory(directory, config_from_hf_t5)
    check_weights_file(path, functools.partial(t5_state_shapes, config),  # T5 keeps HF's names: no renaming
                       ignore=lambda k: k in _TIED or (k == "lm_head.weight" and config.tie_word_embeddings))
    tensors = load_safetensors(path)
    model = T5ForConditionalGeneration(config)
    if np.dtype(dtype) != np.float32:
        model.to(dtype)
    want = dict(model.named_parameters())
    ignored = set(_TIED) | ({"lm_head.weight"} if config.tie_word_embeddings else set())
    missing = sorted(k for k in want if k not in tensors)
    unexpected = sorted(k for k in tensors if k not in want and k not in ignored)
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing[:8]}; unexpected tensors {unexpected[:8]}")
    check_float_sources({k: tensors[k] for k in want}, model, path)  # an int or bool tensor is refused, never cast
    state = {k: np.asarray(tensors[k]).astype(dtype, copy=False) for k in want}
    load_checked_state(model, state, path)  # tied aliases (lm_head when tied) follow their parameter
    return model

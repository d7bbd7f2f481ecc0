"""Hugging Face interop for the LLaMA family: ``export_hf`` writes a directory that
``transformers.LlamaForCausalLM.from_pretrained(dir)`` loads (no ``trust_remote_code``),
``import_hf`` reads such a directory back into our ``Transformer``.

Names map one to one (book's name -> Hugging Face name):

    tok_embeddings.weight                  model.embed_tokens.weight
    layers.{i}.attention.wq/wk/wv/wo       model.layers.{i}.self_attn.q_proj/k_proj/v_proj/o_proj
    layers.{i}.feed_forward.w1/w3/w2       model.layers.{i}.mlp.gate_proj/up_proj/down_proj
    layers.{i}.attention_norm.weight       model.layers.{i}.input_layernorm.weight
    layers.{i}.ffn_norm.weight             model.layers.{i}.post_attention_layernorm.weight
    norm.weight                            model.norm.weight
    output.weight                          lm_head.weight   (left out when tied)

The one real difference is RoPE. The book (and Meta's original code) rotates *adjacent*
pairs of each head, dims (2i, 2i+1); Hugging Face's ``rotate_half`` rotates dims
(i, i + D/2), with the same frequency θ_i. So we reorder the output rows of ``wq`` and
``wk`` inside every head: our row 2i+c goes to Hugging Face row c·D/2 + i. Query and key
are reordered the same way, so every q·k dot product (hence every attention score) is
unchanged, and Hugging Face's rotation of pair (i, i+D/2) is exactly our rotation of pair
(2i, 2i+1). ``wv`` and ``wo`` are not touched.
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..models.llama import ModelConfig, Transformer  # the one family-specific file in io: LLaMA <-> HF Llama
from . import checkpoint
from .hf_directory import load_checked_state, write_hf_directory
from .guards import check_float_sources, check_header_shapes, json_bool, json_float, json_int, refuse_lora_layers, resolve_inside
from .jsonfile import read_json_object
from .safetensors import load_safetensors, read_safetensors_shapes

__all__ = ["export_hf", "import_hf", "permute_rope_rows_to_hf", "permute_rope_rows_from_hf", "hf_config",
           "llama_state_shapes"]

#: RoPE tables cost max_seq_len · head_dim/2 float64 angles while they are built (then two float32
#: tables): past this many max_seq_len · head_dim cells (1 GiB of angles) a config is refused.
MAX_ROPE_CELLS = 2**27

_LAYER_MAP = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_MAP = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


def llama_state_shapes(cfg: ModelConfig, max_tensors: int | None = None) -> dict:
    """``{state_dict name: shape}`` of ``Transformer(cfg)`` (a tied output head listed once),
    computed from the config alone, and a bound on its RoPE tables; nothing is allocated.
    ``max_tensors``: refuse at once a config with more tensors than that (the file's count)."""
    count = 2 + 9 * cfg.n_layers + (not cfg.tie_word_embeddings)
    if max_tensors is not None and count > max_tensors:
        raise ValueError(f"the config describes {count} tensors (n_layers={cfg.n_layers}) but the weights hold only "
                         f"{max_tensors}: the weights do not match config.json")
    if cfg.max_seq_len * cfg.head_dim > MAX_ROPE_CELLS:
        raise ValueError(
            f"max_seq_len {cfg.max_seq_len} with head_dim {cfg.head_dim} needs RoPE tables of "
            f"{cfg.max_seq_len * cfg.head_dim // 2:,} angles (more than {MAX_ROPE_CELLS // 2:,}); refused"
        )
    d, kv, hidden = cfg.dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_hidden_dim
    shapes = {"tok_embeddings.weight": (cfg.vocab_size, d)}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        shapes.update({
            p + "attention.wq.weight": (cfg.n_heads * cfg.head_dim, d), p + "attention.wk.weight": (kv, d),
            p + "attention.wv.weight": (kv, d), p + "attention.wo.weight": (d, cfg.n_heads * cfg.head_dim),
            p + "feed_forward.w1.weight": (hidden, d), p + "feed_forward.w2.weight": (d, hidden),
            p + "feed_forward.w3.weight": (hidden, d),
            p + "attention_norm.weight": (d,), p + "ffn_norm.weight": (d,),
        })
    shapes["norm.weight"] = (d,)
    if not cfg.tie_word_embeddings:
        shapes["output.weight"] = (cfg.vocab_size, d)
    return shapes


checkpoint.STATE_SHAPES[Transformer] = llama_state_shapes


def permute_rope_rows_to_hf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of wq/wk (n_heads·D, dim): interleaved pairs (2i, 2i+1) -> halves (i, i + D/2), per head."""
    rows, cols = w.shape
    D = rows // n_heads
    return w.reshape(n_heads, D // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)  # (H, D/2, 2, dim) -> (H, 2, D/2, dim)


def permute_rope_rows_from_hf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of ``permute_rope_rows_to_hf``."""
    rows, cols = w.shape
    D = rows // n_heads
    return w.reshape(n_heads, 2, D // 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)  # (H, 2, D/2, dim) -> (H, D/2, 2, dim)


def _to_hf_name(name: str) -> str:
    if name in _TOP_MAP:
        return _TOP_MAP[name]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if m and m.group(2) in _LAYER_MAP:
        return f"model.layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}"
    raise KeyError(f"export_hf: no Hugging Face name for parameter '{name}'")


def hf_config(config: ModelConfig, dtype: str = "float32", bos_token_id=None, eos_token_id=None, pad_token_id=None) -> dict:
    """A ``LlamaConfig`` dict for our config (legacy and current key names both present)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_hidden_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "initializer_range": 0.02,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,  # transformers 4.x
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},  # transformers 5.x
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "use_cache": True,
        "torch_dtype": dtype,  # transformers 4.x
        "dtype": dtype,  # transformers 5.x
    }


def export_hf(model: Transformer, directory, bos_token_id=None, eos_token_id=None, pad_token_id=None) -> None:
    """Write ``config.json`` + ``model.safetensors`` in Hugging Face's Llama layout."""
    refuse_lora_layers(model, "export_hf")
    if not isinstance(model, Transformer):
        raise TypeError(f"export_hf: expected a minillm.models.llama.Transformer, got {type(model).__name__}")
    cfg = model.args
    tensors = {}
    for name, p in model.named_parameters():  # a tied output head is listed once, as tok_embeddings.weight
        w = p.data
        if name.endswith("attention.wq.weight"):
            w = permute_rope_rows_to_hf(w, cfg.n_heads)
        elif name.endswith("attention.wk.weight"):
            w = permute_rope_rows_to_hf(w, cfg.n_kv_heads)
        tensors[_to_hf_name(name)] = w
    write_hf_directory(directory, tensors, hf_config(cfg, str(model.output.weight.dtype), bos_token_id, eos_token_id, pad_token_id))


def _read_hf_config(directory) -> tuple[ModelConfig, dict]:
    """Our ``ModelConfig`` from an HF ``config.json``; every field read with its JSON type checked
    (``"tie_word_embeddings": "false"`` is refused, not read as ``bool("false") == True``)."""
    path = os.path.join(directory, "config.json")
    c = read_json_object(path)
    if c.get("model_type") != "llama":
        raise ValueError(f"{path}: model_type is {c.get('model_type')!r}; import_hf reads Llama models only")
    if c.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{path}: hidden_act {c['hidden_act']!r} is not supported (only silu)")
    for flag in ("attention_bias", "mlp_bias"):
        if json_bool(c, flag, path, default=False):
            raise ValueError(f"{path}: {flag}=true is not supported")
    rope = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling")
    if not isinstance(rope, dict) or not (scaling is None or isinstance(scaling, dict)):
        raise ValueError(f"{path}: rope_parameters / rope_scaling must be JSON objects, got {rope!r} / {scaling!r}")
    if (rope.get("rope_type", "default") != "default") or (scaling and scaling.get("rope_type", scaling.get("type")) != "default"):
        raise ValueError(f"{path}: RoPE scaling ({rope or scaling}) is not supported")
    dim = json_int(c, "hidden_size", path, minimum=1)
    heads = json_int(c, "num_attention_heads", path, minimum=1)
    head_dim = json_int(c, "head_dim", path, default=None, minimum=1, allow_none=True)
    if head_dim not in (None, dim // heads):
        raise ValueError(f"{path}: head_dim {head_dim} != hidden_size / num_attention_heads is not supported")
    theta_src = rope if "rope_theta" in rope else c
    try:
        cfg = ModelConfig(
            dim=dim,
            n_layers=json_int(c, "num_hidden_layers", path, minimum=1),
            n_heads=heads,
            n_kv_heads=json_int(c, "num_key_value_heads", path, default=None, minimum=1, allow_none=True) or heads,
            vocab_size=json_int(c, "vocab_size", path, minimum=1),
            hidden_dim=json_int(c, "intermediate_size", path, minimum=1),
            norm_eps=json_float(c, "rms_norm_eps", path, default=1e-6, positive=True),
            max_seq_len=json_int(c, "max_position_embeddings", path, default=2048, minimum=1),
            tie_word_embeddings=json_bool(c, "tie_word_embeddings", path, default=False),
            rope_theta=json_float(theta_src, "rope_theta", path, default=10000.0, positive=True),
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return cfg, c


def _shard_paths(directory: str, index: str) -> dict:
    """``{shard path: set of tensor names}`` from ``model.safetensors.index.json``, every shard
    name resolved inside ``directory`` (or, for the Hugging Face cache's symlinked snapshots,
    inside the folder the index file itself really lives in)."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index}: no \"weight_map\" object (tensor name -> shard file)")
    index_root = os.path.dirname(os.path.realpath(index))
    shards: dict = {}
    for tensor, shard in weight_map.items():
        path = resolve_inside(directory, shard, index, what=f"shard of tensor {tensor!r}", extra_roots=(index_root,))
        shards.setdefault(path, set()).add(tensor)
    return shards


def _hf_header_shapes(directory) -> tuple[dict, str, dict]:
    """(tensor name -> shape, the file to name in errors, shard path -> names) from the headers only."""
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(single):
        return {n: s for n, (_, s) in read_safetensors_shapes(single).items()}, single, {single: None}
    if os.path.exists(index):  # sharded checkpoint
        shards = _shard_paths(directory, index)
        shapes = {}
        for path, listed in shards.items():
            found = {n: s for n, (_, s) in read_safetensors_shapes(path).items()}
            if set(found) != listed:  # the index and the shard must agree, name for name
                raise ValueError(
                    f"{path}: holds tensors {sorted(set(found) - listed)[:8]} that {index} does not map to it, and lacks "
                    f"{sorted(listed - set(found))[:8]} that it does"
                )
            shapes.update(found)
        return shapes, index, shards
    raise FileNotFoundError(f"{directory}: no model.safetensors (or model.safetensors.index.json); .bin (torch.save) checkpoints are not read: they can run code when loaded")


def _read_hf_tensors(directory) -> tuple[dict, str]:
    """All tensors of the directory (single file or shards); see ``_hf_header_shapes`` for the checks."""
    _, path, shards = _hf_header_shapes(directory)
    tensors = {}
    for shard in shards:
        tensors.update(load_safetensors(shard))
    return tensors, path


def import_hf(directory, dtype=np.float32) -> Transformer:
    """Read a Hugging Face Llama directory (config.json + safetensors) into our ``Transformer``."""
    directory = os.fspath(directory)
    cfg, _ = _read_hf_config(directory)
    shapes, path, shards = _hf_header_shapes(directory)
    try:  # before anything is allocated: names and shapes from the config vs. the file's headers
        expected = {_to_hf_name(n): s for n, s in llama_state_shapes(cfg, max_tensors=len(shapes)).items()}
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    check_header_shapes(expected, shapes, path, ignore=lambda n: n.endswith("rotary_emb.inv_freq") or (
        n == "lm_head.weight" and cfg.tie_word_embeddings))
    tensors = {}
    for shard in shards:
        tensors.update(load_safetensors(shard))
    model = Transformer(cfg)
    if np.dtype(dtype) != np.float32:
        model.to(dtype)
    state = {}
    hf_names = {}
    for name in model.state_dict():
        if name == "output.weight" and cfg.tie_word_embeddings:
            continue
        hf_names[_to_hf_name(name)] = name
    missing = [h for h in hf_names if h not in tensors]
    ignored = {k for k in tensors if k.endswith("rotary_emb.inv_freq") or (k == "lm_head.weight" and cfg.tie_word_embeddings)}
    unexpected = [k for k in tensors if k not in hf_names and k not in ignored]
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing}; unexpected tensors {unexpected}")
    for hf_name, name in hf_names.items():
        w = tensors[hf_name]
        if name.endswith("attention.wq.weight") and w.ndim == 2:
            w = permute_rope_rows_from_hf(w, cfg.n_heads)
        elif name.endswith("attention.wk.weight") and w.ndim == 2:
            w = permute_rope_rows_from_hf(w, cfg.n_kv_heads)
        state[name] = w
    check_float_sources(state, model, path)
    load_checked_state(model, state, path)
    return model

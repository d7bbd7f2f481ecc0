"""Virtual-token methods of Happy LLM 6.3.1: prefix tuning, prompt tuning and P-tuning.

All three freeze the whole model and learn P "virtual tokens" that the real tokens can
attend to; they differ in *where* the virtual tokens enter and *how* they are produced:

==================  =======================================  ====================================
method (config)     what is trained                          where it enters the model
==================  =======================================  ====================================
prefix tuning       a key and a value vector per virtual     every layer's attention: prepended
(PrefixTuningConfig) token per layer (optionally made by an   to the keys/values, as if they were
                    MLP from a smaller table, Li & Liang)     cached from earlier positions
prompt tuning       P input embeddings (init: the            the input: prepended to the token
(PromptTuningConfig) embeddings of a text, Lester et al.)     embeddings
P-tuning            P embeddings made by a prompt encoder    the input, as prompt tuning
(PromptEncoderConfig) (bi-LSTM + MLP or MLP, Liu et al.)
==================  =======================================  ====================================

The configs carry ``peft``'s class names and fields (``num_virtual_tokens``, ``token_dim``,
``num_layers``, ``num_attention_heads``, ``prefix_projection``, ``encoder_hidden_size``,
``prompt_tuning_init``, ``prompt_tuning_init_text``, ``tokenizer_name_or_path``,
``encoder_reparameterization_type``, ``encoder_num_layers``, ``encoder_dropout``); fields left
None are filled from the model (``dim``, ``n_layers``, ``n_heads``) by ``get_peft_model``.

Positions and the KV cache (all three methods). The P virtual tokens come *first*: they take
positions 0..P-1 (prompt/P-tuning) or simply fill the first P key/value slots (prefix), and
the real tokens take RoPE positions P, P+1, ..., in training and in generation alike (as
``peft`` does on Hugging Face's LLaMA, where the prefix sits in ``past_key_values``). Prefix
keys get no RoPE rotation of their own: they are learned directly as the keys attention
sees. For generation, ``new_kv_cache`` returns caches whose first P positions already hold
the virtual tokens (prefix: the learned keys/values; prompt/P-tuning: the keys/values of the
virtual embeddings run through the frozen model), so ``minillm.generation`` decodes with
the usual KV cache and every cached step is the same computation as the full forward (tested).
``attention_mask`` and ``position_ids`` are always about the *real* tokens: the wrapper adds
the P virtual positions (ones in the mask, +P to the positions).

Reparameterisation merged away. Prefix tuning with ``prefix_projection=True`` trains an MLP
that maps a small table to the keys/values (it stabilises training); P-tuning trains an
LSTM/MLP encoder. Neither is needed after training: ``merge_prompt_encoder()`` evaluates the
encoder once and replaces it by the plain table of its outputs (then the model computes the
same, with no encoder), and ``save_pretrained`` saves that table only, under ``peft``'s key
``prompt_embeddings`` (peft also saves the encoder's output for prefix tuning).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import autograd
from .._files import atomic_write
from ..io.checkpoint import model_config_dict
from ..io.safetensors import load_safetensors, save_safetensors
from ..nn import functional as F
from ..nn import init
from ..nn.heads import lm_loss
from ..nn.layers import Embedding, Linear
from ..nn.module import Module, Parameter
from ..nn.rnn import LSTM
from ..ops import cat
from ..tensor import Tensor
from .model import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, _read_adapter_config

__all__ = [
    "PrefixTuningConfig", "PromptTuningConfig", "PromptEncoderConfig", "PrefixEncoder", "PromptEmbedding",
    "PromptEncoder", "PeftModelForCausalLM", "prompt_param_formula",
]


# ====================================================================== configs
def _pos_int(cls, name, v, allow_none=False):
    if v is None and allow_none:
        return
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"{cls}.{name} must be a positive int, got {v!r}")


@dataclass
class PromptLearningConfig:
    """Fields every virtual-token method shares (peft's ``PromptLearningConfig``).

    num_virtual_tokens  P, the number of virtual tokens
    token_dim           the model's hidden size (None: from the model)
    num_transformer_submodules  1 for a decoder-only model (peft's field; only 1 is supported)
    num_attention_heads, num_layers  None: from the model
    inference_mode      True: the virtual tokens are frozen too
    task_type           "CAUSAL_LM" (the only task here)
    """

    num_virtual_tokens: int = 20
    token_dim: Optional[int] = None
    num_transformer_submodules: int = 1
    num_attention_heads: Optional[int] = None
    num_layers: Optional[int] = None
    inference_mode: bool = False
    task_type: str = "CAUSAL_LM"

    peft_type = ""

    def __post_init__(self):
        cls = type(self).__name__
        _pos_int(cls, "num_virtual_tokens", self.num_virtual_tokens)
        for name in ("token_dim", "num_attention_heads", "num_layers"):
            _pos_int(cls, name, getattr(self, name), allow_none=True)
        if self.num_transformer_submodules != 1:
            raise ValueError(f"{cls}.num_transformer_submodules must be 1 (decoder-only models), got {self.num_transformer_submodules!r}")
        if self.task_type != "CAUSAL_LM":
            raise ValueError(f"{cls}.task_type must be 'CAUSAL_LM', got {self.task_type!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning (Li & Liang 2021). ``prefix_projection=True``: the prefixes are made by an
    MLP, Linear(token_dim, encoder_hidden_size) -> tanh -> Linear(., num_layers·2·kv_dim), from a
    (P, token_dim) table, as in the paper and peft; False: the (P, num_layers·2·kv_dim) table
    is trained directly."""

    encoder_hidden_size: Optional[int] = None
    prefix_projection: bool = False
    peft_type = "PREFIX_TUNING"

    def __post_init__(self):
        super().__post_init__()
        _pos_int("PrefixTuningConfig", "encoder_hidden_size", self.encoder_hidden_size, allow_none=True)
        if not isinstance(self.prefix_projection, bool):
            raise ValueError(f"PrefixTuningConfig.prefix_projection must be True or False, got {self.prefix_projection!r}")


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    """Prompt tuning (Lester et al. 2021). ``prompt_tuning_init="TEXT"``: the P virtual
    embeddings start as the token embeddings of ``prompt_tuning_init_text`` (tokenized with the
    tokenizer at ``tokenizer_name_or_path``, a tokenizer.json; its ids repeated or cut to P, as
    peft does); ``"RANDOM"``: N(0, 0.02) like the model's embeddings."""

    prompt_tuning_init: str = "RANDOM"
    prompt_tuning_init_text: Optional[str] = None
    tokenizer_name_or_path: Optional[str] = None
    peft_type = "PROMPT_TUNING"

    def __post_init__(self):
        super().__post_init__()
        if self.prompt_tuning_init not in ("RANDOM", "TEXT"):
            raise ValueError(f"PromptTuningConfig.prompt_tuning_init must be 'RANDOM' or 'TEXT', got {self.prompt_tuning_init!r}")
        if self.prompt_tuning_init == "TEXT":
            if not isinstance(self.prompt_tuning_init_text, str) or not self.prompt_tuning_init_text:
                raise ValueError("PromptTuningConfig: prompt_tuning_init='TEXT' needs a non-empty prompt_tuning_init_text")
            if not isinstance(self.tokenizer_name_or_path, str):
                raise ValueError("PromptTuningConfig: prompt_tuning_init='TEXT' needs tokenizer_name_or_path (a tokenizer.json)")


@dataclass
class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning (Liu et al. 2021): the virtual embeddings come out of a prompt encoder,
    ``"LSTM"`` (a bidirectional LSTM of ``encoder_num_layers`` layers, then Linear(2h, 2h) ->
    ReLU -> Linear(2h, token_dim)) or ``"MLP"`` (Linear(token_dim, h) -> ReLU -> Linear(h, h) ->
    ReLU -> Linear(h, token_dim)); h = ``encoder_hidden_size`` (None: token_dim)."""

    encoder_reparameterization_type: str = "MLP"
    encoder_hidden_size: Optional[int] = None
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0
    peft_type = "P_TUNING"

    def __post_init__(self):
        super().__post_init__()
        if self.encoder_reparameterization_type not in ("MLP", "LSTM"):
            raise ValueError("PromptEncoderConfig.encoder_reparameterization_type must be 'MLP' or 'LSTM', "
                             f"got {self.encoder_reparameterization_type!r}")
        _pos_int("PromptEncoderConfig", "encoder_hidden_size", self.encoder_hidden_size, allow_none=True)
        _pos_int("PromptEncoderConfig", "encoder_num_layers", self.encoder_num_layers)
        if not isinstance(self.encoder_dropout, (int, float)) or not 0.0 <= self.encoder_dropout < 1.0:
            raise ValueError(f"PromptEncoderConfig.encoder_dropout must be in [0, 1), got {self.encoder_dropout!r}")


PROMPT_CONFIGS = (PrefixTuningConfig, PromptTuningConfig, PromptEncoderConfig)
PROMPT_CONFIG_BY_TYPE = {c.peft_type: c for c in PROMPT_CONFIGS}


# ====================================================================== encoders
class PromptEmbedding(Module):
    """A plain (P, width) table of virtual vectors: prompt tuning, and every encoder once merged."""

    def __init__(self, num_virtual_tokens: int, width: int, dtype=None):
        super().__init__()
        self.embedding = Embedding(num_virtual_tokens, width, dtype=dtype)
        init.normal_(self.embedding.weight, std=0.02)

    def forward(self) -> Tensor:
        return self.embedding.weight  # (P, width)


class PrefixEncoder(Module):
    """Prefix tuning with the paper's MLP reparameterisation: (P, token_dim) table ->
    Linear -> tanh -> Linear -> (P, num_layers·2·kv_dim). (Without the projection the model
    uses a ``PromptEmbedding`` of that width directly.)"""

    def __init__(self, num_virtual_tokens: int, token_dim: int, hidden: int, out_width: int, dtype=None):
        super().__init__()
        self.embedding = Embedding(num_virtual_tokens, token_dim, dtype=dtype)
        init.normal_(self.embedding.weight, std=0.02)
        self.transform_0 = Linear(token_dim, hidden, dtype=dtype)
        self.transform_2 = Linear(hidden, out_width, dtype=dtype)  # peft: transform = Sequential(Linear, Tanh, Linear)

    def forward(self) -> Tensor:
        h = F.tanh(self.transform_0(self.embedding.weight))  # (P, token_dim) -> (P, hidden)
        return self.transform_2(h)  # (P, hidden) -> (P, L·2·kv_dim)


class _BiLSTM(Module):
    """A bidirectional LSTM (torch.nn.LSTM(bidirectional=True)) from two one-way ``nn.LSTM``
    per layer: layer k reads the previous layer's [forward; backward] outputs, as in PyTorch."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dtype=None):
        super().__init__()
        self.num_layers = num_layers
        for k in range(num_layers):
            size = input_size if k == 0 else 2 * hidden_size
            setattr(self, f"forward_{k}", LSTM(size, hidden_size, batch_first=True, dtype=dtype))
            setattr(self, f"backward_{k}", LSTM(size, hidden_size, batch_first=True, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        rev = np.arange(x.shape[1])[::-1].copy()
        for k in range(self.num_layers):
            fwd, _ = getattr(self, f"forward_{k}")(x)  # (B, P, in) -> (B, P, h)
            bwd, _ = getattr(self, f"backward_{k}")(x[:, rev])  # the sequence reversed
            x = cat([fwd, bwd[:, rev]], dim=2)  # (B, P, 2h)
        return x


class PromptEncoder(Module):
    """P-tuning's prompt encoder: a (P, token_dim) table -> bi-LSTM + MLP, or MLP -> (P, token_dim)."""

    def __init__(self, cfg: PromptEncoderConfig, token_dim: int, dtype=None):
        super().__init__()
        P, h = cfg.num_virtual_tokens, cfg.encoder_hidden_size or token_dim
        self.kind = cfg.encoder_reparameterization_type
        self.embedding = Embedding(P, token_dim, dtype=dtype)
        init.normal_(self.embedding.weight, std=0.02)
        if self.kind == "LSTM":
            self.lstm_head = _BiLSTM(token_dim, h, cfg.encoder_num_layers, dtype=dtype)
            self.mlp_head_0 = Linear(2 * h, 2 * h, dtype=dtype)
            self.mlp_head_2 = Linear(2 * h, token_dim, dtype=dtype)
        else:
            self.mlp_head_0 = Linear(token_dim, h, dtype=dtype)
            self.mlp_head_2 = Linear(h, h, dtype=dtype)
            self.mlp_head_4 = Linear(h, token_dim, dtype=dtype)

    def forward(self) -> Tensor:
        x = self.embedding.weight  # (P, token_dim)
        if self.kind == "LSTM":
            x = self.lstm_head(x.unsqueeze(0))[0]  # (1, P, token_dim) -> (P, 2h)
            return self.mlp_head_2(F.relu(self.mlp_head_0(x)))  # (P, 2h) -> (P, token_dim)
        x = F.relu(self.mlp_head_0(x))  # (P, token_dim) -> (P, h)
        x = F.relu(self.mlp_head_2(x))  # (P, h)
        return self.mlp_head_4(x)  # (P, h) -> (P, token_dim)


def prompt_param_formula(cfg, dim: int, n_layers: int, kv_dim: int) -> int:
    """Trainable numbers of a virtual-token method (every Linear with a bias):

    prompt tuning                 P·d
    prefix, no projection         P·L·2·kv_dim
    prefix, projection (hidden h) P·d + (d·h + h) + (h·L·2·kv_dim + L·2·kv_dim)
    P-tuning MLP (hidden h)       P·d + (d·h + h) + (h·h + h) + (h·d + d)
    P-tuning LSTM (hidden h, n layers)  P·d + Σ_k 2·(4h·(in_k + h) + 8h) + (2h·2h + 2h) + (2h·d + d),
                                  in_0 = d, in_k = 2h (a bidirectional LSTM, two biases per gate set)
    """
    P, d = cfg.num_virtual_tokens, dim
    if isinstance(cfg, PromptTuningConfig):
        return P * d
    if isinstance(cfg, PrefixTuningConfig):
        out = n_layers * 2 * kv_dim
        if not cfg.prefix_projection:
            return P * out
        h = cfg.encoder_hidden_size or d
        return P * d + (d * h + h) + (h * out + out)
    h = cfg.encoder_hidden_size or d
    if cfg.encoder_reparameterization_type == "MLP":
        return P * d + (d * h + h) + (h * h + h) + (h * d + d)
    lstm = sum(2 * (4 * h * ((d if k == 0 else 2 * h) + h) + 8 * h) for k in range(cfg.encoder_num_layers))
    return P * d + lstm + (2 * h * 2 * h + 2 * h) + (2 * h * d + d)


# ====================================================================== the prefix as a "cache"
class _PrefixKV:
    """One layer's trained prefix, seen by ``Attention`` through the KV-cache protocol:
    ``length`` P positions are "cached", and ``update`` prepends them to this step's keys and
    values (with gradients, unlike ``KVCache``, which is for inference)."""

    def __init__(self, k: Tensor, v: Tensor):
        self.k, self.v = k, v  # (B, Hkv, P, D)
        self.length = k.shape[2]

    def update(self, k: Tensor, v: Tensor):
        return cat([self.k, k], dim=2), cat([self.v, v], dim=2)  # (B, Hkv, P+T, D)


# ====================================================================== the wrapper
class PeftModelForCausalLM(Module):
    """A frozen causal LM plus P trained virtual tokens (prefix, prompt or P-tuning).

    Unlike LoRA, nothing in the base model changes: it is registered here as ``base_model``
    (so names are ``base_model.layers.0...`` and ``prompt_encoder.embedding.weight``, as in
    peft) and all its parameters are frozen. ``forward`` takes the base model's arguments
    (``input_ids``, ``targets``, ``attention_mask``, ``position_ids``, ``kv_cache``,
    ``logits_to_keep``) and returns logits for the *real* tokens only.
    """

    def __init__(self, model: Module, peft_config: PromptLearningConfig):
        super().__init__()
        if not isinstance(peft_config, PROMPT_CONFIGS):
            raise TypeError(f"PeftModelForCausalLM: expected a prompt-learning config, got {type(peft_config).__name__}")
        a = getattr(model, "args", None)
        if a is None or not all(hasattr(a, f) for f in ("dim", "n_layers", "n_heads", "n_kv_heads", "max_seq_len")) \
                or not hasattr(model, "tok_embeddings"):
            raise TypeError(f"PeftModelForCausalLM: {type(model).__name__} is not a LLaMA-style causal LM "
                            "(needs .args with dim/n_layers/n_heads/n_kv_heads and .tok_embeddings)")
        cfg = dataclasses.replace(peft_config)  # our own copy, with the model's sizes filled in
        for field, value in (("token_dim", a.dim), ("num_layers", a.n_layers), ("num_attention_heads", a.n_heads)):
            given = getattr(cfg, field)
            if given is None:
                setattr(cfg, field, value)
            elif given != value:
                raise ValueError(f"{type(cfg).__name__}.{field}={given} does not match the model ({value})")
        P = cfg.num_virtual_tokens
        if P >= a.max_seq_len:
            raise ValueError(f"{type(cfg).__name__}.num_virtual_tokens={P} leaves no room in max_seq_len={a.max_seq_len}")
        self.peft_config = cfg
        self.base_model = model
        model.requires_grad_(False)
        self.head_dim = a.dim // a.n_heads
        self.kv_dim = a.n_kv_heads * self.head_dim
        dtype = model.tok_embeddings.weight.dtype
        if isinstance(cfg, PrefixTuningConfig):
            width = a.n_layers * 2 * self.kv_dim
            self.prompt_encoder = (PrefixEncoder(P, a.dim, cfg.encoder_hidden_size or a.dim, width, dtype)
                                   if cfg.prefix_projection else PromptEmbedding(P, width, dtype))
        elif isinstance(cfg, PromptTuningConfig):
            self.prompt_encoder = PromptEmbedding(P, a.dim, dtype)
            if cfg.prompt_tuning_init == "TEXT":
                self._init_from_text(cfg.prompt_tuning_init_text, cfg.tokenizer_name_or_path)
        else:
            self.prompt_encoder = PromptEncoder(cfg, a.dim, dtype)
        self.merged = False
        if cfg.inference_mode:
            self.prompt_encoder.requires_grad_(False)

    # ------------------------------------------------------------------ plumbing
    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self._modules.get("base_model")
            if base is None:
                raise
            return getattr(base, name)

    @property
    def num_virtual_tokens(self) -> int:
        return self.peft_config.num_virtual_tokens

    @property
    def args(self):
        """The base model's config with ``max_seq_len`` reduced by P: the room left for real tokens
        (``minillm.generation`` and the evaluation harness read it)."""
        return dataclasses.replace(self.base_model.args, max_seq_len=self.base_model.args.max_seq_len - self.num_virtual_tokens)

    def _init_from_text(self, text: str, tokenizer_path: str):
        from ..tokenizers import load_tokenizer

        tok = load_tokenizer(tokenizer_path)
        ids = list(tok.encode(text))
        if not ids:
            raise ValueError(f"PromptTuningConfig.prompt_tuning_init_text {text!r} encodes to no tokens")
        P = self.num_virtual_tokens
        ids = (ids * math.ceil(P / len(ids)))[:P]  # repeat or cut to P tokens (peft's rule)
        self.init_token_ids = ids
        table = self.base_model.tok_embeddings.weight.data
        self.prompt_encoder.embedding.weight.data[...] = table[np.asarray(ids)]

    def get_prompt(self) -> Tensor:
        """The virtual tokens: (P, token_dim) embeddings, or (P, L·2·kv_dim) prefixes."""
        return self.prompt_encoder()

    def _prefix_kv(self, batch_size: int) -> list:
        """Per layer (k, v), each (B, Hkv, P, D), from the prefix table (peft's layout: the
        width splits as (L·2, Hkv, D), key of layer l at 2l, value at 2l+1)."""
        a = self.base_model.args
        P = self.num_virtual_tokens
        t = self.get_prompt().view(1, P, a.n_layers * 2, a.n_kv_heads, self.head_dim)  # (P, W) -> (1, P, 2L, Hkv, D)
        t = t.permute(2, 0, 3, 1, 4).expand(a.n_layers * 2, batch_size, a.n_kv_heads, P, self.head_dim)  # (2L, B, Hkv, P, D)
        return [(t[2 * i], t[2 * i + 1]) for i in range(a.n_layers)]

    def _prompt_embeds(self, batch_size: int) -> Tensor:
        p = self.get_prompt()  # (P, dim)
        return p.unsqueeze(0).expand(batch_size, *p.shape)  # (B, P, dim)

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids, targets=None, attention_mask=None, position_ids=None, kv_cache=None, logits_to_keep: int = 0):
        """Same arguments as the base model's forward; ``attention_mask`` (B, real tokens so
        far) and ``position_ids`` (B, T, counted from the first real token) describe the real
        tokens only. Returns the base model's output with logits (B, T|logits_to_keep, V) for the
        real tokens and the mean loss over ``targets`` (B, T)."""
        base = self.base_model
        P = self.num_virtual_tokens
        ids = base._check_input_ids(input_ids, P if kv_cache is None else kv_cache[0].length)  # (B, T), room for P
        B, T = ids.shape
        mask = None
        if attention_mask is not None:
            m = attention_mask.data if isinstance(attention_mask, Tensor) else np.asarray(attention_mask)
            if m.ndim != 2 or m.shape[0] != B:
                raise ValueError(f"PeftModelForCausalLM: attention_mask must be (batch={B}, real tokens), got {m.shape}")
            mask = np.concatenate([np.ones((B, P), dtype=m.dtype), m], axis=1)  # (B, P + real)
        pos = None
        if position_ids is not None:
            pos = (position_ids.data if isinstance(position_ids, Tensor) else np.asarray(position_ids)) + P  # real tokens start at P
        if kv_cache is not None:  # generation: the cache already holds the P virtual positions
            if kv_cache[0].length < P:
                raise ValueError(f"PeftModelForCausalLM: the kv_cache holds {kv_cache[0].length} positions, fewer than the "
                                 f"{P} virtual tokens; make it with this model's new_kv_cache()")
            return base(ids, targets=targets, attention_mask=mask, position_ids=pos, kv_cache=kv_cache, logits_to_keep=logits_to_keep)
        if isinstance(self.peft_config, PrefixTuningConfig):
            prefix = [_PrefixKV(k, v) for k, v in self._prefix_kv(B)]
            return base(ids, targets=targets, attention_mask=mask, position_ids=pos, kv_cache=prefix, logits_to_keep=logits_to_keep)
        h = cat([self._prompt_embeds(B), base.tok_embeddings(ids)], dim=1)  # (B, P, dim) + (B, T, dim) -> (B, P+T, dim)
        if pos is not None:
            pos = np.concatenate([np.broadcast_to(np.arange(P), (B, P)), pos], axis=1)  # (B, P+T)
        out = base(inputs_embeds=h, attention_mask=mask, position_ids=pos, logits_to_keep=logits_to_keep)
        if not logits_to_keep:
            out.logits = out.logits[:, P:]  # (B, P+T, V) -> (B, T, V): the real tokens
        if targets is not None:
            out.loss = lm_loss(out.logits, targets, (B, T), "PeftModelForCausalLM")
        return out

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> list:
        """The base model's caches with the P virtual positions already filled (inference)."""
        base = self.base_model
        max_len = base.args.max_seq_len if max_len is None else int(max_len) + self.num_virtual_tokens
        cache = base.new_kv_cache(batch_size, max_len)
        with autograd.no_grad():
            if isinstance(self.peft_config, PrefixTuningConfig):
                for c, (k, v) in zip(cache, self._prefix_kv(batch_size)):
                    c.update(k.detach(), v.detach())
            else:
                base(inputs_embeds=self._prompt_embeds(batch_size).detach(), kv_cache=cache, logits_to_keep=1)
        return cache

    def generate(self, idx, stop_id=None, max_new_tokens: int = 256, temperature: float = 1.0, top_k=None, **kwargs):
        """``Transformer.generate`` with the virtual tokens in front (KV-cache decoding)."""
        from ..generation import generate

        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, eos_token_id=stop_id, **kwargs)

    # ------------------------------------------------------------------ counting
    def get_nb_trainable_parameters(self) -> tuple:
        return self.num_parameters(trainable_only=True), self.num_parameters()

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    def expected_trainable_parameters(self) -> int:
        a = self.base_model.args
        if self.merged:
            return self.num_virtual_tokens * self.prompt_encoder.embedding.weight.shape[1]
        return prompt_param_formula(self.peft_config, a.dim, a.n_layers, self.kv_dim)

    # ------------------------------------------------------------------ merging the encoder away
    def merge_prompt_encoder(self) -> None:
        """Replace the MLP/LSTM encoder by the table of its outputs (same virtual tokens, no
        encoder left). A prompt-tuning table is already plain: no-op."""
        if isinstance(self.prompt_encoder, PromptEmbedding):
            self.merged = True
            return
        with autograd.no_grad(), self.prompt_encoder.mode(training=False):
            table = self.get_prompt().data.copy()  # (P, width)
        emb = PromptEmbedding(*table.shape, dtype=table.dtype)
        emb.embedding.weight.data[...] = table
        emb.requires_grad_(not self.peft_config.inference_mode)
        self.prompt_encoder = emb
        self.merged = True

    # ------------------------------------------------------------------ files
    def adapter_state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """``{"prompt_embeddings": (P, width)}``: the encoder's output (peft's key)."""
        with autograd.no_grad(), self.prompt_encoder.mode(training=False):
            return OrderedDict(prompt_embeddings=np.array(self.get_prompt().data, copy=True))

    def save_pretrained(self, save_directory: str) -> None:
        """adapter_model.safetensors (``prompt_embeddings``, the merged table) + adapter_config.json."""
        os.makedirs(save_directory, exist_ok=True)
        meta = {
            "peft_type": self.peft_config.peft_type, "library": "minillm", **self.peft_config.to_dict(),
            "prompt_embeddings_merged": True,
            "base_model_class": type(self.base_model).__name__,
            "base_model_config": model_config_dict(self.base_model),
        }
        save_safetensors(self.adapter_state_dict(), os.path.join(save_directory, ADAPTER_WEIGHTS_NAME), metadata={"format": "np"})
        atomic_write(os.path.join(save_directory, ADAPTER_CONFIG_NAME), json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def from_pretrained(cls, model: Module, model_id: str, is_trainable: bool = False) -> "PeftModelForCausalLM":
        """The saved virtual tokens on ``model`` (the frozen base). The encoder is not
        re-created: the saved table is used as it is (``merged``); ``is_trainable=True``
        trains that table."""
        meta = _read_adapter_config(model_id, allow_prompt=True)
        config_cls = PROMPT_CONFIG_BY_TYPE.get(meta.get("peft_type"))
        path = os.path.join(model_id, ADAPTER_CONFIG_NAME)
        if config_cls is None:
            raise ValueError(f"PeftModelForCausalLM: {path} is a {meta.get('peft_type')} adapter, not prefix/prompt/P-tuning")
        try:
            cfg = config_cls.from_dict({**meta, "inference_mode": not is_trainable})
            if isinstance(cfg, PrefixTuningConfig):
                cfg.prefix_projection = False  # the saved table is the MLP's output
            if isinstance(cfg, PromptTuningConfig):
                cfg.prompt_tuning_init = "RANDOM"  # overwritten by the file below; no tokenizer needed
        except (TypeError, ValueError) as e:
            raise ValueError(f"PeftModelForCausalLM: {path}: {e}") from None
        wpath = os.path.join(model_id, ADAPTER_WEIGHTS_NAME)
        if not os.path.isfile(wpath):
            raise FileNotFoundError(f"PeftModelForCausalLM: no {ADAPTER_WEIGHTS_NAME} in {model_id!r}")
        tensors = load_safetensors(wpath)
        if set(tensors) != {"prompt_embeddings"}:
            raise ValueError(f"PeftModelForCausalLM: {wpath} must hold exactly 'prompt_embeddings', got {sorted(tensors)}")
        table = tensors["prompt_embeddings"]
        requires = [(n, p.requires_grad) for n, p in model.named_parameters()]
        peft = cls(model, cfg)
        if isinstance(peft.prompt_encoder, PromptEncoder):  # P-tuning: the encoder's output was saved
            peft.prompt_encoder = PromptEmbedding(cfg.num_virtual_tokens, model.args.dim, table.dtype)
        want = tuple(peft.prompt_encoder.embedding.weight.shape)
        if table.shape != want or table.dtype.kind != "f":
            for n, r in requires:
                model.get_parameter(n).requires_grad_(r)
            raise ValueError(f"PeftModelForCausalLM: {wpath}: prompt_embeddings is {table.dtype} {table.shape}, "
                             f"this model needs float {want}")
        peft.prompt_encoder.embedding.weight.data[...] = table
        peft.prompt_encoder.requires_grad_(is_trainable)
        peft.merged = True
        if not is_trainable:
            peft.eval()
        return peft

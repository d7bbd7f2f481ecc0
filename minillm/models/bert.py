"""BERT, the encoder-only pretrained model of Happy LLM 3.1.1 ("Encoder-only PLM: BERT").

One class per piece, with Hugging Face's class and module names so a BERT checkpoint is a
rename away (``minillm/io/hf_bert.py``):

    3.1.1  BertConfig                     the hyper-parameters, HF's field names
           BertEmbeddings                 token + learned position + segment (token type) embeddings, LayerNorm
           BertLayer, BertEncoder         post-LN Transformer encoder layers: x = LN(x + attn(x)); x = LN(x + ffn(x))
           BertPooler                     tanh(W · h_[CLS]): the sentence vector for NSP / classification
           BertModel                      embeddings -> encoder (-> pooler)
           BertLMPredictionHead           MLM head: dense -> GELU -> LayerNorm -> (tied) word embeddings + bias
           BertForPreTraining             MLM + NSP (next-sentence prediction on the pooled [CLS])
           BertForMaskedLM                MLM only
    1.3.4  BertForSequenceClassification  text classification on the pooled [CLS]
    1.3.3  BertForTokenClassification     one label per token (NER / POS with BIO tags)
    1.3.5
    1.3.9  BertForQuestionAnswering       extractive QA: a start and an end logit per token

Inside a layer the blocks are the shared ones of chapter 2 (``minillm.nn``): ``attention`` is
``nn.MultiHeadAttention`` (``wq, wk, wv, wo`` = HF's ``attention.self.query/key/value`` and
``attention.output.dense``), ``feed_forward`` is ``nn.FeedForward`` with GELU (``w1, w2`` = HF's
``intermediate.dense`` and ``output.dense``), ``attention_norm``/``ffn_norm`` are HF's two
``LayerNorm``s. BERT is **post-norm** (the 2017 paper's residual: ``LN(x + sublayer(x))``), unlike
LLaMA's pre-norm.

RoBERTa (``roberta.py``) and ALBERT (``albert.py``) reuse these classes; the config carries the
two switches they need: ``position_offset`` (RoBERTa numbers positions from padding_idx + 1)
and ``embedding_size`` / ``share_layers`` (ALBERT's factorised embedding and cross-layer sharing).

Every head takes ``input_ids`` (B, T), ``attention_mask`` (B, T) 1 = token / 0 = padding,
``token_type_ids`` (B, T) segment ids (0 = sentence A, 1 = sentence B) and optional labels with
``ignore_index=-100``, as Hugging Face's do, and returns an output dataclass with ``loss`` (None
without labels) and logits.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

from .. import nn
from ..nn import functional as F
from ..tensor import Tensor
from .config import ConfigMixin

__all__ = [
    "BertConfig", "BertEmbeddings", "BertLayer", "BertEncoder", "BertPooler", "BertModel",
    "BertLMPredictionHead", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
    "BertForTokenClassification", "BertForQuestionAnswering", "BaseModelOutput", "MaskedLMOutput",
    "PreTrainingOutput", "SequenceClassifierOutput", "TokenClassifierOutput", "QuestionAnsweringModelOutput",
]


# =============================================================================== config
@dataclass
class BertConfig(ConfigMixin):
    """BERT's hyper-parameters with Hugging Face's ``BertConfig`` names; defaults are a small
    model for a laptop (BERT-base is hidden 768, 12 layers, 12 heads, intermediate 3072, 512 positions).

    Invalid values raise ``ValueError`` naming the field.
    """

    vocab_size: int = 1000
    hidden_size: int = 128  # H: width of the residual stream
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: Optional[int] = None  # FFN width; None = 4 * hidden_size (as BERT)
    hidden_act: str = "gelu"  # exact (erf) GELU, HF's "gelu"
    hidden_dropout_prob: float = 0.1  # on embeddings, sublayer outputs and classifier inputs
    attention_probs_dropout_prob: float = 0.1  # on attention probabilities
    max_position_embeddings: int = 128  # rows of the position table (RoBERTa: tokens + offset)
    type_vocab_size: int = 2  # segments: sentence A / B
    layer_norm_eps: float = 1e-12  # BERT's value (PyTorch's default is 1e-5)
    pad_token_id: int = 0
    initializer_range: float = 0.02  # std of the normal init of weights and embeddings
    num_labels: int = 2  # outputs of the sequence / token classification heads
    flash_attn: bool = True  # fused attention kernel (True) or the book's step-by-step attention

    model_type = "minillm-bert"  # (a class attribute, not a field)

    def __post_init__(self):
        if self.intermediate_size is None and isinstance(self.hidden_size, int):
            self.intermediate_size = 4 * self.hidden_size
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "num_labels"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive int, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{type(self).__name__}.hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in nn.ffn.ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}.hidden_act must be one of {sorted(nn.ffn.ACTIVATIONS)}, got {self.hidden_act!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                raise ValueError(f"{type(self).__name__}.{name} must be in [0, 1), got {v!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{type(self).__name__}.{name} must be > 0, got {v!r}")
        p = self.pad_token_id
        if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or not 0 <= p < self.vocab_size:
            raise ValueError(f"{type(self).__name__}.pad_token_id must be an id in [0, vocab_size={self.vocab_size}), got {p!r}")
        if self.max_positions <= 0:
            raise ValueError(f"{type(self).__name__}.max_position_embeddings ({self.max_position_embeddings}) leaves no "
                             f"position after the offset {self.position_offset}")

    # ---- the switches RoBERTa and ALBERT override
    @property
    def position_offset(self) -> int:
        """First position id of a sequence (BERT: 0; RoBERTa: pad_token_id + 1)."""
        return 0

    @property
    def max_positions(self) -> int:
        """Longest sequence the position table covers."""
        return self.max_position_embeddings - self.position_offset

    @property
    def embedding_dim(self) -> int:
        """Width E of the embeddings (BERT: H; ALBERT: a smaller ``embedding_size``)."""
        return self.hidden_size

    @property
    def num_layer_modules(self) -> int:
        """Distinct encoder layers holding parameters (BERT: one per layer; ALBERT: 1, shared)."""
        return self.num_hidden_layers

    @property
    def embedding_projection(self) -> bool:
        """Whether the encoder starts with the E -> H Linear (ALBERT always has it, as HF's AlbertModel)."""
        return False


# =============================================================================== outputs
class _Output:
    """Attribute access plus tuple-style unpacking in field order (like HF's ``ModelOutput``)."""

    def __iter__(self):
        return iter(getattr(self, f.name) for f in fields(self))

    def __getitem__(self, key):
        return tuple(self)[key] if isinstance(key, int) else getattr(self, key)


@dataclass
class BaseModelOutput(_Output):
    last_hidden_state: Tensor  # (B, T, H)
    pooler_output: Optional[Tensor] = None  # (B, H), or None without a pooler


@dataclass
class MaskedLMOutput(_Output):
    loss: Optional[Tensor]
    logits: Tensor  # (B, T, V)


@dataclass
class PreTrainingOutput(_Output):
    loss: Optional[Tensor]
    prediction_logits: Tensor  # (B, T, V)
    seq_relationship_logits: Tensor  # (B, 2): NSP (BERT) / SOP (ALBERT)


@dataclass
class SequenceClassifierOutput(_Output):
    loss: Optional[Tensor]
    logits: Tensor  # (B, num_labels)


@dataclass
class TokenClassifierOutput(_Output):
    loss: Optional[Tensor]
    logits: Tensor  # (B, T, num_labels)


@dataclass
class QuestionAnsweringModelOutput(_Output):
    loss: Optional[Tensor]
    start_logits: Tensor  # (B, T)
    end_logits: Tensor  # (B, T)


# =============================================================================== input checks
def _int_array(x, who: str, name: str) -> np.ndarray:
    a = x.data if isinstance(x, Tensor) else np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{who}: {name} must be integer ids (e.g. int64), got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _check_inputs(config: BertConfig, who: str, input_ids, attention_mask, token_type_ids):
    """-> (ids (B, T) int64, key padding mask (B, T) bool True = padding or None, types (B, T) int64)."""
    ids = _int_array(input_ids, who, "input_ids")
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"{who}: input_ids must have shape (batch, seq_len) with seq_len >= 1, got {ids.shape}")
    B, T = ids.shape
    if T > config.max_positions:
        raise ValueError(f"{who}: input_ids has {T} tokens, longer than the {config.max_positions} positions of "
                         f"max_position_embeddings={config.max_position_embeddings}"
                         + (f" (minus the offset {config.position_offset})" if config.position_offset else "")
                         + "; truncate the pair")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= config.vocab_size:
        bad = lo if lo < 0 else hi
        where = tuple(int(i) for i in np.argwhere(ids == bad)[0])
        raise IndexError(f"{who}: input_ids contain {bad} at {where}, outside the vocabulary [0, {config.vocab_size})")
    if token_type_ids is None:
        types = np.zeros_like(ids)
    else:
        types = _int_array(token_type_ids, who, "token_type_ids")
        if types.shape != ids.shape:
            raise ValueError(f"{who}: token_type_ids must have the shape of input_ids {ids.shape}, got {types.shape}")
        lo, hi = int(types.min()), int(types.max())
        if lo < 0 or hi >= config.type_vocab_size:
            bad = lo if lo < 0 else hi
            where = tuple(int(i) for i in np.argwhere(types == bad)[0])
            raise IndexError(f"{who}: token_type_ids contain {bad} at {where}, outside [0, type_vocab_size="
                             f"{config.type_vocab_size})")
    pad = None
    if attention_mask is not None:
        m = attention_mask.data if isinstance(attention_mask, Tensor) else np.asarray(attention_mask)
        if m.shape != ids.shape:
            raise ValueError(f"{who}: attention_mask must have the shape of input_ids {ids.shape} (1 = token, "
                             f"0 = padding), got {m.shape}")
        pad = ~m.astype(bool)
        if pad.all(axis=1).any():
            row = int(np.flatnonzero(pad.all(axis=1))[0])
            raise ValueError(f"{who}: attention_mask row {row} is all padding; every sequence needs a real token")
        pad = pad if pad.any() else None
    return ids, pad, types


def _labels(labels, shape: tuple, who: str, name: str = "labels") -> Tensor:
    y = _int_array(labels, who, name)
    if y.shape != shape:
        raise ValueError(f"{who}: {name} must have shape {shape}, got {y.shape}")
    return Tensor._wrap(np.ascontiguousarray(y))


def _add_losses(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """``a + b`` where both are given, else the one that is (pretraining: MLM loss + NSP/SOP loss)."""
    return b if a is None else a if b is None else a + b


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over targets != -100; 0 (not NaN) when every target is ignored."""
    if not (y.data != -100).any():
        return (logits * 0.0).sum()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)  # (N, C), (N,) -> ()


# =============================================================================== 3.1.1 embeddings
class BertEmbeddings(nn.Module):
    """word_embeddings[id] + position_embeddings[offset + t] + token_type_embeddings[segment],
    then LayerNorm and dropout: (B, T) ids -> (B, T, E) (E = hidden_size for BERT and RoBERTa)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        E = config.embedding_dim
        self.position_offset = config.position_offset
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.LearnedPositionalEmbedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.LayerNorm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> Tensor:
        x = self.word_embeddings(input_ids)  # (B, T) -> (B, T, E)
        x = self.position_embeddings(x, start=self.position_offset)  # + rows offset .. offset+T-1
        x = x + self.token_type_embeddings(token_type_ids)  # + segment A/B embedding, (B, T, E)
        return self.dropout(self.LayerNorm(x))


# =============================================================================== 3.1.1 encoder
class BertLayer(nn.Module):
    """One post-LN encoder layer::

        h   = attention_norm(x + attention(x))      # HF: attention.self + attention.output
        out = ffn_norm(h + feed_forward(h))         # HF: intermediate + output
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.attention = nn.MultiHeadAttention(H, config.num_attention_heads, dropout=config.attention_probs_dropout_prob,
                                               bias=True, flash_attn=config.flash_attn)
        self.attention_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.feed_forward = nn.FeedForward(H, config.intermediate_size, dropout=config.hidden_dropout_prob,
                                           activation=config.hidden_act)
        self.ffn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, key_padding_mask=None) -> Tensor:
        """x: (B, T, H); key_padding_mask: (B, T) bool, True = padding -> (B, T, H)."""
        h = self.attention_norm(x + self.attention(x, key_padding_mask=key_padding_mask))  # (B, T, H)
        return self.ffn_norm(h + self.feed_forward(h))


class BertEncoder(nn.Module):
    """``num_hidden_layers`` BertLayers. ALBERT: the embeddings (width E) are first projected to H
    (``embedding_hidden_mapping_in``) and one layer's weights serve every layer (``share_layers``)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_hidden_layers = config.num_hidden_layers
        if config.embedding_projection:
            self.embedding_hidden_mapping_in = nn.Linear(config.embedding_dim, config.hidden_size)
        else:
            self.embedding_hidden_mapping_in = None
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_layer_modules)])

    def forward(self, x: Tensor, key_padding_mask=None) -> Tensor:
        if self.embedding_hidden_mapping_in is not None:
            x = self.embedding_hidden_mapping_in(x)  # (B, T, E) -> (B, T, H)
        n = len(self.layer)
        for i in range(self.num_hidden_layers):
            x = self.layer[i * n // self.num_hidden_layers](x, key_padding_mask)  # (B, T, H); shared: always layer 0
        return x


class BertPooler(nn.Module):
    """pooled = tanh(dense(h_[CLS])): (B, T, H) -> (B, H), the sentence vector NSP was trained on."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.dense(hidden_states[:, 0]).tanh()  # (B, T, H) -> (B, H)


class BertModel(nn.Module):
    """embeddings -> encoder (-> pooler): the bare encoder every head sits on."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(f"{type(self).__name__}: expected a BertConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        _init_weights(self, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> BaseModelOutput:
        """input_ids, attention_mask, token_type_ids: (B, T) -> last_hidden_state (B, T, H), pooler_output (B, H)."""
        ids, pad, types = _check_inputs(self.config, type(self).__name__, input_ids, attention_mask, token_type_ids)
        h = self.encoder(self.embeddings(ids, types), pad)  # (B, T, H)
        return BaseModelOutput(h, None if self.pooler is None else self.pooler(h))


def _init_weights(model: nn.Module, config: BertConfig) -> None:
    """HF's BERT init: N(0, initializer_range) for Linear and Embedding weights, zero biases and
    the padding row, LayerNorm 1/0."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=config.initializer_range)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=config.initializer_range)
            if m.padding_idx is not None:
                m.weight.data[m.padding_idx] = 0


# =============================================================================== 3.1.1 pretraining heads
class BertLMPredictionHead(nn.Module):
    """MLM head: h -> dense (H -> E) -> GELU -> LayerNorm -> · word_embeddingsᵀ + bias -> (B, T, V).

    The output matrix *is* the input embedding table (weight tying): it is passed to ``forward``,
    so it exists once, is saved once and gets the gradient of both uses.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        E = config.embedding_dim
        self.act = config.hidden_act
        self.dense = nn.Linear(config.hidden_size, E)  # HF: transform.dense
        self.LayerNorm = nn.LayerNorm(E, eps=config.layer_norm_eps)  # HF: transform.LayerNorm
        self.bias = nn.Parameter(np.zeros(config.vocab_size, dtype=np.float32))

    def forward(self, hidden_states: Tensor, word_embeddings: Tensor) -> Tensor:
        h = nn.ffn.ACTIVATIONS[self.act](self.dense(hidden_states))  # (B, T, H) -> (B, T, E)
        return F.linear(self.LayerNorm(h), word_embeddings, self.bias)  # (B, T, E) @ (E, V) -> (B, T, V)


class _Heads(nn.Module):
    """``cls.predictions`` (+ ``cls.seq_relationship`` for NSP), HF's ``BertPreTrainingHeads``."""

    def __init__(self, config: BertConfig, nsp: bool):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2) if nsp else None


class _PreTrainedBert(nn.Module):
    """Shared plumbing: the ``config`` property, parameter counts, and the encoder call."""

    base_prefix = "bert"  # HF's attribute name of the encoder (``roberta``, ``albert``)
    config_class = BertConfig
    base_model_class = BertModel

    def _make_base(self, config: BertConfig, add_pooling_layer: bool) -> None:
        """Check the config and attach the encoder as ``self.<base_prefix>`` (``self.bert`` here,
        ``self.roberta`` in RoBERTa's heads, which reuse these classes)."""
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__}: expected a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        setattr(self, self.base_prefix, self.base_model_class(config, add_pooling_layer=add_pooling_layer))

    def _base(self) -> BertModel:
        return getattr(self, self.base_prefix)

    def _encode(self, input_ids, attention_mask, token_type_ids) -> BaseModelOutput:
        return self._base()(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)

    def _loss(self, logits: Tensor, labels, name: str = "labels") -> Tensor | None:
        """Every head's loss: cross-entropy of ``logits`` (..., C) against ``labels`` shaped like
        ``logits`` without its last axis (-100 = ignored); None when no labels are given."""
        if labels is None:
            return None
        return _ce(logits, _labels(labels, logits.shape[:-1], type(self).__name__, name))

    def get_input_embeddings(self) -> nn.Embedding:
        return self._base().embeddings.word_embeddings

    def get_num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self):
        return f"params={self.get_num_params():,}"


class BertForPreTraining(_PreTrainedBert):
    """MLM + NSP, BERT's two pretraining tasks. ``labels`` (B, T): the original id at masked
    positions, -100 elsewhere; ``next_sentence_label`` (B,): 0 = B follows A, 1 = B is random
    (HF's convention). loss = MLM loss + NSP loss."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = _Heads(config, nsp=True)
        _init_weights(self.cls, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, next_sentence_label=None):
        out = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.cls.predictions(out.last_hidden_state, self.get_input_embeddings().weight)  # (B, T, V)
        nsp = self.cls.seq_relationship(out.pooler_output)  # (B, H) -> (B, 2)
        loss = _add_losses(self._loss(logits, labels), self._loss(nsp, next_sentence_label, "next_sentence_label"))
        return PreTrainingOutput(loss, logits, nsp)


class BertForMaskedLM(_PreTrainedBert):
    """MLM only (HF's ``BertForMaskedLM``; no pooler): labels (B, T) with -100 at unmasked positions."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = _Heads(config, nsp=False)
        _init_weights(self.cls, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> MaskedLMOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.cls.predictions(out.last_hidden_state, self.get_input_embeddings().weight)  # (B, T, V)
        loss = self._loss(logits, labels)
        return MaskedLMOutput(loss, logits)


# =============================================================================== 1.3 fine-tuning heads
class BertForSequenceClassification(_PreTrainedBert):
    """Text classification (1.3.4): pooled [CLS] -> dropout -> classifier -> (B, num_labels);
    labels (B,) class ids."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self._make_base(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        _init_weights(self.classifier, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> SequenceClassifierOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, H) -> (B, num_labels)
        loss = self._loss(logits, labels)
        return SequenceClassifierOutput(loss, logits)


class BertForTokenClassification(_PreTrainedBert):
    """One label per token (1.3.3 POS, 1.3.5 NER with BIO tags): h -> dropout -> classifier ->
    (B, T, num_labels); labels (B, T), -100 at padding / special / ignored tokens."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self._make_base(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        _init_weights(self.classifier, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> TokenClassifierOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, H) -> (B, T, num_labels)
        loss = self._loss(logits, labels)
        return TokenClassifierOutput(loss, logits)


class BertForQuestionAnswering(_PreTrainedBert):
    """Extractive QA (1.3.9) on ``[CLS] question [SEP] context [SEP]``: qa_outputs gives each
    token a start and an end logit; ``start_positions`` / ``end_positions`` (B,) are token indices
    of the answer span. loss = (CE(start) + CE(end)) / 2, as in HF."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self._make_base(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        _init_weights(self.qa_outputs, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, start_positions=None, end_positions=None):
        out = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.qa_outputs(out.last_hidden_state)  # (B, T, H) -> (B, T, 2)
        start_logits, end_logits = logits[..., 0], logits[..., 1]  # (B, T) each
        loss = None
        if (start_positions is None) != (end_positions is None):
            raise ValueError(f"{type(self).__name__}: pass both start_positions and end_positions, or neither")
        if start_positions is not None:
            B, T = start_logits.shape
            s = _labels(start_positions, (B,), type(self).__name__, "start_positions")
            e = _labels(end_positions, (B,), type(self).__name__, "end_positions")
            for name, y in (("start_positions", s), ("end_positions", e)):
                bad = (y.data != -100) & ((y.data < 0) | (y.data >= T))
                if bad.any():
                    raise ValueError(f"{type(self).__name__}: {name} has {int(y.data[bad][0])}, outside the "
                                     f"{T} token positions")
            loss = (_ce(start_logits, s) + _ce(end_logits, e)) * 0.5
        return QuestionAnsweringModelOutput(loss, start_logits, end_logits)

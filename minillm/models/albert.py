"""ALBERT, Happy LLM 3.1.3: "A Lite BERT" -- far fewer parameters for the same depth and width.

What changes against BERT (``bert.py``):

* **Factorised embedding**: tokens are embedded in a small width E (``embedding_size``) and
  projected to the hidden width H by one Linear (``encoder.embedding_hidden_mapping_in``). The
  table costs V·E + E·H instead of V·H: with V = 30k, H = 768, E = 128 that is 4M instead of 23M.
* **Cross-layer sharing**: one encoder layer's weights are used by all ``num_hidden_layers``
  layers, so the encoder costs one layer whatever its depth (``encoder.layer`` holds 1 module,
  applied N times). The MLM head predicts in width E and is tied to the E-wide embeddings.
* **SOP instead of NSP**: sentence-order prediction. Both segments come from the same document;
  label 0 = in order, 1 = swapped (``minillm.data.bert_tasks.make_sop_pairs``). NSP's random
  "B" usually changes the *topic*, so it can be solved without learning coherence; SOP cannot.

``tests/test_bert_models.py`` counts the parameters of the shared model against the unshared
one by formula.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import nn
from .bert import (BertConfig, BertLMPredictionHead, BertModel, MaskedLMOutput, PreTrainingOutput, _add_losses,
                   _init_weights, _PreTrainedBert)

__all__ = ["AlbertConfig", "AlbertModel", "AlbertForPreTraining", "AlbertForMaskedLM"]


@dataclass
class AlbertConfig(BertConfig):
    """``BertConfig`` plus ALBERT's ``embedding_size`` E (< hidden_size) and ``share_layers``."""

    embedding_size: int = 32
    share_layers: bool = True  # one layer's weights for all layers (ALBERT); False = BERT-like

    model_type = "minillm-albert"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.embedding_size, int) or isinstance(self.embedding_size, bool) or self.embedding_size <= 0:
            raise ValueError(f"AlbertConfig.embedding_size must be a positive int, got {self.embedding_size!r}")
        if not isinstance(self.share_layers, bool):
            raise ValueError(f"AlbertConfig.share_layers must be True or False, got {self.share_layers!r}")

    @property
    def embedding_dim(self) -> int:
        return self.embedding_size

    @property
    def num_layer_modules(self) -> int:
        return 1 if self.share_layers else self.num_hidden_layers

    @property
    def embedding_projection(self) -> bool:
        return True  # even when E == H: HF's AlbertModel always has embedding_hidden_mapping_in


class AlbertModel(BertModel):
    """BertModel with E-wide embeddings, the E -> H projection and shared layers (from the config)."""


class _SOPHead(nn.Module):
    """``sop_classifier``: dropout -> classifier on the pooled [CLS] (HF's ``AlbertSOPHead``)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled):
        return self.classifier(self.dropout(pooled))  # (B, H) -> (B, 2)


class _AlbertBase(_PreTrainedBert):
    base_prefix = "albert"
    config_class = AlbertConfig

    def _check(self, config):
        if not isinstance(config, AlbertConfig):
            raise TypeError(f"{type(self).__name__}: expected an AlbertConfig, got {type(config).__name__}")


class AlbertForPreTraining(_AlbertBase):
    """MLM + SOP: ``labels`` (B, T) as for BERT, ``sentence_order_label`` (B,) 0 = in order, 1 = swapped."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self._check(config)
        self.config = config
        self.albert = AlbertModel(config)
        self.predictions = BertLMPredictionHead(config)
        self.sop_classifier = _SOPHead(config)
        _init_weights(self.predictions, config)
        _init_weights(self.sop_classifier, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, sentence_order_label=None):
        out = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.predictions(out.last_hidden_state, self.get_input_embeddings().weight)  # (B, T, V)
        sop = self.sop_classifier(out.pooler_output)  # (B, 2)
        loss = _add_losses(self._loss(logits, labels), self._loss(sop, sentence_order_label, "sentence_order_label"))
        return PreTrainingOutput(loss, logits, sop)


class AlbertForMaskedLM(_AlbertBase):
    """``albert`` (no pooler) + ``predictions`` (MLM in width E, tied to the E-wide embeddings)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self._check(config)
        self.config = config
        self.albert = AlbertModel(config, add_pooling_layer=False)
        self.predictions = BertLMPredictionHead(config)
        _init_weights(self.predictions, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> MaskedLMOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.predictions(out.last_hidden_state, self.get_input_embeddings().weight)  # (B, T, V)
        loss = self._loss(logits, labels)
        return MaskedLMOutput(loss, logits)

"""RoBERTa, Happy LLM 3.1.2: BERT's architecture, trained better.

What changes against BERT (``bert.py``), and where it lives here:

* **No NSP**: RoBERTa pretrains with MLM only (the NSP loss did not help), so there is no
  pooler in ``RobertaForMaskedLM`` and no ``seq_relationship`` head; ``type_vocab_size`` is 1.
* **Dynamic masking**: a fresh mask every time a sequence is seen. That is a property of the
  data collator, not the model: ``minillm.data.bert_tasks.DataCollatorForLanguageModeling``
  draws a new mask on every call (BERT's original data had 10 masks fixed in advance).
* **Byte-level BPE** (GPT-2's, 50k merges in the paper): our ``BPETokenizer`` with RoBERTa's
  specials and ``<s> A </s></s> B </s>`` template, ``minillm.tokenizers.roberta.RobertaTokenizer``,
  so there is no ``[UNK]`` ever. ``<s>`` (= [CLS]) 0, ``<pad>`` 1, ``</s>`` (= [SEP]) 2.
* **Position ids start at padding_idx + 1** (a fairseq legacy): the first token uses row
  ``pad_token_id + 1`` of the position table, so a model with 512 positions has 514 rows.
  ``RobertaConfig.position_offset`` gives that offset; ``max_positions`` is the usable length.
  (HF numbers only non-padding tokens; with right padding, as everywhere here, every real token
  gets the same position as in HF.)
* Bigger batches, more data, longer training: hyper-parameters, not code.

Fine-tuning heads (Hugging Face's names): ``RobertaForTokenClassification`` and
``RobertaForQuestionAnswering`` are BERT's heads on a ``roberta`` encoder;
``RobertaForSequenceClassification`` has no pooler to reuse (there was no NSP), so its
``classifier`` (``RobertaClassificationHead``) is dense -> tanh -> out_proj on the ``<s>`` token.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import nn
from .bert import (BertConfig, BertForQuestionAnswering, BertForTokenClassification, BertLMPredictionHead, BertModel,
                   MaskedLMOutput, SequenceClassifierOutput, _init_weights, _PreTrainedBert)

__all__ = ["RobertaConfig", "RobertaModel", "RobertaForMaskedLM", "RobertaClassificationHead",
           "RobertaForSequenceClassification", "RobertaForTokenClassification", "RobertaForQuestionAnswering"]


@dataclass
class RobertaConfig(BertConfig):
    """``BertConfig`` with RoBERTa's defaults (HF's ``RobertaConfig``): ``pad_token_id=1``,
    one segment type, eps 1e-5, and ``max_position_embeddings`` counting the offset rows."""

    max_position_embeddings: int = 130  # 128 usable positions + padding_idx + 1
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1

    model_type = "minillm-roberta"

    @property
    def position_offset(self) -> int:
        return self.pad_token_id + 1


class RobertaModel(BertModel):
    """BertModel with RoBERTa's position offset (from the config)."""


class _OnRoberta:
    """What makes a head a RoBERTa head (put first among the bases): its encoder is
    ``self.roberta``, a ``RobertaModel`` built from a ``RobertaConfig`` (``_PreTrainedBert._make_base``)."""

    base_prefix = "roberta"
    config_class = RobertaConfig
    base_model_class = RobertaModel


class RobertaForMaskedLM(_OnRoberta, _PreTrainedBert):
    """``roberta`` (no pooler) + ``lm_head`` (dense -> GELU -> LayerNorm -> tied embeddings + bias)."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self._make_base(config, add_pooling_layer=False)
        self.lm_head = BertLMPredictionHead(config)
        _init_weights(self.lm_head, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> MaskedLMOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.lm_head(out.last_hidden_state, self.get_input_embeddings().weight)  # (B, T, V)
        loss = self._loss(logits, labels)
        return MaskedLMOutput(loss, logits)


# =============================================================================== fine-tuning heads
class RobertaClassificationHead(nn.Module):
    """HF's sentence head: h[<s>] -> dropout -> dense (H, H) -> tanh -> dropout -> out_proj -> (B, num_labels)."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden_states):
        x = self.dropout(hidden_states[:, 0])  # (B, T, H) -> (B, H): the <s> token
        x = self.dropout(self.dense(x).tanh())
        return self.out_proj(x)  # (B, H) -> (B, num_labels)


class RobertaForSequenceClassification(_OnRoberta, _PreTrainedBert):
    """Text classification (1.3.4): ``classifier`` on the ``<s>`` token; labels (B,) class ids."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self._make_base(config, add_pooling_layer=False)
        self.classifier = RobertaClassificationHead(config)
        _init_weights(self.classifier, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> SequenceClassifierOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(out.last_hidden_state)  # (B, T, H) -> (B, num_labels)
        loss = self._loss(logits, labels)
        return SequenceClassifierOutput(loss, logits)


class RobertaForTokenClassification(_OnRoberta, BertForTokenClassification):
    """BERT's token head (1.3.3 POS, 1.3.5 NER) on a ``roberta`` encoder."""


class RobertaForQuestionAnswering(_OnRoberta, BertForQuestionAnswering):
    """BERT's span head (1.3.9) on a ``roberta`` encoder (``<s> question </s></s> context </s>``)."""

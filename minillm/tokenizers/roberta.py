"""RoBERTa's tokenizer (Happy LLM 3.1.2): our byte-level BPE with RoBERTa's special tokens and
input template.

* **Byte-level BPE** (``BPETokenizer``, GPT-2's scheme): every string is covered by bytes, so
  ``<unk>`` is never produced (BERT's WordPiece turns an uncoverable word into ``[UNK]``).
* **Special tokens** in Hugging Face's RoBERTa order: ``<s>`` 0 (= [CLS]), ``<pad>`` 1,
  ``</s>`` 2 (= [SEP]), ``<unk>`` 3, ``<mask>`` 4. ``pad_token_id = 1`` is why RoBERTa's
  positions start at ``padding_idx + 1 = 2`` (``RobertaConfig.position_offset``).
* **Template**: ``<s> A </s>`` and, for pairs, ``<s> A </s></s> B </s>`` (two separators, no
  segment embedding: ``token_type_ids`` are all 0; ``sequence_ids`` says which segment each
  token came from, as HF's ``BatchEncoding.sequence_ids()``).
* **Offsets**: each token's character span, trimmed of the space GPT-2-style tokens carry in
  front (HF's ``trim_offsets``). A token holding only part of a multi-byte character (byte-level
  BPE can split Chinese characters) spans the whole character.

The ``encode_plus`` contract is ``WordPieceTokenizer``'s, so the datasets of
``minillm.data.bert_tasks`` (NER, POS, QA, MLM collator) take either tokenizer.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from .bpe import BPETokenizer
from .wordpiece import ClsSepTemplate

__all__ = ["RobertaTokenizer", "ROBERTA_SPECIAL_TOKENS"]

ROBERTA_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


class RobertaTokenizer(ClsSepTemplate, BPETokenizer):
    """``BPETokenizer`` + RoBERTa's specials (``<s> <pad> </s> <unk> <mask>`` = ids 0-4), the
    ``<s> A </s></s> B </s>`` template (``encode`` and the truncation of ``encode_plus`` are
    ``ClsSepTemplate``'s, shared with BERT's WordPiece) and character offsets. Train with
    ``RobertaTokenizer.train(texts, vocab_size)``."""

    def __init__(self, merges: Sequence[Sequence[int]] = (),
                 special_tokens: Sequence[str] | Mapping[str, int] = ROBERTA_SPECIAL_TOKENS, **kwargs):
        super().__init__(merges, special_tokens, **kwargs)
        for need in ROBERTA_SPECIAL_TOKENS:
            if need not in self._special_tokens:
                raise ValueError(f"RobertaTokenizer: special token {need!r} is missing from {list(self._special_tokens)}")
        if self.pad_token != "<pad>":
            raise ValueError(f"RobertaTokenizer: pad_token must be '<pad>', got {self.pad_token!r}")

    @classmethod
    def train(cls, texts: Iterable[str] | str, vocab_size: int, min_frequency: int = 2,
              special_tokens: Sequence[str] | Mapping[str, int] = ROBERTA_SPECIAL_TOKENS, **kwargs) -> "RobertaTokenizer":
        kwargs.setdefault("show_progress", False)
        return super().train(texts, vocab_size, min_frequency, special_tokens, **kwargs)

    # ------------------------------------------------------------------ roles
    @property
    def cls_token_id(self) -> int:
        return self._special_tokens["<s>"]

    @property
    def sep_token_id(self) -> int:
        return self._special_tokens["</s>"]

    @property
    def mask_token_id(self) -> int:
        return self._special_tokens["<mask>"]

    # ------------------------------------------------------------------ encoding
    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of ``text`` (no specials) and each token's (start, end) character span.

        >>> tok = RobertaTokenizer.train(["Tom met Lily."] * 20, vocab_size=5 + 256 + 12)
        >>> ids, offs = tok.encode_with_offsets("Tom met Lily.")
        >>> [tok.id_to_token(i) for i in ids]  # GPT-2's byte alphabet shows the space as "Ġ"
        ['Tom', 'Ġmet', 'ĠLily', '.']
        >>> [("Tom met Lily.")[s:e] for s, e in offs]
        ['Tom', 'met', 'Lily', '.']
        """
        if self.normalization is not None:
            raise ValueError(f"RobertaTokenizer: offsets need the exact text; normalization={self.normalization!r}")
        ids = self.encode(text)
        char_of_byte = np.repeat(np.arange(len(text)), [len(c.encode("utf-8")) for c in text])  # byte -> its character
        offsets, pos = [], 0
        for i in ids:
            n = len(self._id_to_bytes[i])
            s, e = int(char_of_byte[pos]), int(char_of_byte[pos + n - 1]) + 1
            while s < e and text[s].isspace():  # trim the leading space of " word" tokens
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            offsets.append((s, e))
            pos += n
        return ids, offsets

    def encode_plus(self, text: str, text_pair: str | None = None, max_length: int | None = None,
                    return_offsets_mapping: bool = False) -> dict:
        """``<s> text </s>`` or ``<s> text </s></s> text_pair </s>`` -> ``{"input_ids",
        "token_type_ids" (all 0), "attention_mask", "sequence_ids"}`` (+ ``"offset_mapping"``,
        (0, 0) for specials). ``max_length`` truncates the longer segment first."""
        (a, oa), (b, ob) = self._encode_segments(text, text_pair, max_length, n_special=4 if text_pair is not None else 2)
        cls, sep = self.cls_token_id, self.sep_token_id
        ids, offsets, seq = [cls, *a, sep], [(0, 0), *oa, (0, 0)], [None, *[0] * len(a), None]
        if text_pair is not None:
            ids += [sep, *b, sep]
            offsets += [(0, 0), *ob, (0, 0)]
            seq += [None, *[1] * len(b), None]
        out = {"input_ids": ids, "token_type_ids": [0] * len(ids), "attention_mask": [1] * len(ids), "sequence_ids": seq}
        if return_offsets_mapping:
            out["offset_mapping"] = offsets
        return out

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(tokenizer_class="RobertaTokenizerFast", bos_token="<s>", eos_token="</s>", cls_token="<s>",
                   sep_token="</s>", mask_token="<mask>")
        return cfg

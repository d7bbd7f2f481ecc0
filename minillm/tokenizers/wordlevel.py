"""Happy LLM 5.2.1–5.2.2 — shared code of the word- and character-level tokenizers.

Both keep a fixed vocabulary (special tokens first, then the most frequent
units of the training text) and map anything else to ``<unk>``.  They differ
only in how text is cut into units (``_split``) and glued back (``_join``).
In Hugging Face's format both are a ``WordLevel`` model.
"""

from __future__ import annotations

import abc
from collections import Counter
from typing import ClassVar, Iterable, Mapping, Sequence

from .base import _AUTO, DEFAULT_SPECIAL_TOKENS, ListVocabTokenizer
from .hf_json import bos_post_processor, check_vocab_ids, file_skeleton, parse_added_tokens

__all__ = ["WordLevelTokenizer"]


class WordLevelTokenizer(ListVocabTokenizer):
    """A fixed vocabulary of whole units; unknown units become ``<unk>``.

    ``tokens`` are the ordinary units in id order; they take the ids the special
    tokens leave free (by default ids 0-5 are special, so ``tokens[0]`` is id 6).
    """

    def __init__(
        self,
        tokens: Sequence[str] = (),
        special_tokens: Sequence[str] | Mapping[str, int] = DEFAULT_SPECIAL_TOKENS,
        *,
        unk_token: str | None = _AUTO,
        bos_token: str | None = _AUTO,
        eos_token: str | None = _AUTO,
        pad_token: str | None = _AUTO,
        default_system: str | None = None,
    ):
        super().__init__(special_tokens, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
                         pad_token=pad_token, default_system=default_system)
        tokens = list(tokens)
        n = len(tokens) + len(self._special_tokens)
        free = [i for i in range(n) if i not in self._special_ids]
        if len(free) != len(tokens):
            raise ValueError(f"special token ids {sorted(self._special_ids)} leave no contiguous room for {len(tokens)} tokens")
        self._id_to_str: list[str] = [""] * n
        for i, t in self._special_ids.items():
            self._id_to_str[i] = t
        self._vocab: dict[str, int] = {}
        for i, t in zip(free, tokens):
            if not isinstance(t, str) or not t:
                raise ValueError(f"vocabulary entries must be non-empty strings, got {t!r}")
            if t in self._vocab or t in self._special_tokens:
                raise ValueError(f"vocabulary entry {t!r} appears twice")
            self._vocab[t] = i
            self._id_to_str[i] = t

    # subclasses: how text is cut into units and glued back
    PATTERN: ClassVar[str] = ""

    @abc.abstractmethod
    def _split(self, text: str) -> list[str]:
        """Cut text into vocabulary units (words, characters)."""

    @abc.abstractmethod
    def _join(self, tokens: list[str]) -> str:
        """Glue units back into text."""

    # ------------------------------------------------------------------ #
    # vocab_size, id_to_token, token_to_id, get_vocab: ListVocabTokenizer (base.py)

    def _encode_ordinary(self, text: str) -> list[int]:
        vocab, unk = self._vocab, self.unk_token_id
        if unk is not None:
            return [vocab.get(t, unk) for t in self._split(text)]
        ids = []
        for t in self._split(text):
            if t not in vocab:
                raise ValueError(f"{t!r} is not in the vocabulary and this tokenizer has no unk_token")
            ids.append(vocab[t])
        return ids

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        specials = self._special_ids
        toks = [self._id_to_str[i] for i in ids if not (skip_special_tokens and i in specials)]
        return self._join(toks)

    def oov_rate(self, text: str) -> float:
        """Fraction of the units of ``text`` that are not in the vocabulary (5.2.1's OOV problem)."""
        units = self._split(text)
        return sum(u not in self._vocab for u in units) / max(len(units), 1)

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        vocab_size: int | None = None,
        min_frequency: int = 1,
        special_tokens: Sequence[str] | Mapping[str, int] = DEFAULT_SPECIAL_TOKENS,
        *,
        show_progress: bool = False,
        **kwargs,
    ):
        """Keep the most frequent units (ties: alphabetical) that occur at least
        ``min_frequency`` times; ``vocab_size`` (if given) counts the special tokens too."""
        from tqdm.auto import tqdm

        probe = cls((), special_tokens, **kwargs)
        if isinstance(texts, str):
            texts = [texts]
        counts: Counter = Counter()
        for text in tqdm(texts, desc="counting", disable=not show_progress, leave=False):
            if not isinstance(text, str):
                raise TypeError(f"training texts must be str, got {type(text).__name__}")
            for piece in probe._special_regex(frozenset(probe._special_tokens)).split(text) if probe._special_tokens else [text]:
                counts.update(probe._split(piece))
        for t in probe._special_tokens:
            counts.pop(t, None)
        ranked = sorted((t for t, c in counts.items() if c >= min_frequency), key=lambda t: (-counts[t], t))
        if vocab_size is not None:
            room = vocab_size - len(probe._special_tokens)
            if room < 0:
                raise ValueError(f"vocab_size={vocab_size} is smaller than the {len(probe._special_tokens)} special tokens")
            ranked = ranked[:room]
        return cls(ranked, probe._special_tokens, **kwargs)

    # ------------------------------------------------------------------ #
    def _hf_normalizer(self):
        return None

    @abc.abstractmethod
    def _hf_pre_tokenizer(self) -> dict:
        """The Hugging Face ``pre_tokenizer`` entry that splits text as ``_split`` does."""

    def _hf_decoder(self):
        return None

    def to_hf_json(self) -> dict:
        model = {"type": "WordLevel", "vocab": self.get_vocab(), "unk_token": self.unk_token or "<unk>"}
        return file_skeleton(
            added_tokens=self._hf_added_tokens(),
            normalizer=self._hf_normalizer(),
            pre_tokenizer=self._hf_pre_tokenizer(),
            post_processor=bos_post_processor(self.bos_token, self.bos_token_id),
            decoder=self._hf_decoder(),
            model=model,
        )

    @classmethod
    def _hf_options(cls, data: dict, source: str) -> dict:
        return {}

    @classmethod
    def _from_hf(cls, data: dict, config: dict, source: str):
        model = data.get("model")
        if not isinstance(model, dict) or model.get("type") != "WordLevel" or not isinstance(model.get("vocab"), dict):
            raise ValueError(f"{source}: a {cls.__name__} needs a WordLevel model with a vocab")
        specials = parse_added_tokens(data, source)
        check_vocab_ids(model["vocab"], specials, source)  # before any table is sized by an id
        items = sorted(((i, t) for t, i in model["vocab"].items() if t not in specials), key=lambda x: x[0])
        tok = cls([t for _, t in items], specials, **cls._hf_options(data, source))
        expected = {t: i for t, i in model["vocab"].items()}
        if tok.get_vocab() != {**expected, **specials}:
            raise ValueError(f"{source}: vocabulary ids are not contiguous from 0")
        tok._roles_from_config(config)
        return tok

    def _listings(self) -> dict[str, str]:
        lines = ["# id\ttoken (Python repr)"] + [f"{i}\t{t!r}" for i, t in enumerate(self._id_to_str)]
        return {"vocab.txt": "\n".join(lines) + "\n"}

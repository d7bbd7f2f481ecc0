"""Happy LLM 5.2 — the interface every tokenizer shares.

A tokenizer turns text into a list of integer ids and back.  The three
tokenizers of section 5.2 (``WordTokenizer`` 5.2.1, ``CharTokenizer`` 5.2.2,
``BPETokenizer`` 5.2.3) differ only in how they cut *ordinary* text; everything
else lives here, once:

* **special tokens** such as ``<s>`` or ``<|im_end|>``: strings that are never
  split and map to fixed ids.  Because a user could type ``<|im_end|>`` into a
  chat box and fake the end of a turn, ``encode`` refuses special-token text by
  default (``allowed_special="none_raise"``), like ``tiktoken``:

  ==================  =======================================================
  ``"none_raise"``    default: raise ``ValueError`` naming the special token
  ``"all"``           every special-token string becomes its id
  ``{"<s>", ...}``    only these become ids; any other special found raises
  ``"none"``          special-looking text is encoded as ordinary text
  ==================  =======================================================

* the chat template (``apply_chat_template`` / ``encode_chat``);
* ``decode`` with range checks, ``encode_batch`` / ``decode_batch``;
* files: ``save(dir)`` writes ``dir/tokenizer.json`` in Hugging Face format,
  ``dir/tokenizer_config.json`` (special-token roles, chat template) and a
  human-readable listing; ``Tokenizer.load(path)`` picks the right class.
"""

from __future__ import annotations

import abc
import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np

from .._checks import check_token_ids
from .._files import atomic_write
from .chat import IM_END, IM_START, apply_chat_template as _format_chat, chat_template_jinja, prepare_messages
from .hf_json import CHAR_PATTERN

__all__ = ["Tokenizer", "DEFAULT_SPECIAL_TOKENS", "load_tokenizer"]

#: The book's special tokens at ids 0-4, plus a padding token distinct from EOS
#: (padding with EOS would teach a fine-tuned model never to stop, see SFT).
DEFAULT_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<pad>")

_ROLE_DEFAULTS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
_AUTO = "auto"  # role argument default: the conventional name, if that token exists

_POLICIES = ("none_raise", "all", "none")


def _read_json(path: Path) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file not found: {str(path)!r}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def training_texts(texts, who: str):
    """The texts a trainer reads, one at a time (a single ``str`` is one text); anything else than a
    ``str`` is refused with a TypeError naming ``who`` when it is reached."""
    for text in [texts] if isinstance(texts, str) else texts:
        if not isinstance(text, str):
            raise TypeError(f"{who}: training texts must be str, got {type(text).__name__}")
        yield text


def config_path_for(file: Path) -> Path:
    """The config file that belongs to the tokenizer file ``file``.

    ``tokenizer.json`` pairs with ``tokenizer_config.json`` (Hugging Face's names); any other
    name ``X.json`` with ``X_config.json`` -- so a second tokenizer saved as ``dir/other.json``
    never reads, or overwrites, the config of the ``tokenizer.json`` in the same folder.
    """
    if file.name == "tokenizer.json":
        return file.parent / "tokenizer_config.json"
    return file.parent / f"{file.stem}_config.json"


def _resolve_files(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``dir`` or ``dir/X.json`` -> (the tokenizer file, its config file or None)."""
    p = Path(path)
    if p.is_dir():
        file = p / "tokenizer.json"
        if not file.exists():
            raise FileNotFoundError(f"no tokenizer.json in directory {str(p)!r}")
    elif p.exists():
        file = p
    else:
        raise FileNotFoundError(f"tokenizer file or directory not found: {str(p)!r}")
    config = config_path_for(file)
    return file, (config if config.exists() else None)


class Tokenizer(abc.ABC):
    """Base class: special tokens, encode/decode plumbing, chat template, files.

    Subclasses implement ``_encode_ordinary``, ``_decode``, ``vocab_size``,
    ``id_to_token``, ``token_to_id``, ``get_vocab``, ``to_hf_json``,
    ``_from_hf`` and ``train``.
    """

    _registry: ClassVar[dict[str, type["Tokenizer"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Tokenizer._registry[cls.__name__] = cls

    def __init__(
        self,
        special_tokens: Sequence[str] | Mapping[str, int],
        *,
        unk_token: str | None = _AUTO,
        bos_token: str | None = _AUTO,
        eos_token: str | None = _AUTO,
        pad_token: str | None = _AUTO,
        default_system: str | None = None,
    ):
        if not isinstance(special_tokens, Mapping):  # a list: ids 0, 1, 2, ... in order
            special_tokens = list(special_tokens)
            if len(set(special_tokens)) != len(special_tokens):
                raise ValueError(f"special_tokens has duplicates: {special_tokens}")
            special_tokens = {t: i for i, t in enumerate(special_tokens)}
        self._special_tokens: dict[str, int] = {}
        for tok, i in dict(special_tokens).items():
            if not isinstance(tok, str) or not tok:
                raise ValueError(f"special tokens must be non-empty strings, got {tok!r}")
            if not isinstance(i, (int, np.integer)) or i < 0:
                raise ValueError(f"special token {tok!r} has an invalid id {i!r}")
            self._special_tokens[tok] = int(i)
        self._special_ids: dict[int, str] = {i: t for t, i in self._special_tokens.items()}
        if len(self._special_ids) != len(self._special_tokens):
            raise ValueError(f"two special tokens share an id: {self._special_tokens}")
        roles = {"unk_token": unk_token, "bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token}
        for role, name in roles.items():
            if name == _AUTO:
                name = _ROLE_DEFAULTS[role] if _ROLE_DEFAULTS[role] in self._special_tokens else None
            elif name is not None and name not in self._special_tokens:
                raise ValueError(f"{role}={name!r} is not one of the special tokens {list(self._special_tokens)}")
            setattr(self, role, name)
        if default_system is not None and not isinstance(default_system, str):
            raise ValueError(f"default_system must be a str or None, got {type(default_system).__name__}")
        self.default_system: str | None = default_system
        self._special_regex_cache: dict[frozenset, re.Pattern] = {}

    # ------------------------------------------------------------------ #
    # What subclasses provide
    # ------------------------------------------------------------------ #
    # (abstract: a subclass missing one of these cannot be instantiated)
    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""

    @abc.abstractmethod
    def _encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with no special-token handling."""

    @abc.abstractmethod
    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        """Text of validated ids."""

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """The vocabulary string of one id."""

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary string, or None."""

    @abc.abstractmethod
    def get_vocab(self) -> dict[str, int]:
        """``{token string: id}`` for the whole vocabulary."""

    @abc.abstractmethod
    def to_hf_json(self) -> dict:
        """The Hugging Face ``tokenizer.json`` content."""

    @classmethod
    @abc.abstractmethod
    def _from_hf(cls, data: dict, config: dict, source: str) -> "Tokenizer":
        """Rebuild from a parsed ``tokenizer.json`` (and ``tokenizer_config.json``)."""

    def _listings(self) -> dict[str, str]:
        return {}

    # ------------------------------------------------------------------ #
    # Special tokens
    # ------------------------------------------------------------------ #
    @property
    def special_tokens(self) -> dict[str, int]:
        """``{special token string: id}`` (a copy)."""
        return dict(self._special_tokens)

    @property
    def all_special_ids(self) -> list[int]:
        return sorted(self._special_ids)

    def _role_id(self, name: str | None) -> int | None:
        return None if name is None else self._special_tokens[name]

    @property
    def unk_token_id(self) -> int | None:
        return self._role_id(self.unk_token)

    @property
    def bos_token_id(self) -> int | None:
        return self._role_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._role_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._role_id(self.pad_token)

    @property
    def im_start_id(self) -> int | None:
        return self._special_tokens.get(IM_START)

    @property
    def im_end_id(self) -> int | None:
        return self._special_tokens.get(IM_END)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, special_tokens={list(self._special_tokens)})"

    # ------------------------------------------------------------------ #
    # Encoding
    # ------------------------------------------------------------------ #
    def _policy(self, allowed_special) -> tuple[frozenset, bool]:
        """-> (special tokens to match, whether any other special token raises)."""
        if isinstance(allowed_special, str):
            if allowed_special == "none_raise":
                return frozenset(), True
            if allowed_special == "all":
                return frozenset(self._special_tokens), False
            if allowed_special == "none":
                return frozenset(), False
            raise ValueError(
                f"allowed_special={allowed_special!r} is not a policy; use one of {_POLICIES} or a set of special tokens"
            )
        if isinstance(allowed_special, (set, frozenset, list, tuple)):
            allowed = frozenset(allowed_special)
            unknown = sorted(t for t in allowed if t not in self._special_tokens)
            if unknown:
                raise ValueError(f"allowed_special names {unknown}, which are not special tokens {list(self._special_tokens)}")
            return allowed, True
        raise ValueError(f"allowed_special must be one of {_POLICIES} or a set of special tokens, got {allowed_special!r}")

    def _special_regex(self, tokens: frozenset) -> re.Pattern:
        pat = self._special_regex_cache.get(tokens)
        if pat is None:
            # Longest first, so a special that is a prefix of another never wins.
            alts = sorted(tokens, key=lambda t: (-len(t), t))
            pat = re.compile("|".join(re.escape(t) for t in alts))
            self._special_regex_cache[tokens] = pat
        return pat

    def _check_no_special(self, text: str, allowed: frozenset) -> None:
        if not any(c in text for c in {t[0] for t in self._special_tokens}):
            return  # one scan per distinct first character ("<" for ours) instead of one per special token
        first = None
        for tok in self._special_tokens:
            if tok in allowed:
                continue
            i = text.find(tok)
            if i >= 0 and (first is None or i < first[0]):
                first = (i, tok)
        if first is not None:
            i, tok = first
            raise ValueError(
                f"text contains the special token {tok!r} at index {i}. Special-token text in input is refused by "
                f"default (it could fake a chat turn). Pass allowed_special='all' (or a set like {{{tok!r}}}) to "
                f"encode it as the special token, or allowed_special='none' to encode it as ordinary text."
            )

    def encode(self, text: str, add_special_tokens: bool = False, allowed_special="none_raise") -> list[int]:
        """Text -> token ids.

        ``add_special_tokens=True`` prepends the BOS token.  ``allowed_special``
        decides what happens to special-token strings found in ``text`` (see the
        module docstring); the default raises ``ValueError``.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        allowed, check = self._policy(allowed_special)
        ids: list[int] = []
        if add_special_tokens:
            if self.bos_token_id is None:
                raise ValueError("add_special_tokens=True needs a BOS token, but this tokenizer has none")
            ids.append(self.bos_token_id)
        if check and self._special_tokens:
            self._check_no_special(text, allowed)
        if not allowed:
            ids.extend(self._encode_ordinary(text))
            return ids
        start = 0
        for m in self._special_regex(allowed).finditer(text):
            if m.start() > start:
                ids.extend(self._encode_ordinary(text[start : m.start()]))
            ids.append(self._special_tokens[m.group()])
            start = m.end()
        if start < len(text):
            ids.extend(self._encode_ordinary(text[start:]))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode treating every character as ordinary text (same as ``allowed_special="none"``)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return self._encode_ordinary(text)

    def encode_batch(
        self, texts: Iterable[str], add_special_tokens: bool = False, allowed_special="none_raise"
    ) -> list[list[int]]:
        """``[encode(t) for t in texts]``."""
        if isinstance(texts, str):
            raise TypeError("encode_batch expects a list of strings; for one string use encode()")
        return [self.encode(t, add_special_tokens=add_special_tokens, allowed_special=allowed_special) for t in texts]

    # ------------------------------------------------------------------ #
    # Decoding
    # ------------------------------------------------------------------ #
    def _check_id(self, token_id, where: str) -> None:
        """One id (``id_to_token``, ``id_to_bytes``): an int inside the vocabulary."""
        if not isinstance(token_id, (int, np.integer)) or isinstance(token_id, bool):
            raise TypeError(f"{where}: token id must be an int, got {token_id!r}")
        check_token_ids(token_id, self.vocab_size, where)

    def _as_id_list(self, ids) -> list[int]:
        if isinstance(ids, (int, np.integer)):
            raise TypeError("decode expects a sequence of ids; for a single id use decode([token_id])")
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1:
                raise ValueError(f"decode expects a 1-D sequence of ids, got an array of shape {ids.shape}")
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"decode expects integer ids, got an array of dtype {ids.dtype}")
            ids = ids.tolist()
        elif isinstance(ids, (str, bytes)):
            raise TypeError(f"decode expects a sequence of ids, got {type(ids).__name__}")
        else:
            ids = [int(i) if isinstance(i, np.integer) else i for i in ids]
        if ids:
            bad_type = next((i for i in ids if not isinstance(i, int) or isinstance(i, bool)), None)
            if bad_type is not None:
                raise ValueError(f"decode expects integer ids, got {bad_type!r}")
            check_token_ids(ids, self.vocab_size, "decode")
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Token ids -> text.  Special tokens come back as their text unless skipped.

        Accepts lists, tuples and 1-D NumPy integer arrays; an id outside the
        vocabulary raises ``ValueError`` naming it.
        """
        return self._decode(self._as_id_list(ids), skip_special_tokens)

    def decode_batch(self, batch: Iterable[Sequence[int]], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in batch]

    # ------------------------------------------------------------------ #
    # Chat template (5.2.4)
    # ------------------------------------------------------------------ #
    def _require_chat_tokens(self) -> None:
        missing = [t for t in (IM_START, IM_END) if t not in self._special_tokens]
        if missing:
            raise ValueError(f"the chat template needs the special tokens {missing}, which this tokenizer lacks")

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False, default_system: str | None = None,
        tools: Sequence[Mapping] | None = None, tool_style: str = "json",
    ) -> str:
        """Format ``[{"role": ..., "content": ...}]`` as ``<|im_start|>{role}\\n{content}<|im_end|>\\n``...

        ``default_system=None`` uses the tokenizer's ``default_system`` (itself
        ``None`` unless set), inserted when the first message is not a system one.
        ``tools`` / ``tool_style`` list the tools in the system turn, and assistant
        ``tool_calls`` become ``<tool_call>`` text (``minillm/tokenizers/chat.py``).
        Encode the result with ``allowed_special="all"``, or use ``encode_chat``.
        """
        self._require_chat_tokens()
        system = self.default_system if default_system is None else default_system
        return _format_chat(messages, add_generation_prompt=add_generation_prompt, default_system=system, tools=tools,
                            tool_style=tool_style)

    def encode_chat(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False, default_system: str | None = None,
        tools: Sequence[Mapping] | None = None, tool_style: str = "json",
    ) -> list[int]:
        """Ids of the chat template, with message contents encoded as ordinary text.

        Gives the same ids as ``encode(apply_chat_template(...), allowed_special="all")``
        whenever no content contains special-token text; when one does, that text
        stays ordinary, so a user cannot close a turn by typing ``<|im_end|>``.
        """
        self._require_chat_tokens()
        system = self.default_system if default_system is None else default_system
        msgs = prepare_messages(messages, system, tools, tool_style)
        start, end = self._special_tokens[IM_START], self._special_tokens[IM_END]
        newline = self._encode_ordinary("\n")
        ids: list[int] = []
        for m in msgs:
            ids.append(start)
            ids.extend(self._encode_ordinary(f"{m['role']}\n{m['content']}"))
            ids.append(end)
            ids.extend(newline)
        if add_generation_prompt:
            ids.append(start)
            ids.extend(self._encode_ordinary("assistant\n"))
        return ids

    # ------------------------------------------------------------------ #
    # Files
    # ------------------------------------------------------------------ #
    def _hf_added_tokens(self) -> list[dict]:
        return [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, t in sorted(self._special_ids.items())
        ]

    def config(self) -> dict[str, Any]:
        """The ``tokenizer_config.json`` content (Hugging Face ``transformers`` keys)."""
        cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
        for role in ("bos_token", "eos_token", "unk_token", "pad_token"):
            cfg[role] = getattr(self, role)
        cfg["clean_up_tokenization_spaces"] = False
        cfg["model_max_length"] = 1_000_000_000
        if IM_START in self._special_tokens and IM_END in self._special_tokens:
            cfg["chat_template"] = chat_template_jinja(self.default_system)
        cfg["minillm"] = {"format": 1, "class": type(self).__name__, "default_system": self.default_system}
        return cfg

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/tokenizer.json`` (+ ``tokenizer_config.json`` and listings).

        ``path`` is a directory (created if needed); a path ending in ``.json``
        names the tokenizer file itself. ``dir/tokenizer.json`` gets the usual
        companions; any other name ``dir/X.json`` gets ``dir/X_config.json`` and no
        listings, so it never overwrites another tokenizer's files in ``dir``.
        Returns the tokenizer file's path.
        """
        p = Path(path)
        if p.suffix == ".json":
            file, folder = p, p.parent
            if file.name.endswith("_config.json"):
                raise ValueError(f"save: {str(p)!r} looks like a config file name; name the tokenizer file "
                                 "tokenizer.json or X.json (its config becomes X_config.json)")
        else:
            file, folder = p / "tokenizer.json", p
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(file, json.dumps(self.to_hf_json(), ensure_ascii=False, indent=2) + "\n")
        atomic_write(config_path_for(file), json.dumps(self.config(), ensure_ascii=False, indent=2) + "\n")
        if file.name == "tokenizer.json":  # the listings (merges.txt, vocab.txt) have one fixed name per folder
            for name, text in self._listings().items():
                atomic_write(folder / name, text)
        return file

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read a tokenizer saved by ``save`` (a directory or its ``tokenizer.json``).

        ``Tokenizer.load`` returns whichever class the file holds;
        ``BPETokenizer.load`` etc. also check that it is that class.
        """
        file, config_file = _resolve_files(path)
        data = _read_json(file)
        config = _read_json(config_file) if config_file is not None else {}
        mini = config.get("minillm")
        if mini is not None and not isinstance(mini, dict):
            raise ValueError(f"{str(config_file)!r}: field 'minillm' must be an object, got {mini!r}")
        mini = mini or {}
        for key in ("class", "default_system"):  # strict types: a file is data from a stranger
            if mini.get(key) is not None and not isinstance(mini[key], str):
                raise ValueError(f"{str(config_file)!r}: minillm.{key} must be a string or null, got {mini[key]!r}")
        name = mini.get("class")
        if name is None:
            name = cls._guess_class(data, str(file))
        klass = Tokenizer._registry.get(name)
        if klass is None:
            raise ValueError(f"{str(file)!r}: unknown tokenizer class {name!r}; known: {sorted(Tokenizer._registry)}")
        if cls is not Tokenizer and not issubclass(klass, cls):
            raise ValueError(f"{str(file)!r} holds a {name}, not a {cls.__name__}; use minillm.tokenizers.load_tokenizer")
        tok = klass._from_hf(data, config, str(file))
        tok.default_system = mini.get("default_system")
        return tok

    @staticmethod
    def _guess_class(data: dict, source: str) -> str:
        model = data.get("model")
        if not isinstance(model, dict) or "type" not in model:
            raise ValueError(f"{source!r} has no 'model' with a 'type': not a tokenizer.json file")
        if model["type"] == "BPE":
            return "BPETokenizer"
        if model["type"] == "WordPiece":
            return "WordPieceTokenizer"
        if model["type"] == "Unigram":
            return "UnigramTokenizer"
        if model["type"] == "WordLevel":
            pre = data.get("pre_tokenizer") or {}
            pattern = (pre.get("pattern") or {}).get("Regex") if isinstance(pre, dict) else None
            return "CharTokenizer" if pattern == CHAR_PATTERN else "WordTokenizer"
        raise ValueError(f"{source!r}: unsupported model type {model['type']!r} (expected BPE, WordPiece, Unigram or WordLevel)")

    def _roles_from_config(self, config: dict) -> None:
        """Apply the role names saved in tokenizer_config.json (if any)."""
        for role in ("unk_token", "bos_token", "eos_token", "pad_token"):
            if role in config:
                name = config[role]
                if isinstance(name, dict):  # transformers' AddedToken form
                    name = name.get("content")
                if name is not None and not isinstance(name, str):
                    raise ValueError(f"tokenizer_config.json: {role} must be a string or null, got {name!r}")
                if name is not None and name not in self._special_tokens:
                    raise ValueError(f"tokenizer_config.json sets {role}={name!r}, which is not a special token")
                setattr(self, role, name)



class ListVocabTokenizer(Tokenizer):
    """A tokenizer whose vocabulary is a list: id ``i`` is the string ``_id_to_str[i]``, with
    ``_vocab`` (ordinary strings -> ids) and ``_special_tokens`` (specials -> ids) for the way
    back. WordLevel, WordPiece and Unigram keep theirs this way; BPE (bytes) does not."""

    _id_to_str: list
    _vocab: dict
    _special_tokens: dict

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_str)

    def id_to_token(self, token_id: int) -> str:
        self._check_id(token_id, "id_to_token")
        return self._id_to_str[token_id]

    def token_to_id(self, token: str) -> int | None:
        return self._special_tokens.get(token, self._vocab.get(token))

    def get_vocab(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self._id_to_str)}


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load any minillm tokenizer from a directory or ``tokenizer.json`` file."""
    return Tokenizer.load(path)

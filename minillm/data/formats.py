"""Reading user data in the book's file formats (Happy LLM 5.3.1-5.3.2, 6.1-6.2).

Pretraining text
    * ``.jsonl``: one JSON object per line with a string field ``"text"``
      (the seq-monkey format used in the book). Other fields are ignored.
    * ``.txt``: plain UTF-8 text; **one document per paragraph**, paragraphs
      being separated by one or more blank lines. Lines inside a paragraph are
      kept (joined with ``"\\n"``). A file without blank lines is one document.

SFT conversations (``.jsonl``, one conversation per line)
    * BelleGroup / ShareGPT shape:
      ``{"conversations": [{"from": "human", "value": "..."}, {"from": "assistant", "value": "..."}]}``
      (``from``: ``human``/``user`` -> user, ``assistant``/``gpt``/``bot`` -> assistant,
      ``system`` -> system).
    * OpenAI shape: ``{"messages": [{"role": "user", "content": "..."}, ...]}``.
    Both normalise to ``[{"role": ..., "content": ...}, ...]``. Each turn may
    use either key pair (``from``/``value`` or ``role``/``content``).

    Tool use (Happy LLM 7.3, the agent):
    * OpenAI: an assistant turn with ``"tool_calls": [{"type": "function", "function":
      {"name": ..., "arguments": "<JSON string>"}}]`` (``content`` may be null), the
      results as ``{"role": "tool", "content": ...}`` turns, and the available tools
      as a record-level ``"tools": [schema, ...]``;
    * ShareGPT (LLaMA-Factory): ``{"from": "function_call", "value": "{\"name\": ...,
      \"arguments\": {...}}"}`` then ``{"from": "observation", "value": ...}``, and
      ``"tools"`` as a list or as a JSON string.
    They normalise through the chat template's own rendering
    (``minillm.tokenizers.chat.prepare_messages``): a call becomes assistant text
    ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, a result a ``tool``
    turn, and the tools a listing at the end of the system turn, so SFT trains on
    exactly the text the agent will read and write. A ``tool`` turn must follow an
    assistant turn that called a tool (or another ``tool`` turn).

Blank lines in ``.jsonl`` files are ignored. Any other bad line raises
``DataFormatError`` (a ``ValueError``) naming the file, the 1-based line number
and what is wrong, e.g.::

    data/sft.jsonl:17: turn 2: unknown role 'robot' (expected one of: ...)

so a broken line stops the run *before* training, never mid-epoch (read the
files once, e.g. when building the token file or the SFT dataset).

With ``skip_bad_lines=True`` bad lines are skipped instead. The readers return
a ``RecordReader``: an iterator with ``.skipped`` (how many lines were skipped)
and ``.errors`` (the first 20 ``DataFormatError`` s); a warning with the count
is also emitted when the reader is exhausted, so skipping is never silent::

    reader = read_sft_conversations("sft.jsonl", skip_bad_lines=True)
    convs = list(reader)
    print(reader.skipped, reader.errors[:3])
"""

from __future__ import annotations

import json
import os
import re
import warnings
from typing import Callable, Iterator, Optional, Union

from ..tokenizers.chat import TOOL_CALL_START, prepare_messages

__all__ = [
    "DataFormatError",
    "RecordReader",
    "read_pretrain_texts",
    "read_sft_conversations",
    "read_sft_records",
    "check_eval_conversation",
    "normalize_conversation",
    "iter_files",
]

PathLike = Union[str, os.PathLike]

_ROLE_MAP = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "tool": "tool",
    "function": "tool",  # OpenAI's older function-calling role
    "observation": "tool",  # ShareGPT / LLaMA-Factory
    "function_call": "assistant",  # ShareGPT / LLaMA-Factory: the value is the call as JSON
}


class DataFormatError(ValueError):
    """A malformed record. ``path``, ``line`` (1-based) and ``reason`` say where and what."""

    def __init__(self, path, line: Optional[int], reason: str):
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {reason}")


def iter_files(paths, exts, what: str = "data") -> list:
    """Expand ``paths`` (a path, a directory, or a list of them) into a file list.

    A directory contributes its files ending in one of ``exts``, sorted (not
    recursive). A missing path raises ``FileNotFoundError``; a file with another
    extension raises ``DataFormatError`` (checked here, before any reading).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(tuple(exts)))
            if not found:
                raise FileNotFoundError(f"directory {p} has no {'/'.join(exts)} files")
            out.extend(found)
        elif os.path.isfile(p):
            if not p.endswith(tuple(exts)):
                raise DataFormatError(p, None, f"unsupported {what} file type (expected {' or '.join(exts)})")
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return out


class RecordReader:
    """Iterator over the records of several files; counts skipped bad lines.

    Attributes: ``skipped`` (int), ``errors`` (first ``max_errors`` errors kept),
    ``paths`` (the files read, in order). Iterate it once.
    """

    max_errors = 20

    def __init__(self, paths: list, read_file: Callable, skip_bad_lines: bool):
        self.paths = paths
        self.skip_bad_lines = bool(skip_bad_lines)
        self.skipped = 0
        self.errors: list = []
        self._read_file = read_file
        self._it = self._generate()

    def __iter__(self) -> "RecordReader":
        return self

    def __next__(self):
        return next(self._it)

    def _bad(self, err: DataFormatError) -> None:
        if not self.skip_bad_lines:
            raise err
        self.skipped += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(err)

    def _generate(self) -> Iterator:
        for path in self.paths:
            yield from self._read_file(path, self._bad)
        if self.skipped:
            first = "; ".join(str(e) for e in self.errors[:3])
            warnings.warn(f"skipped {self.skipped} malformed line(s) (first: {first})", stacklevel=3)


def _iter_lines(path: str, bad: Callable) -> Iterator:
    """(line_number, decoded line) for each line; undecodable lines go to ``bad``."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                bad(DataFormatError(path, lineno, f"not valid UTF-8 ({e.reason} at byte {e.start})"))
                continue
            yield lineno, line


def _iter_json_objects(path: str, bad: Callable) -> Iterator:
    """(line_number, dict) for each non-blank line of a JSONL file."""
    for lineno, line in _iter_lines(path, bad):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad(DataFormatError(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            bad(DataFormatError(path, lineno, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        yield lineno, obj


# ----------------------------------------------------------------------------
# Pretraining text
# ----------------------------------------------------------------------------


def _read_pretrain_file(path: str, bad: Callable) -> Iterator[str]:
    if path.endswith(".jsonl"):
        for lineno, obj in _iter_json_objects(path, bad):
            if "text" not in obj:
                bad(DataFormatError(path, lineno, f"missing field 'text' (fields present: {sorted(obj)})"))
                continue
            text = obj["text"]
            if not isinstance(text, str):
                bad(DataFormatError(path, lineno, f"field 'text' must be a string, got {type(text).__name__}"))
                continue
            yield text
    elif path.endswith(".txt"):
        para: list = []
        for _, line in _iter_lines(path, bad):
            line = line.rstrip("\r\n")
            if line.strip():
                para.append(line)
            elif para:
                yield "\n".join(para)
                para = []
        if para:
            yield "\n".join(para)
    else:  # pragma: no cover - iter_files already checked
        raise DataFormatError(path, None, "unsupported pretraining file type (expected .jsonl or .txt)")


def read_pretrain_texts(paths, skip_bad_lines: bool = False) -> RecordReader:
    """Iterate the documents (``str``) of pretraining files (.jsonl or .txt, see module doc).

    ``paths``: a file, a directory (its .jsonl/.txt files, sorted), or a list.
    Files are read lazily, in order.
    """
    files = iter_files(paths, (".jsonl", ".txt"), "pretraining")
    return RecordReader(files, _read_pretrain_file, skip_bad_lines)


# ----------------------------------------------------------------------------
# SFT conversations
# ----------------------------------------------------------------------------


def normalize_conversation(obj) -> list:
    """Normalise one SFT record to ``[{"role": ..., "content": ...}, ...]``.

    ``obj`` may be a BelleGroup/ShareGPT record (``{"conversations": [...]}``),
    an OpenAI record (``{"messages": [...]}``) or already a list of turns.
    Raises ``ValueError`` describing the first problem found.

    >>> normalize_conversation({"conversations": [{"from": "human", "value": "hi"}]})
    [{'role': 'user', 'content': 'hi'}]
    """
    if isinstance(obj, dict):
        keys = [k for k in ("messages", "conversations") if k in obj]
        if not keys:
            raise ValueError(f"expected a 'conversations' or 'messages' field (fields present: {sorted(obj)})")
        if len(keys) == 2:
            raise ValueError("has both 'conversations' and 'messages': ambiguous, keep one")
        key = keys[0]
        turns = obj[key]
    else:
        key, turns = "conversation", obj
    if not isinstance(turns, list):
        raise ValueError(f"'{key}' must be a list of turns, got {type(turns).__name__}")
    if not turns:
        raise ValueError(f"'{key}' is empty")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {i}: expected an object, got {type(turn).__name__}")
        if "role" in turn or "content" in turn:
            role_key, text_key = "role", "content"
        else:
            role_key, text_key = "from", "value"
        calls = turn.get("tool_calls")
        for k in (role_key, text_key):
            if k not in turn and not (k == "content" and calls):  # OpenAI may omit content next to tool calls
                raise ValueError(f"turn {i}: missing field '{k}' (fields present: {sorted(turn)})")
        role, text = turn[role_key], turn.get(text_key)
        if not isinstance(role, str) or role.lower() not in _ROLE_MAP:
            raise ValueError(f"turn {i}: unknown role {role!r} (expected one of: {', '.join(_ROLE_MAP)})")
        if text is None and calls:
            text = ""
        if not isinstance(text, str):
            raise ValueError(
                f"turn {i}: field '{text_key}' must be a string, got {type(text).__name__}"
                + (" (multi-part content lists are not supported)" if isinstance(text, list) else "")
            )
        if role.lower() == "function_call":  # ShareGPT: the value is {"name": ..., "arguments": ...} as JSON
            try:
                call = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"turn {i}: a function_call value must be JSON ({e.msg}), got {text!r:.80}") from None
            calls, text = [call], ""
        new_role = _ROLE_MAP[role.lower()]
        if new_role == "tool" and not (out and (out[-1]["role"] == "tool" or TOOL_CALL_START in out[-1]["content"])):
            raise ValueError(f"turn {i}: a tool turn must follow an assistant turn that calls a tool (or another tool turn)")
        msg = {"role": new_role, "content": text}
        if calls:
            if new_role != "assistant":
                raise ValueError(f"turn {i}: only an assistant turn can have tool_calls, not {role!r}")
            try:
                msg = prepare_messages([{"role": "assistant", "content": text, "tool_calls": calls}])[0]
            except ValueError as e:
                raise ValueError(f"turn {i}: {re.sub(r'^message 0:? ', '', str(e))}") from None
        out.append(msg)
    tools = obj.get("tools") if isinstance(obj, dict) else None
    if tools:
        if isinstance(tools, str):  # LLaMA-Factory stores the schemas as a JSON string
            try:
                tools = json.loads(tools)
            except json.JSONDecodeError as e:
                raise ValueError(f"field 'tools' is a string but not JSON ({e.msg})") from None
        try:
            out = prepare_messages(out, tools=tools)
        except ValueError as e:
            raise ValueError(f"field 'tools': {e}") from None
    return out


def _read_sft_file(path: str, bad: Callable) -> Iterator[list]:
    for lineno, obj in _iter_json_objects(path, bad):
        try:
            conv = normalize_conversation(obj)
        except ValueError as e:
            bad(DataFormatError(path, lineno, str(e)))
            continue
        yield conv


def read_sft_conversations(paths, skip_bad_lines: bool = False) -> RecordReader:
    """Iterate the conversations of SFT .jsonl files, each as ``[{"role", "content"}, ...]``.

    Accepts the BelleGroup and OpenAI shapes (see module doc); ``paths`` as in
    ``read_pretrain_texts``.
    """
    files = iter_files(paths, (".jsonl",), "SFT")
    return RecordReader(files, _read_sft_file, skip_bad_lines)


def check_eval_conversation(conv: list) -> None:
    """An evaluation record must end with the reference reply to a user turn: the model is
    asked everything before the last message and its answer compared with that last message.
    Raises ``ValueError`` saying what is missing."""
    if len(conv) < 2:
        raise ValueError(f"an evaluation record needs a user turn and the reference assistant reply; this one has "
                         f"{len(conv)} message(s)")
    if conv[-1]["role"] != "assistant" or conv[-2]["role"] != "user":
        raise ValueError(f"an evaluation record must end with a user turn then the reference assistant reply; it ends "
                         f"with {conv[-2]['role']!r}, {conv[-1]['role']!r}")


def _read_record_file(path: str, bad: Callable, for_evaluation: bool) -> Iterator[dict]:
    for lineno, obj in _iter_json_objects(path, bad):
        try:
            conv = normalize_conversation(obj)
            meta = obj.get("meta")
            if meta is not None and not isinstance(meta, dict):
                raise ValueError(f"field 'meta' must be an object, got {type(meta).__name__}")
            if for_evaluation:
                check_eval_conversation(conv)
        except ValueError as e:
            bad(DataFormatError(path, lineno, str(e)))
            continue
        yield {"messages": conv, "meta": meta} if meta is not None else {"messages": conv}


def read_sft_records(paths, for_evaluation: bool = False, skip_bad_lines: bool = False) -> RecordReader:
    """Like ``read_sft_conversations`` (the same reader, the same errors) but each record is
    ``{"messages": [...], "meta": {...}}``, keeping the optional ``meta`` object (e.g. the skill
    an evaluation groups by). ``for_evaluation=True`` also requires each record to end with a
    user turn and its reference reply (``check_eval_conversation``), so a file an evaluation
    cannot use is refused when it is read (before training), not after.
    """
    files = iter_files(paths, (".jsonl",), "SFT")
    return RecordReader(files, lambda path, bad: _read_record_file(path, bad, for_evaluation), skip_bad_lines)

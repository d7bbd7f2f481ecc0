"""SFT examples: chat template, loss masking, padding (Happy LLM 5.3.2 ``SFTDataset``, 6.2).

A conversation is rendered in the ChatML template the tokenizer's
``apply_chat_template`` uses, one piece at a time so we know which tokens
belong to which role::

    <|im_start|>user\\n      {user text}        <|im_end|>  \\n
    <|im_start|>assistant\\n {assistant text}   <|im_end|>  \\n
    ---------- -100 ------  -- trained (assistant only) --  -100

A ``tool`` turn (a tool's result, Happy LLM 7.3) is rendered like any other turn
and never trained: the model learns to *call* tools (the ``<tool_call>`` text is
assistant text) and to use their results, not to predict them.

Only the assistant's text **and its closing** ``<|im_end|>`` are trained; every
other position gets the label ``-100`` (ignored by
``F.cross_entropy(..., ignore_index=-100)``). The book's code masks
``<|im_end|>`` too, because it uses the same id for padding and end-of-turn,
so its model never learns to stop talking. Ours pads with a distinct
``pad_token_id`` and masks padding with ``-100`` in the targets, never by id.

User/system text is encoded with ``allowed_special="none"``: a user who types
"<|im_end|>" gets ordinary characters, never a control token. Only the
template's own pieces are encoded with ``allowed_special="all"``.

Shifted pairs
-------------
Our model's ``forward(input_ids, targets)`` compares ``logits[t]`` with
``targets[t]``, so ``build_sft_example`` returns the pairs **already shifted**:
``input_ids = ids[:-1]``, ``targets = labels[1:]``, where ``labels[t]`` is
``ids[t]`` on trained tokens and ``-100`` elsewhere. ``targets[t]`` is the
token that should follow ``input_ids[: t + 1]``.

Truncation policy
-----------------
``max_length`` is the length of ``input_ids`` (the model's context). A
conversation longer than ``max_length + 1`` tokens keeps its **beginning**:
the first ``max_length + 1`` tokens, so the prompt survives and the end of the
last reply is cut (that truncated reply then lacks its ``<|im_end|>``).
Examples left with no trained token (the cut fell before any assistant text)
are dropped by ``SFTDataset``, which counts them in ``n_dropped``;
``n_truncated`` counts the truncated ones that were kept.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

__all__ = ["IGNORE_INDEX", "build_sft_example", "tokenize_conversation", "SFTDataset", "collate_sft"]

IGNORE_INDEX = -100
_ROLES = ("system", "user", "assistant", "tool")  # tool: a tool's result (7.3), never trained


class _ChatPieces:
    """Token ids of the template's control pieces, computed once per tokenizer."""

    def __init__(self, tokenizer):
        for tok in ("<|im_start|>", "<|im_end|>"):
            tid = tokenizer.token_to_id(tok)
            if tid is None:
                raise ValueError(f"tokenizer has no {tok} special token; SFT needs the ChatML specials")
        self.tokenizer = tokenizer
        self.header = {r: list(tokenizer.encode(f"<|im_start|>{r}\n", allowed_special="all")) for r in _ROLES}
        self.im_end = list(tokenizer.encode("<|im_end|>", allowed_special="all"))
        self.newline = list(tokenizer.encode("\n", allowed_special="all"))

    def content(self, text: str) -> list:
        return list(self.tokenizer.encode(text, allowed_special="none"))


def _check_messages(messages) -> list:
    if isinstance(messages, dict):  # a whole record: {"messages": [...]} or {"conversations": [...]}
        from .formats import normalize_conversation

        return normalize_conversation(messages)
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.80}")
    if any(isinstance(m, dict) and m.get("tool_calls") for m in messages):  # OpenAI tool calls -> <tool_call> text
        from ..tokenizers.chat import prepare_messages

        messages = prepare_messages(messages)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r:.80}")
        if m["role"] not in _ROLES:
            raise ValueError(f"message {i}: role must be one of {_ROLES}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i}: content must be a string, got {type(m['content']).__name__}")
    return list(messages)


def tokenize_conversation(messages, tokenizer, default_system: Optional[str] = None, _pieces=None):
    """Full, unshifted, untruncated ``(ids, labels)`` lists of one conversation.

    ``labels[t] == ids[t]`` for assistant text and its ``<|im_end|>``, else -100.
    If ``default_system`` is given and the first message is not a system
    message, a system message with that text is put first.
    """
    messages = _check_messages(messages)
    if default_system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": default_system}] + messages
    p = _pieces if _pieces is not None else _ChatPieces(tokenizer)
    ids: list = []
    labels: list = []
    for m in messages:
        header = p.header[m["role"]]
        body = p.content(m["content"]) + p.im_end
        ids += header  # "<|im_start|>{role}\n": never trained
        labels += [IGNORE_INDEX] * len(header)
        ids += body  # "{content}<|im_end|>": trained for the assistant only
        labels += body if m["role"] == "assistant" else [IGNORE_INDEX] * len(body)
        ids += p.newline  # "\n" after <|im_end|>: never trained
        labels += [IGNORE_INDEX] * len(p.newline)
    return ids, labels


def build_sft_example(messages, tokenizer, max_length: int, default_system: Optional[str] = None, _pieces=None):
    """``(input_ids, targets)``: int64 arrays of equal length <= ``max_length``, already shifted.

    See the module docstring for the template, the masking and the truncation policy.

    Example with the conversation ``[user "hi", assistant "yo"]`` and one token per piece::

        ids     = [<s>user\\n, h, i, <e>, \\n, <s>assistant\\n, y, o, <e>, \\n]
        labels  = [-100,      -100 ...              -100,  y, o, <e>, -100]
        input_ids = ids[:-1]; targets = labels[1:]
    """
    if int(max_length) < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    ids, labels = tokenize_conversation(messages, tokenizer, default_system, _pieces)
    ids, labels = ids[: max_length + 1], labels[: max_length + 1]  # keep the beginning
    input_ids = np.asarray(ids[:-1], dtype=np.int64)  # (T,)
    targets = np.asarray(labels[1:], dtype=np.int64)  # (T,)
    return input_ids, targets


class SFTDataset:
    """Tokenized SFT conversations; ``ds[i] -> (input_ids, targets)`` unpadded int64 arrays.

    ``conversations``: an iterable of message lists (``[{"role", "content"}]``)
    or of records in the BelleGroup / OpenAI shape (e.g. ``generate_sft``'s
    output or ``read_sft_conversations``). All are tokenized once, up front.

    Counters: ``n_truncated`` (kept, but cut to ``max_length``) and
    ``n_dropped`` (no trained token left after truncation, or no assistant turn).
    Pad batches with ``collate_sft`` (e.g. ``DataLoader(ds, 16,
    collate_fn=functools.partial(collate_sft, pad_id=tokenizer.pad_token_id))``).
    """

    def __init__(self, conversations: Iterable, tokenizer, max_length: int, default_system: Optional[str] = None):
        self.max_length = int(max_length)
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        pieces = _ChatPieces(tokenizer)
        self.examples: list = []
        self.n_truncated = 0
        self.n_dropped = 0
        for conv in conversations:
            ids, labels = tokenize_conversation(conv, tokenizer, default_system, pieces)
            truncated = len(ids) > self.max_length + 1
            ids, labels = ids[: self.max_length + 1], labels[: self.max_length + 1]
            targets = np.asarray(labels[1:], dtype=np.int64)
            if not (targets != IGNORE_INDEX).any():
                self.n_dropped += 1
                continue
            self.n_truncated += truncated
            self.examples.append((np.asarray(ids[:-1], dtype=np.int64), targets))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        return self.examples[i]

    def lengths(self) -> np.ndarray:
        """Length of every example (handy for statistics or length-grouped batching)."""
        return np.array([len(x) for x, _ in self.examples], dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"SFTDataset({len(self)} examples, max_length={self.max_length}, "
            f"truncated={self.n_truncated}, dropped={self.n_dropped})"
        )


def collate_sft(batch, pad_id: int, pad_to: Optional[int] = None):
    """Right-pad a list of ``(input_ids, targets)`` into ``(input_ids, targets, attention_mask)``.

    All three are int64 arrays of shape (B, T), T = longest item (or ``pad_to``).
    ``input_ids`` is padded with ``pad_id``, ``targets`` with -100 (so padding
    never adds to the loss, whatever ``pad_id`` is), ``attention_mask`` is 1 on
    real tokens and 0 on padding. Causal attention never looks right, so right
    padding does not change the real positions' outputs.
    """
    if pad_id is None:
        raise ValueError("pad_id is None: the tokenizer needs a pad token (e.g. '<pad>')")
    if not len(batch):
        raise ValueError("collate_sft got an empty batch")
    lengths = [len(x) for x, _ in batch]
    for i, (x, y) in enumerate(batch):
        if len(x) != len(y):
            raise ValueError(f"item {i}: input_ids has {len(x)} tokens but targets has {len(y)}")
    T = max(lengths)
    if pad_to is not None:
        if pad_to < T:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest item ({T} tokens)")
        T = int(pad_to)
    B = len(batch)
    input_ids = np.full((B, T), int(pad_id), dtype=np.int64)  # (B, T)
    targets = np.full((B, T), IGNORE_INDEX, dtype=np.int64)  # (B, T)
    attention_mask = np.zeros((B, T), dtype=np.int64)  # (B, T)
    for b, (x, y) in enumerate(batch):
        n = lengths[b]
        input_ids[b, :n] = x
        targets[b, :n] = y
        attention_mask[b, :n] = 1
    return input_ids, targets, attention_mask

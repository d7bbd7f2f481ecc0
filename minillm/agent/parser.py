"""Happy LLM 7.3 — reading what the model wrote: tool calls, or a final answer.

A tiny model writes broken calls; the agent must survive every one of them. ``parse_reply``
never raises on model text: it returns what it could read and a list of problems, and the
loop (``core.py``) feeds each problem back to the model as an ``error: ...`` observation.

Native format (Qwen / Hermes, the chat template's ``<tool_call>``)::

    I will add them.<tool_call>{"name": "add", "arguments": {"a": 347, "b": 589}}</tool_call>

ReAct format (TinyAgent / the ReAct paper: Thought, Action, Observation)::

    Thought: I need to add two numbers.
    Action: add
    Action Input: {"a": 347, "b": 589}
    ...  (the loop appends "Observation: 936")
    Final Answer: 936

What counts as a problem (each becomes one error, the rest of the reply is still read):
an unclosed ``<tool_call>``, text that is not JSON, JSON that is not an object, a call
without a string ``name``, ``arguments`` that are not an object (a JSON *string* holding an
object is accepted, as OpenAI sends them). Unknown tools and wrong argument types are
checked by the loop against the registered schemas (``Tool.validate``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..tokenizers.chat import TOOL_CALL_END, TOOL_CALL_START

__all__ = ["ToolCall", "ParsedReply", "parse_reply", "parse_react", "REACT_STOP"]

REACT_STOP = "Observation:"


@dataclass
class ToolCall:
    """One call the model asked for: ``name`` and ``arguments`` (a dict), ``raw`` its text."""

    name: str
    arguments: dict
    raw: str = ""


@dataclass
class ParsedReply:
    """``content``: the text outside the calls (a thought, or the final answer);
    ``calls``: the well-formed calls; ``errors``: one message per malformed call."""

    content: str
    calls: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        """True when the model answered without calling (or trying to call) a tool."""
        return not self.calls and not self.errors


def _read_call(body: str) -> tuple:
    """``(ToolCall, None)`` or ``(None, error message)`` for the text inside one ``<tool_call>``."""
    text = body.strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"the tool call is not valid JSON ({e.msg} at column {e.colno}): {text[:80]!r}"
    if not isinstance(obj, dict):
        return None, f"the tool call must be a JSON object with name and arguments, got {type(obj).__name__}"
    if isinstance(obj.get("function"), dict):  # {"function": {"name", "arguments"}}
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None, f"the tool call has no string 'name': {text[:80]!r}"
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            return None, f"the arguments of {name!r} are not valid JSON ({e.msg})"
    if not isinstance(args, dict):
        return None, f"the arguments of {name!r} must be a JSON object, got {type(args).__name__}"
    return ToolCall(name, args, text), None


def parse_reply(text: str) -> ParsedReply:
    """Split a reply in the native format into content, calls and errors (never raises on ``str``)."""
    if not isinstance(text, str):
        raise TypeError(f"parse_reply needs the model's text (str), got {type(text).__name__}")
    content, calls, errors = [], [], []
    pos = 0
    while True:
        i = text.find(TOOL_CALL_START, pos)
        if i == -1:
            rest = text[pos:]
            if TOOL_CALL_END in rest:
                errors.append(f"found {TOOL_CALL_END} without {TOOL_CALL_START}")
                rest = rest.replace(TOOL_CALL_END, "")
            content.append(rest)
            break
        content.append(text[pos:i])
        j = text.find(TOOL_CALL_END, i + len(TOOL_CALL_START))
        nxt = text.find(TOOL_CALL_START, i + len(TOOL_CALL_START))
        if j == -1 or (nxt != -1 and nxt < j):
            stop = len(text) if nxt == -1 else nxt
            errors.append(f"{TOOL_CALL_START} is not closed by {TOOL_CALL_END}: {text[i:stop][:80]!r}")
            pos = stop
            if nxt == -1:
                break
            continue
        call, err = _read_call(text[i + len(TOOL_CALL_START): j])
        if call is not None:
            calls.append(call)
        else:
            errors.append(err)
        pos = j + len(TOOL_CALL_END)
    return ParsedReply("".join(content).strip(), calls, errors)


_ACTION = re.compile(r"^\s*Action\s*:\s*(.*?)\s*$", re.M)
_ACTION_INPUT = re.compile(r"^\s*Action Input\s*:\s*(.*)", re.M | re.S)
_FINAL = re.compile(r"^\s*Final Answer\s*:\s*(.*)", re.M | re.S)


def parse_react(text: str) -> ParsedReply:
    """Read one ReAct step: ``Final Answer: ...`` (content), or ``Action:`` + ``Action Input:``
    (one call). Text after a hallucinated ``Observation:`` is ignored: the observation is the
    tool's to write, not the model's."""
    if not isinstance(text, str):
        raise TypeError(f"parse_react needs the model's text (str), got {type(text).__name__}")
    k = text.find(REACT_STOP)
    if k != -1:
        text = text[:k]
    action = _ACTION.search(text)
    final = _FINAL.search(text)
    if final and (not action or final.start() < action.start()):
        return ParsedReply(final.group(1).strip())
    if not action:
        if text.strip():
            return ParsedReply("", [], ["write 'Action: <tool>' and 'Action Input: {...}', or 'Final Answer: ...'"])
        return ParsedReply("", [], ["the reply is empty"])
    name = action.group(1)
    thought = text[: action.start()].strip()
    inp = _ACTION_INPUT.search(text, action.end())
    raw_args = inp.group(1).strip() if inp else "{}"
    # only the first JSON value counts (a tiny model may keep writing after it)
    try:
        args, _ = json.JSONDecoder().raw_decode(raw_args) if raw_args else ({}, 0)
    except json.JSONDecodeError as e:
        return ParsedReply(thought, [], [f"the Action Input of {name!r} is not valid JSON ({e.msg}): {raw_args[:80]!r}"])
    if not name:
        return ParsedReply(thought, [], ["the Action names no tool"])
    if not isinstance(args, dict):
        return ParsedReply(thought, [], [f"the Action Input of {name!r} must be a JSON object, got {type(args).__name__}"])
    return ParsedReply(thought, [ToolCall(name, args, text[action.start():].strip())])

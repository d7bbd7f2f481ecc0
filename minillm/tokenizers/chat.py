"""Happy LLM 5.2.4 — the chat template.

The book's tokenizer formats a conversation in a ChatML-like way::

    <|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    Hi!<|im_end|>
    <|im_start|>assistant

Every message becomes ``<|im_start|>{role}\\n{content}<|im_end|>\\n``;
``add_generation_prompt=True`` appends ``<|im_start|>assistant\\n`` so the model
continues as the assistant.  The markers are special tokens, so the formatted
text must be encoded with ``allowed_special="all"`` (``Tokenizer.encode_chat``
does that safely: the contents themselves are encoded as ordinary text).

``chat_template_jinja`` writes the same template in the Jinja language that
Hugging Face ``transformers`` stores in ``tokenizer_config.json``, so
``AutoTokenizer.from_pretrained(dir).apply_chat_template`` gives the same text.

Tools (Happy LLM 7.3, the agent)
--------------------------------
The template also carries function calling, the way Qwen2.5 and Hermes do it:

* ``tools=[schema, ...]`` (OpenAI-style ``{"type": "function", "function": {...}}``)
  are listed at the end of the system turn (``render_tools``; a system turn is
  added if there is none). ``tool_style="json"`` writes one JSON schema per line
  inside ``<tools></tools>`` (as Qwen/Hermes); ``"brief"`` writes one line
  ``Tools: add(a, b), mul(a, b)`` that a tiny model with a short context can afford.
* an assistant message with ``tool_calls`` (OpenAI's shape, ``arguments`` a JSON
  string or an object) is rendered as its content followed by one
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` per call;
* a ``tool`` message (the result) is an ordinary turn with the role ``tool``::

    <|im_start|>assistant
    <tool_call>{"name": "add", "arguments": {"a": 347, "b": 589}}</tool_call><|im_end|>
    <|im_start|>tool
    936<|im_end|>

``<tool_call>`` is ordinary text, not a special token: the model writes it like any
other words, and the agent's parser (``minillm/agent/parser.py``) reads it back.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

__all__ = [
    "IM_START", "IM_END", "TOOL_CALL_START", "TOOL_CALL_END", "apply_chat_template", "chat_template_jinja",
    "check_messages", "format_tool_call", "render_tools", "prepare_messages",
]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
TOOL_STYLES = ("json", "brief")
_TOOLS_HEADER = (
    "# Tools\nYou may call these functions. To call one, write "
    '<tool_call>{"name": <function name>, "arguments": <arguments object>}</tool_call>.\n<tools>\n'
)
_TOOLS_FOOTER = "\n</tools>"


def _dumps(obj) -> str:
    """JSON as Hugging Face's ``tojson`` filter writes it (so the Jinja template agrees)."""
    return json.dumps(obj, ensure_ascii=False)


def format_tool_call(name: str, arguments) -> str:
    """One call as the model writes it.

    ``arguments`` is a dict (dumped as JSON) or a JSON string (kept verbatim, as Qwen's
    template does with OpenAI's string arguments; it must hold a JSON object).

    >>> format_tool_call("add", {"a": 2, "b": 3})
    '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a tool call needs a non-empty string name, got {name!r}")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise ValueError(f"tool call {name!r}: arguments {arguments!r:.80} are not valid JSON ({e.msg})") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"tool call {name!r}: arguments must be a JSON object, got {arguments!r:.80}")
        args_text = arguments
    elif isinstance(arguments, Mapping):
        args_text = _dumps(dict(arguments))
    else:
        raise ValueError(f"tool call {name!r}: arguments must be a dict or a JSON string, got {type(arguments).__name__}")
    return f'{TOOL_CALL_START}{{"name": {_dumps(name)}, "arguments": {args_text}}}{TOOL_CALL_END}'


def _call_text(call, where: str) -> str:
    """One OpenAI ``tool_calls`` entry (``{"function": {"name", "arguments"}}``, or the inner dict)."""
    if not isinstance(call, Mapping):
        raise ValueError(f"{where}: a tool call must be a dict, got {type(call).__name__}")
    fn = call.get("function", call)
    if not isinstance(fn, Mapping) or "name" not in fn:
        raise ValueError(f"{where}: a tool call needs a 'name' (or 'function': {{'name': ...}}), got {dict(call)!r:.120}")
    try:
        return format_tool_call(fn["name"], fn.get("arguments", {}))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _tool_function(tool, i: int) -> Mapping:
    if not isinstance(tool, Mapping):
        raise ValueError(f"tools[{i}] must be a dict (an OpenAI-style schema), got {type(tool).__name__}")
    fn = tool.get("function", tool)
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn.get("name"):
        raise ValueError(f"tools[{i}] has no function name: {dict(tool)!r:.120}")
    return fn


def render_tools(tools: Sequence[Mapping], style: str = "json") -> str:
    """The tool listing that ends the system turn.

    >>> render_tools([{"type": "function", "function": {"name": "add", "parameters": {
    ...     "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}], "brief")
    'Tools: add(a, b)'
    """
    if style not in TOOL_STYLES:
        raise ValueError(f"tool_style must be one of {TOOL_STYLES}, got {style!r}")
    if isinstance(tools, (str, bytes, Mapping)) or not hasattr(tools, "__iter__"):
        raise ValueError(f"tools must be a list of schemas, got {type(tools).__name__}")
    tools = list(tools)
    fns = [_tool_function(t, i) for i, t in enumerate(tools)]
    if style == "brief":
        sigs = []
        for fn in fns:
            props = (fn.get("parameters") or {}).get("properties") or {}
            sigs.append(f"{fn['name']}({', '.join(props)})")
        return "Tools: " + ", ".join(sigs)
    return _TOOLS_HEADER + "\n".join(_dumps(dict(t)) for t in tools) + _TOOLS_FOOTER


def prepare_messages(
    messages: Sequence[Mapping], default_system: str | None = None, tools: Sequence[Mapping] | None = None,
    tool_style: str = "json",
) -> list:
    """Plain ``[{"role", "content"}]`` turns, ready for the template.

    Inserts ``default_system`` when the conversation has no system turn, appends the tool
    listing to the system turn (``tools``), and writes each assistant ``tool_calls`` entry
    into its content as ``<tool_call>...</tool_call>``. Raises ``ValueError`` naming the
    first malformed message.
    """
    if isinstance(messages, (str, bytes)) or not hasattr(messages, "__iter__"):
        raise ValueError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, Mapping) and m.get("tool_calls"):
            calls = m["tool_calls"]
            if not isinstance(calls, (list, tuple)):
                raise ValueError(f"message {i}: 'tool_calls' must be a list, got {type(calls).__name__}")
            content = m.get("content") or ""  # OpenAI writes content: null next to tool calls
            if not isinstance(content, str):
                raise ValueError(f"message {i} field 'content' must be a str, got {type(content).__name__}")
            if m.get("role") != "assistant":
                raise ValueError(f"message {i}: only an assistant message can have tool_calls, not {m.get('role')!r}")
            text = content + "".join(_call_text(c, f"message {i} tool call {j}") for j, c in enumerate(calls))
            out.append({"role": "assistant", "content": text})
        else:
            out.append(m)
    check_messages(out)
    out = [{"role": m["role"], "content": m["content"]} for m in out]
    if default_system is not None and (not out or out[0]["role"] != "system"):
        out.insert(0, {"role": "system", "content": default_system})
    if tools:
        listing = render_tools(tools, tool_style)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + listing}
        else:
            out.insert(0, {"role": "system", "content": listing})
    elif tools is not None:
        render_tools(tools, tool_style)  # validates the style even when the list is empty
    return out


def check_messages(messages: Sequence[Mapping[str, str]]) -> None:
    """Raise ``ValueError`` naming the first malformed message."""
    if isinstance(messages, (str, bytes)) or not hasattr(messages, "__iter__"):
        raise ValueError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {type(m).__name__}")
        for field in ("role", "content"):
            if field not in m:
                raise ValueError(f"message {i} has no {field!r} field: {dict(m)!r}")
            if not isinstance(m[field], str):
                raise ValueError(f"message {i} field {field!r} must be a str, got {type(m[field]).__name__}")


def apply_chat_template(
    messages: Sequence[Mapping[str, str]],
    add_generation_prompt: bool = False,
    default_system: str | None = None,
    *,
    tools: Sequence[Mapping] | None = None,
    tool_style: str = "json",
    im_start: str = IM_START,
    im_end: str = IM_END,
) -> str:
    """Format a conversation as ChatML-like text.

    ``default_system`` is inserted as a first system message when the
    conversation does not start with one. ``tools`` (OpenAI-style schemas) are
    listed at the end of the system turn; assistant ``tool_calls`` become
    ``<tool_call>`` text (see the module docstring and ``prepare_messages``).

    >>> apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    >>> apply_chat_template([{"role": "user", "content": "Hi"}], default_system="Be brief.")
    '<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n'
    """
    messages = prepare_messages(messages, default_system, tools, tool_style)
    parts = [f"{im_start}{m['role']}\n{m['content']}{im_end}\n" for m in messages]
    if add_generation_prompt:
        parts.append(f"{im_start}assistant\n")
    return "".join(parts)


def _jinja_string(s: str) -> str:
    """A Jinja string literal for ``s`` (JSON escaping is valid Jinja)."""
    import json

    return json.dumps(s, ensure_ascii=False)


def chat_template_jinja(
    default_system: str | None = None, *, tool_style: str = "json", im_start: str = IM_START, im_end: str = IM_END
) -> str:
    """The same template as :func:`apply_chat_template`, written in Jinja (tools and tool calls
    included: Hugging Face passes ``tools=`` to the template as the variable ``tools``)."""
    if tool_style not in TOOL_STYLES:
        raise ValueError(f"tool_style must be one of {TOOL_STYLES}, got {tool_style!r}")
    start, end = _jinja_string(im_start), _jinja_string(im_end)
    if tool_style == "json":
        listing = (
            "{%- set tool_text = " + _jinja_string(_TOOLS_HEADER) + " + (tools | map('tojson') | join('\\n')) + "
            + _jinja_string(_TOOLS_FOOTER) + " %}"
        )
    else:
        listing = (
            "{%- set ns = namespace(sigs=[]) %}"
            "{%- for t in tools %}"
            "{%- set f = t['function'] if t['function'] is defined else t %}"
            "{%- set props = f['parameters']['properties'] if (f['parameters'] is defined and f['parameters'] "
            "and f['parameters']['properties'] is defined and f['parameters']['properties']) else {} %}"
            "{%- set ns.sigs = ns.sigs + [f['name'] + '(' + (props | list | join(', ')) + ')'] %}"
            "{%- endfor %}"
            "{%- set tool_text = 'Tools: ' + (ns.sigs | join(', ')) %}"
        )
    t = (
        "{%- if messages | length > 0 and messages[0]['role'] == 'system' %}"
        "{%- set system = messages[0]['content'] %}{%- set rest = messages[1:] %}"
        "{%- else %}"
        "{%- set system = " + ("none" if default_system is None else _jinja_string(default_system)) + " %}"
        "{%- set rest = messages %}"
        "{%- endif %}"
        "{%- if tools is defined and tools %}" + listing +
        "{%- set system = tool_text if system is none else system + '\\n\\n' + tool_text %}"
        "{%- endif %}"
        "{%- if system is not none %}{{- " + start + " + 'system\\n' + system + " + end + " + '\\n' }}{%- endif %}"
        "{%- for message in rest %}"
        "{{- " + start + " + message['role'] + '\\n' + (message['content'] if message['content'] is string else '') }}"
        "{%- if message['tool_calls'] is defined and message['tool_calls'] %}"
        "{%- for tc in message['tool_calls'] %}"
        "{%- if tc['function'] is defined %}{%- set tc = tc['function'] %}{%- endif %}"
        "{{- " + _jinja_string(TOOL_CALL_START + '{"name": ') + " + (tc['name'] | tojson) + ', \"arguments\": ' + "
        "(tc['arguments'] if tc['arguments'] is string else (tc['arguments'] | tojson)) + "
        + _jinja_string("}" + TOOL_CALL_END) + " }}"
        "{%- endfor %}"
        "{%- endif %}"
        "{{- " + end + " + '\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- " + start + " + 'assistant\\n' }}{%- endif %}"
    )
    return t

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
"""

from __future__ import annotations

from typing import Mapping, Sequence

__all__ = ["IM_START", "IM_END", "apply_chat_template", "chat_template_jinja", "check_messages"]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


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
    im_start: str = IM_START,
    im_end: str = IM_END,
) -> str:
    """Format a conversation as ChatML-like text.

    ``default_system`` is inserted as a first system message when the
    conversation does not start with one.

    >>> apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    >>> apply_chat_template([{"role": "user", "content": "Hi"}], default_system="Be brief.")
    '<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n'
    """
    check_messages(messages)
    messages = list(messages)
    if default_system is not None and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": default_system})
    parts = [f"{im_start}{m['role']}\n{m['content']}{im_end}\n" for m in messages]
    if add_generation_prompt:
        parts.append(f"{im_start}assistant\n")
    return "".join(parts)


def _jinja_string(s: str) -> str:
    """A Jinja string literal for ``s`` (JSON escaping is valid Jinja)."""
    import json

    return json.dumps(s, ensure_ascii=False)


def chat_template_jinja(
    default_system: str | None = None, *, im_start: str = IM_START, im_end: str = IM_END
) -> str:
    """The same template as :func:`apply_chat_template`, written in Jinja."""
    start, end = _jinja_string(im_start), _jinja_string(im_end)
    t = ""
    if default_system is not None:
        t += (
            "{%- if messages | length == 0 or messages[0]['role'] != 'system' %}"
            "{{- " + start + " + 'system\\n' + " + _jinja_string(default_system) + " + " + end + " + '\\n' }}"
            "{%- endif %}"
        )
    t += (
        "{%- for message in messages %}"
        "{{- " + start + " + message['role'] + '\\n' + message['content'] + " + end + " + '\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- " + start + " + 'assistant\\n' }}{%- endif %}"
    )
    return t

"""Happy LLM 7.3.2 — tools: a Python function becomes a tool the model can call.

The book's ``function_to_json`` (``docs/chapter7/Agent/src/utils.py``) turns a function's
signature into the OpenAI-style JSON schema the model reads::

    {"type": "function",
     "function": {"name": "add",
                  "description": "Add two numbers exactly.",
                  "parameters": {"type": "object",
                                 "properties": {"a": {"type": "number", "description": "the first number"},
                                                "b": {"type": "number", "description": "the second number"}},
                                 "required": ["a", "b"]}}}

Ours differs from the book's in what it refuses, at *registration*, not when the model calls:

* a parameter without a type hint, or with a hint JSON cannot carry (``set``, a class, ...),
  raises ``TypeError`` naming the function and the parameter (the book maps every unknown
  type to "string", so a wrong call surfaces only at run time);
* ``*args`` / ``**kwargs`` raise (the model cannot know what to pass).

Supported hints: ``str``, ``int``, ``float``, ``bool``, ``list``, ``dict``, ``list[T]`` of
those, ``Literal["a", "b"]`` (an ``enum``) and ``Optional[T]`` (= ``T | None``, not required
when it has a default). Descriptions come from the docstring, written either in the book's
reST style (``:param a: the first number``) or in Google style (``Args:`` then ``a: ...``,
what ``transformers.utils.get_json_schema`` reads).

``tool(fn)`` wraps the function as a ``Tool``: its ``schema`` and ``validate(arguments)``,
which checks what the model sent against the schema (unknown or missing arguments, wrong
types) *before* the function runs, and raises ``ToolArgumentError`` saying what is wrong.

The tools shipped (the book's ``tools.py``, offline):

=========================  ==========================================================
``add``, ``mul``           exact sums and products (``Decimal``, so 0.1 + 0.2 = 0.3)
``compare``                the book's wording: ``"347 is greater than 289"``
``count_letter``           the book's ``count_letter_in_string``
``get_current_datetime``   from a clock you can fix (``make_datetime_tool(now=...)``)
``calculate``              arithmetic expressions by a small parser (``+ - * / ( )``),
                           exact with ``Fraction``; never ``eval``
``make_lookup_tool``       the story world's facts (home city, pet, favourite colour)
``make_search_tool``       any retriever with ``search(query, k) -> [hit.text, .score, .source]``
                           (``minillm.rag``), as the reader of happy-llm issue #44 asked
``make_read_file_tool``    reads text files inside one directory, never outside it
=========================  ==========================================================
"""
from __future__ import annotations

import datetime as _dt
import inspect
import os
import re
import types
import typing
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Literal, Optional

__all__ = [
    "Tool", "ToolArgumentError", "tool", "function_to_json", "add", "mul", "compare", "count_letter",
    "get_current_datetime", "make_datetime_tool", "calculate", "make_lookup_tool", "make_search_tool",
    "make_read_file_tool", "BOOK_TOOLS",
]

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


class ToolArgumentError(ValueError):
    """The arguments of a call do not fit the tool's schema (the message says how)."""


# ----------------------------------------------------------------------------- schemas
def _type_schema(hint, where: str) -> dict:
    """JSON schema of one type hint; ``TypeError`` naming ``where`` if JSON cannot carry it."""
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        kinds = {type(a) for a in args}
        if not args or not kinds <= {str, int}:
            raise TypeError(f"{where}: Literal values must be strings or integers, got {args!r}")
        return {"type": "string" if kinds == {str} else "integer" if kinds == {int} else ["string", "integer"],
                "enum": list(args)}
    if origin is list and len(args) == 1:
        return {"type": "array", "items": _type_schema(args[0], where)}
    if origin is dict and len(args) == 2 and args[0] is str:
        return {"type": "object"}
    if origin is typing.Union or origin is getattr(types, "UnionType", None):  # Optional[T], T | None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:  # Optional[T]
            inner = _type_schema(rest[0], where)
            return {**inner, "nullable": True}
    raise TypeError(f"{where}: unsupported type hint {hint!r} (use str, int, float, bool, list, dict, list[T], "
                    f"Literal[...] or Optional[T])")


_REST_PARAM = re.compile(r"^\s*:param\s+(\w+)\s*:\s*(.*)$")
_GOOGLE_ARG = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple:
    """``(description, {param: description})`` from a reST (``:param x:``) or Google (``Args:``) docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    desc, params, section, current = [], {}, "desc", None
    for line in lines:
        stripped = line.strip()
        m = _REST_PARAM.match(line)
        if m:
            section, current = "params", m.group(1)
            params[current] = m.group(2).strip()
            continue
        if stripped.startswith(":"):  # :return:, :raises: ...
            section, current = "other", None
            continue
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            section, current = "google", None
            continue
        if stripped.endswith(":") and stripped[:-1] in ("Returns", "Return", "Raises", "Yields", "Examples", "Example"):
            section, current = "other", None
            continue
        if section == "desc":
            desc.append(line)
        elif section == "google":
            m = _GOOGLE_ARG.match(line)
            if m and line.startswith((" ", "\t")) and (len(line) - len(line.lstrip())) <= 4:
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif current and stripped:
                params[current] = (params[current] + " " + stripped).strip()
        elif section == "params" and current and stripped:
            params[current] = (params[current] + " " + stripped).strip()
    return "\n".join(desc).strip(), params


def function_to_json(fn: Callable) -> dict:
    """The OpenAI-style schema of ``fn`` (the book's name); ``TypeError`` if it cannot be one."""
    if not callable(fn):
        raise TypeError(f"function_to_json needs a function, got {type(fn).__name__}")
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise TypeError(f"a tool needs a function with an identifier name, got {name!r}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise TypeError(f"cannot read the signature of {name}: {e}") from None
    try:
        hints = typing.get_type_hints(fn)
    except Exception as e:  # a forward reference that does not resolve
        raise TypeError(f"cannot resolve the type hints of {name}: {e}") from None
    description, param_docs = _parse_docstring(inspect.getdoc(fn) or "")
    properties, required = {}, []
    for p in sig.parameters.values():
        where = f"tool {name!r}, parameter {p.name!r}"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{where}: *args/**kwargs cannot be described to a model; name each parameter")
        if p.kind is p.POSITIONAL_ONLY:
            raise TypeError(f"{where}: positional-only parameters cannot be passed by name")
        if p.name not in hints:
            raise TypeError(f"{where} has no type hint; annotate it (e.g. `{p.name}: float`)")
        prop = _type_schema(hints[p.name], where)
        if p.name in param_docs and param_docs[p.name]:
            prop["description"] = param_docs[p.name]
        properties[p.name] = prop
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def _check_value(value, schema: dict, where: str):
    """``value`` as the function should receive it (ints accepted for numbers), or ``ToolArgumentError``."""
    if value is None:
        if schema.get("nullable"):
            return None
        raise ToolArgumentError(f"{where} must not be null")
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    ok = False
    for kind in kinds:
        if kind == "number":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok and isinstance(value, float) else value
        elif kind == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "string":
            ok = isinstance(value, str)
        elif kind == "boolean":
            ok = isinstance(value, bool)
        elif kind == "array":
            ok = isinstance(value, list)
            if ok and "items" in schema:
                value = [_check_value(v, schema["items"], f"{where}[{i}]") for i, v in enumerate(value)]
        elif kind == "object":
            ok = isinstance(value, dict)
        if ok:
            break
    if not ok:
        want = " or ".join(kinds)
        raise ToolArgumentError(f"{where} must be {want}, got {type(value).__name__} {value!r:.40}")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolArgumentError(f"{where} must be one of {schema['enum']}, got {value!r:.40}")
    return value


class Tool:
    """A registered function: ``name``, ``schema`` (``function_to_json``), ``validate``, call.

    >>> t = tool(add)
    >>> t.validate({"a": 2, "b": 3})
    {'a': 2, 'b': 3}
    >>> t(**t.validate({"a": 2, "b": 3}))
    '5'
    """

    def __init__(self, fn: Callable, name: Optional[str] = None, description: Optional[str] = None,
                 timeout: Optional[float] = None):
        if isinstance(fn, Tool):
            fn = fn.fn
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"a tool's timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = timeout  # seconds; None: the agent's tool_timeout
        self.fn = fn
        self.schema = function_to_json(fn)
        f = self.schema["function"]
        if name is not None:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
                raise TypeError(f"a tool name must be an identifier, got {name!r}")
            f["name"] = name
        if description is not None:
            f["description"] = description
        self.name = f["name"]
        self.__doc__ = fn.__doc__

    @property
    def parameters(self) -> dict:
        return self.schema["function"]["parameters"]

    def validate(self, arguments: Any) -> dict:
        """The arguments to pass, checked against the schema; ``ToolArgumentError`` naming the problem."""
        if not isinstance(arguments, dict):
            raise ToolArgumentError(f"{self.name}: arguments must be a JSON object, got {type(arguments).__name__}")
        props, required = self.parameters["properties"], self.parameters["required"]
        unknown = sorted(set(arguments) - set(props))
        if unknown:
            raise ToolArgumentError(f"{self.name}: unknown argument(s) {unknown}; it takes {list(props)}")
        missing = [r for r in required if r not in arguments]
        if missing:
            raise ToolArgumentError(f"{self.name}: missing argument(s) {missing}")
        return {k: _check_value(v, props[k], f"{self.name}: argument {k!r}") for k, v in arguments.items()}

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name}({', '.join(self.parameters['properties'])}))"


def tool(fn: Optional[Callable] = None, *, name: Optional[str] = None, description: Optional[str] = None,
         timeout: Optional[float] = None):
    """Register a function as a tool: ``tool(fn)`` or the decorator ``@tool`` / ``@tool(name=..., timeout=...)``
    (``timeout``: this tool's limit in seconds, instead of the agent's ``tool_timeout``)."""
    if fn is None:
        return lambda f: Tool(f, name=name, description=description, timeout=timeout)
    return Tool(fn, name=name, description=description, timeout=timeout)


# ----------------------------------------------------------------------------- exact numbers
def _exact(x) -> Decimal:
    """``Decimal`` of a JSON number as it was written (0.1 -> Decimal('0.1'), not its binary value)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"expected a number, got {type(x).__name__}")
    if isinstance(x, float) and not (x == x and abs(x) != float("inf")):
        raise ValueError(f"expected a finite number, got {x!r}")
    return Decimal(x) if isinstance(x, int) else Decimal(repr(x))


def _fmt_decimal(d: Decimal) -> str:
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _fmt_fraction(q: Fraction) -> str:
    """An integer, a terminating decimal, or ``p/q`` when the decimal would not end."""
    if q.denominator == 1:
        return str(q.numerator)
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:
        return _fmt_decimal(Decimal(q.numerator) / Decimal(q.denominator))
    return f"{q.numerator}/{q.denominator}"


# ----------------------------------------------------------------------------- the book's tools
def add(a: float, b: float) -> str:
    """Add two numbers exactly.

    :param a: the first number
    :param b: the second number
    """
    return _fmt_decimal(_exact(a) + _exact(b))


def mul(a: float, b: float) -> str:
    """Multiply two numbers exactly.

    :param a: the first number
    :param b: the second number
    """
    return _fmt_decimal(_exact(a) * _exact(b))


def compare(a: float, b: float) -> str:
    """Compare two numbers and say which is greater.

    :param a: the first number
    :param b: the second number
    """
    x, y = _exact(a), _exact(b)
    sa, sb = _fmt_decimal(x), _fmt_decimal(y)
    if x > y:
        return f"{sa} is greater than {sb}"
    if x < y:
        return f"{sb} is greater than {sa}"
    return f"{sa} is equal to {sb}"


def count_letter(text: str, letter: str) -> str:
    """Count how many times a letter appears in a text (ignoring case).

    :param text: the text to search
    :param letter: the letter to count
    """
    if len(letter) != 1:
        raise ValueError(f"letter must be one character, got {letter!r}")
    n = text.lower().count(letter.lower())
    return f"The letter '{letter.lower()}' appears {n} times in the string."


def make_datetime_tool(now: Callable[[], _dt.datetime] = _dt.datetime.now) -> Tool:
    """The book's ``get_current_datetime``, reading the time from ``now`` (tests pass a fixed clock)."""

    def get_current_datetime() -> str:
        """Get the current date and time."""
        return now().strftime("%Y-%m-%d %H:%M:%S")

    return Tool(get_current_datetime)


get_current_datetime = make_datetime_tool()


# ----------------------------------------------------------------------------- the calculator
_CALC_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|(.))")
_MAX_EXPR = 200


def _tokenize_expr(expr: str) -> list:
    tokens = []
    for m in _CALC_TOKEN.finditer(expr):
        num, op = m.groups()
        if num is not None:
            tokens.append(("num", Fraction(Decimal(num))))
        elif op is not None and not op.isspace():
            if op not in "+-*/()×÷":
                raise ValueError(f"calculate: unexpected character {op!r} at position {m.start(2)}")
            tokens.append(("op", {"×": "*", "÷": "/"}.get(op, op)))
    return tokens


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly: numbers, + - * /, parentheses.

    :param expression: for example "(347 + 589) * 7" or "1.5 / 4"
    """
    if not isinstance(expression, str):
        raise TypeError(f"calculate: expression must be a string, got {type(expression).__name__}")
    if len(expression) > _MAX_EXPR:
        raise ValueError(f"calculate: expression longer than {_MAX_EXPR} characters")
    tokens = _tokenize_expr(expression)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else ("end", None)

    def take():
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    # expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ; factor := ('+'|'-') factor | num | '(' expr ')'
    def expr(depth):
        value = term(depth)
        while peek() in (("op", "+"), ("op", "-")):
            op = take()[1]
            rhs = term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(depth):
        value = factor(depth)
        while peek() in (("op", "*"), ("op", "/")):
            op = take()[1]
            rhs = factor(depth)
            if op == "/" and rhs == 0:
                raise ValueError("calculate: division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def factor(depth):
        if depth > 50:
            raise ValueError("calculate: too deeply nested")
        kind, val = take()
        if kind == "num":
            return val
        if (kind, val) == ("op", "-"):
            return -factor(depth + 1)
        if (kind, val) == ("op", "+"):
            return factor(depth + 1)
        if (kind, val) == ("op", "("):
            inner = expr(depth + 1)
            if take() != ("op", ")"):
                raise ValueError("calculate: missing ')'")
            return inner
        raise ValueError(f"calculate: expected a number or '(' but found {'the end' if kind == 'end' else repr(val)}")

    if not tokens:
        raise ValueError("calculate: empty expression")
    result = expr(0)
    if pos != len(tokens):
        raise ValueError(f"calculate: unexpected {tokens[pos][1]!r} after a complete expression")
    return _fmt_fraction(result)


# ----------------------------------------------------------------------------- world, search, files
def make_lookup_tool(world=None) -> Tool:
    """``lookup(name, field)``: a fact of the story world (``minillm.data.world``): where a
    character lives, their pet, their favourite colour."""
    from ..data import world as W

    w = world if world is not None else W.get_world(0)
    index = {W.NAMES[c][0].lower(): c for c in range(len(W.NAMES))}
    index.update({W.NAMES[c][1]: c for c in range(len(W.NAMES))})

    def lookup(name: str, field: Literal["home", "pet", "colour"]) -> str:
        """Look up a fact about a person: their home city, their pet or their favourite colour.

        :param name: the person's name, e.g. "Tom"
        :param field: which fact: "home", "pet" or "colour"
        """
        c = index.get(name.strip().lower(), index.get(name.strip()))
        if c is None:
            raise ValueError(f"no person named {name!r}")
        if field == "home":
            return W.CITIES[w.home[c]][0]
        if field == "pet":
            return W.ANIMALS[w.pet[c]][0]
        return W.COLOURS[w.colour[c]][0]

    return Tool(lookup)


def make_search_tool(retriever, k: int = 3, max_chars: int = 600) -> Tool:
    """``search(query)`` over any retriever with ``search(query, k) -> [hit]`` (hits with
    ``.text``, ``.score``, ``.source``; ``minillm.rag``'s contract). The observation lists
    the hits best first as ``[source] text``, cut to ``max_chars`` characters."""
    if not callable(getattr(retriever, "search", None)):
        raise TypeError(f"make_search_tool needs an object with a search(query, k) method, got {type(retriever).__name__}")
    if k < 1:
        raise ValueError(f"make_search_tool: k must be >= 1, got {k}")

    def search(query: str) -> str:
        """Search the document store and return the most relevant passages.

        :param query: what to look for
        """
        hits = list(retriever.search(query, k=k))
        if not hits:
            return "no results"
        text = "\n".join(f"[{h.source}] {h.text}" for h in hits)
        return text if len(text) <= max_chars else text[: max_chars - 3] + "..."

    return Tool(search)


def make_read_file_tool(root, max_bytes: int = 4096) -> Tool:
    """``read_file(path)``: a text file *inside* ``root``. Absolute paths, ``..`` that leaves
    ``root`` and symlinks that point outside it are refused (the real path is checked after
    resolving every link), as are files larger than ``max_bytes``."""
    base = os.path.realpath(os.fspath(root))
    if not os.path.isdir(base):
        raise ValueError(f"make_read_file_tool: {root!r} is not a directory")

    def read_file(path: str) -> str:
        """Read a text file from the documents folder.

        :param path: the file's path relative to the documents folder, e.g. "notes.txt"
        """
        if not path or "\x00" in path:
            raise ValueError(f"invalid path {path!r}")
        if os.path.isabs(path) or re.match(r"^[A-Za-z]:", path):
            raise PermissionError(f"absolute paths are not allowed: {path!r}")
        real = os.path.realpath(os.path.join(base, path))
        if os.path.commonpath([base, real]) != base:
            raise PermissionError(f"{path!r} is outside the documents folder")
        if not os.path.isfile(real):
            raise FileNotFoundError(f"no such file: {path!r}")
        if os.path.getsize(real) > max_bytes:
            raise ValueError(f"{path!r} is larger than {max_bytes} bytes")
        with open(real, encoding="utf-8", errors="replace") as f:
            return f.read()

    return Tool(read_file)


#: The book's tools (``docs/chapter7/Agent/src/tools.py``) without the network ones.
BOOK_TOOLS = (add, mul, compare, count_letter, get_current_datetime)

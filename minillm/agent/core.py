"""Happy LLM 7.3.3 — the agent loop: generate, parse, validate, execute, observe, repeat.

The book's ``Agent`` (``docs/chapter7/Agent/src/core.py``) sends the conversation and the tool
schemas to a remote model, runs the calls it gets back with ``func(**args)`` and asks again.
Ours keeps its names (``get_tool_schema``, ``handle_tool_call``, ``get_completion``) and runs
offline on a minillm model, with what a tiny model needs around it::

    question ──► [ LLM ] ──► reply ──► parse_reply ──► no call? ──► final answer
                   ▲                       │ calls / errors
                   │                       ▼
                   │           validate against the schema (Tool.validate)
                   │                       │ ok                  │ bad
                   │                       ▼                     ▼
                   │           run it (thread, timeout)     "error: ..."
                   │                       │                     │
                   └──── tool turn: observation ◄────────────────┘   (≤ max_steps rounds,
                                                                      ≤ max_total_tokens generated)

Safety: only registered tools run (looked up by name in a dict; never ``eval``/``exec``),
arguments are validated before the call, a tool that raises or runs past ``tool_timeout``
seconds becomes an ``error: ...`` observation, and every problem is fed back to the model
instead of stopping the loop. The loop ends when the model answers without a call, after
``max_steps`` rounds of calls, or when ``max_total_tokens`` generated tokens are spent.

Two formats: ``"tool_call"`` (the chat template's ``<tool_call>{...}</tool_call>``, results in
``tool`` turns) and ``"react"`` (TinyAgent's Thought / Action / Action Input / Observation
text, the whole exchange inside one assistant turn).

``Agent.run_many`` runs many questions in lockstep, so each round generates for all of them
in one batch (what the evaluation uses); ``Agent.run`` is one question.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from .parser import REACT_STOP, ToolCall, parse_react, parse_reply
from .tools import Tool, ToolArgumentError, tool

__all__ = ["Agent", "AgentResult", "Step", "ChatModel", "ScriptedLLM", "SYSTEM_PROMPT", "react_system_prompt"]

SYSTEM_PROMPT = "You are a helpful assistant. Call a tool when it helps."
FORMATS = ("tool_call", "react")


def react_system_prompt(schemas: Sequence[dict], system: str = SYSTEM_PROMPT) -> str:
    """TinyAgent's ReAct instructions with the tools listed, one JSON schema per line."""
    lines = "\n".join(json.dumps(s["function"], ensure_ascii=False) for s in schemas)
    return (
        f"{system}\nYou can use these tools:\n{lines}\n"
        "Use this format:\nThought: what to do\nAction: the tool name\nAction Input: the arguments as JSON\n"
        "Observation: the tool's result\n... (repeat as needed)\nThought: I know the answer\nFinal Answer: the answer"
    )


@dataclass
class Step:
    """One tool call of a run: what was asked, what came back, and ``status``: "ok" (it ran),
    "invalid" (unknown tool or arguments that do not fit the schema: never run) or "failed"
    (it raised or timed out)."""

    name: str
    arguments: dict
    observation: str
    status: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class AgentResult:
    """``answer`` (None if the run stopped before one), ``stopped``: "answer" | "max_steps" |
    "token_budget"; ``steps``: the tool calls; ``errors``: parse/validation/tool errors fed back;
    ``messages``: the whole conversation; ``n_tokens``: tokens generated."""

    answer: Optional[str]
    stopped: str
    steps: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    n_tokens: int = 0
    n_replies: int = 0
    n_call_attempts: int = 0  # replies that tried to call a tool (well-formed or not)
    n_calls: int = 0  # calls written, each <tool_call> (or ReAct Action) counted once
    n_valid_calls: int = 0  # calls that parsed and validated against a registered tool's schema


class _State:
    def __init__(self, messages):
        self.messages = messages
        self.prefix = ""  # ReAct: the assistant turn written so far
        self.result = AgentResult(None, "running", messages=messages)
        self.rounds = 0


class Agent:
    """Tools + an LLM + the loop. ``llm.complete([(messages, prefix), ...], max_new_tokens)``
    returns ``[(text, n_tokens), ...]`` (``ChatModel`` for a minillm model, ``ScriptedLLM`` for tests)."""

    def __init__(self, llm, tools: Sequence = (), system_prompt: Optional[str] = SYSTEM_PROMPT, *,
                 tool_style: str = "json", format: str = "tool_call", max_steps: int = 4, tool_timeout: float = 5.0,
                 max_total_tokens: int = 1024, max_new_tokens: int = 64, verbose: bool = False,
                 on_event: Optional[Callable] = None):
        if format not in FORMATS:
            raise ValueError(f"Agent: format must be one of {FORMATS}, got {format!r}")
        for name, v in (("max_steps", max_steps), ("max_total_tokens", max_total_tokens), ("max_new_tokens", max_new_tokens)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Agent: {name} must be an int >= 1, got {v!r}")
        if not (isinstance(tool_timeout, (int, float)) and tool_timeout > 0):
            raise ValueError(f"Agent: tool_timeout must be > 0 seconds, got {tool_timeout!r}")
        self.llm = llm
        self.tools = [t if isinstance(t, Tool) else tool(t) for t in tools]
        self.tool_map = {}
        for t in self.tools:
            if t.name in self.tool_map:
                raise ValueError(f"Agent: two tools are named {t.name!r}")
            self.tool_map[t.name] = t
        self.system_prompt = system_prompt
        self.tool_style, self.format = tool_style, format
        self.max_steps, self.tool_timeout = max_steps, float(tool_timeout)
        self.max_total_tokens, self.max_new_tokens = max_total_tokens, max_new_tokens
        self.verbose = verbose
        self.on_event = on_event
        self.messages: list = []  # the book's running conversation (get_completion)

    # ------------------------------------------------------------------ the book's API
    def get_tool_schema(self) -> list:
        """The OpenAI-style schema of every tool (the book's name)."""
        return [t.schema for t in self.tools]

    def handle_tool_call(self, call: ToolCall) -> dict:
        """Run one parsed call; return the ``tool`` turn: ``{"role": "tool", "content": ...}``.
        Never raises for the model's mistakes: they come back as ``error: ...`` content."""
        content, _ = self._execute(call)
        return {"role": "tool", "content": content}

    def get_completion(self, prompt: str) -> str:
        """Ask one question in the running conversation ``self.messages``; return the answer
        (the book's name). Tool calls and their results stay in the history."""
        if not self.messages and self.system_prompt is not None:
            self.messages.append({"role": "system", "content": self.system_prompt})
        res = self._run_states([_State(self.messages + [{"role": "user", "content": prompt}])])[0]
        self.messages = res.messages
        return res.answer if res.answer is not None else f"(stopped: {res.stopped})"

    # ------------------------------------------------------------------ runs
    def run(self, question: str, history: Sequence[dict] = ()) -> AgentResult:
        return self.run_many([question], history)[0]

    def run_many(self, questions: Sequence[str], history: Sequence[dict] = ()) -> list:
        """One ``AgentResult`` per question; the rounds of all questions are generated in batches."""
        states = []
        for q in questions:
            if not isinstance(q, str):
                raise TypeError(f"Agent: a question must be a str, got {type(q).__name__}")
            msgs = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
            states.append(_State(msgs + list(history) + [{"role": "user", "content": q}]))
        return self._run_states(states)

    def _prompt_messages(self, st: _State) -> list:
        """What the model reads: for "tool_call" the template lists the tools in the system turn."""
        if self.format == "react":
            msgs = list(st.messages)
            system = react_system_prompt(self.get_tool_schema(), self.system_prompt or "")
            if msgs and msgs[0]["role"] == "system":
                msgs[0] = {"role": "system", "content": system}
            else:
                msgs.insert(0, {"role": "system", "content": system})
            return msgs
        return st.messages

    def _run_states(self, states: list) -> list:
        active = list(states)
        tools = self.get_tool_schema() if self.format == "tool_call" else None
        while active:
            requests = [(self._prompt_messages(st), st.prefix) for st in active]
            budget = [min(self.max_new_tokens, self.max_total_tokens - st.result.n_tokens) for st in active]
            replies = self.llm.complete(requests, max_new_tokens=max(budget), tools=tools, tool_style=self.tool_style)
            still = []
            for st, (text, n_tok), b in zip(active, replies, budget):
                if n_tok > b:  # a batch decodes to the largest budget; a row may only spend its own
                    n_tok = b
                st.result.n_tokens += n_tok
                st.result.n_replies += 1
                if self._advance(st, text):
                    still.append(st)
            active = still
        return [st.result for st in states]

    def _advance(self, st: _State, text: str) -> bool:
        """Take one reply into the state; True if the run continues."""
        res = st.result
        if self.format == "react":
            k = text.find(REACT_STOP)
            text = text[:k] if k != -1 else text
            reply = parse_react(text)
        else:
            reply = parse_reply(text)
        self._event("reply", text)
        if reply.is_final:
            if self.format == "react":
                st.messages.append({"role": "assistant", "content": st.prefix + text})
            else:
                st.messages.append({"role": "assistant", "content": text})
            res.answer, res.stopped = reply.content, "answer"
            return False
        res.n_call_attempts += 1
        observations = []
        res.n_calls += len(reply.errors) + len(reply.calls)
        for err in reply.errors:
            res.errors.append(err)
            observations.append(f"error: {err}")
            self._event("error", err)
        for call in reply.calls:
            content, status = self._execute(call)
            res.steps.append(Step(call.name, call.arguments, content, status))
            res.n_valid_calls += status != "invalid"
            if status != "ok":
                res.errors.append(content[len("error: "):])
            observations.append(content)
            self._event("tool", call, content)
        if self.format == "react":
            st.prefix += text.rstrip() + "\n" + REACT_STOP + " " + " ".join(observations) + "\n"
        else:
            st.messages.append({"role": "assistant", "content": text})
            for obs in observations:
                st.messages.append({"role": "tool", "content": obs})
        st.rounds += 1
        if res.n_tokens >= self.max_total_tokens:
            res.stopped = "token_budget"
        elif st.rounds >= self.max_steps:
            res.stopped = "max_steps"
        else:
            return True
        if self.format == "react":
            st.messages.append({"role": "assistant", "content": st.prefix})
        return False

    def _execute(self, call: ToolCall) -> tuple:
        """``(observation, status)``: "ok", "invalid" (unknown tool, bad arguments: not run) or
        "failed" (raised, timed out); every problem comes back as an ``error: ...`` text."""
        t = self.tool_map.get(call.name)
        if t is None:
            return f"error: unknown tool {call.name!r}; the tools are {', '.join(self.tool_map) or 'none'}", "invalid"
        try:
            args = t.validate(call.arguments)
        except ToolArgumentError as e:
            return f"error: {e}", "invalid"
        box: dict = {}

        def target():
            try:
                box["value"] = t(**args)
            except BaseException as e:  # noqa: BLE001 - the tool's failure is the model's observation
                box["error"] = e

        # A daemon thread so a hung tool cannot keep the process alive; Python cannot kill a
        # thread, so a timed-out tool keeps running in the background, its result ignored.
        th = threading.Thread(target=target, daemon=True, name=f"tool-{t.name}")
        limit = t.timeout if t.timeout is not None else self.tool_timeout  # the tool's own limit wins
        t0 = time.perf_counter()
        th.start()
        th.join(limit)
        if th.is_alive():
            return f"error: {t.name} timed out after {limit:g} s", "failed"
        if "error" in box:
            e = box["error"]
            return f"error: {t.name} failed: {type(e).__name__}: {e}", "failed"
        self._event("timing", t.name, time.perf_counter() - t0)
        return str(box.get("value")), "ok"

    def _event(self, kind, *args):
        if self.on_event is not None:
            self.on_event(kind, *args)
        if self.verbose and kind == "tool":
            call, content = args
            print(f"  -> {call.name}({json.dumps(call.arguments, ensure_ascii=False)}) = {content}", flush=True)


class ChatModel:
    """A minillm causal LM + tokenizer as the agent's LLM: the chat template (with the tools in
    the system turn), greedy or sampled decoding in batches, each reply stopped at ``<|im_end|>``."""

    def __init__(self, model, tokenizer, batch_size: int = 32, temperature: float = 0.0, seed: int = 0,
                 on_text: Optional[Callable] = None):
        if tokenizer.token_to_id("<|im_end|>") is None:
            raise ValueError("ChatModel: the tokenizer has no <|im_end|> token; the agent needs the chat template")
        if temperature < 0:
            raise ValueError(f"ChatModel: temperature must be >= 0, got {temperature}")
        self.model, self.tok = model, tokenizer
        self.batch_size, self.temperature, self.seed = int(batch_size), float(temperature), int(seed)
        self.max_len = int(model.args.max_seq_len)
        self.on_text = on_text  # called with each new piece of a single reply (None at its end): streaming

    def encode(self, messages, prefix: str = "", tools=None, tool_style: str = "json") -> list:
        ids = self.tok.encode_chat(messages, add_generation_prompt=True, tools=tools, tool_style=tool_style)
        return ids + (self.tok.encode(prefix, allowed_special="none") if prefix else [])

    def complete(self, requests, max_new_tokens: int = 64, tools=None, tool_style: str = "json") -> list:
        from ..generation import generate

        max_new = max(1, min(int(max_new_tokens), self.max_len - 1))
        if self.on_text is not None and len(requests) == 1:  # one conversation: stream it
            (messages, prefix), = requests
            pieces = []
            for piece in self.stream(messages, max_new, tools, tool_style, prefix=prefix):
                self.on_text(piece)
                pieces.append(piece)
            self.on_text(None)
            text = "".join(pieces)
            return [(text, len(self.tok.encode(text, allowed_special="none")) + 1)]
        prompts = [self.encode(m, p, tools, tool_style) for m, p in requests]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar lengths: little padding
        out = [None] * len(prompts)
        stop = self.tok.token_to_id("<|im_end|>")
        for b0 in range(0, len(order), self.batch_size):
            idx = order[b0: b0 + self.batch_size]
            # a reply gets the room the context has left, but at least min(max_new, 16) tokens: only then is
            # the start of the conversation (usually the system turn) cut, so the model reads as much as it can
            room = self.max_len - max(len(prompts[i]) for i in idx)
            new_b = max(min(max_new, room), min(max_new, 16))
            keep = self.max_len - new_b
            new = generate(self.model, [prompts[i][-keep:] for i in idx], new_b, temperature=self.temperature,
                           eos_token_id=stop, pad_token_id=self.tok.pad_token_id, seed=self.seed + b0)
            for i, ids in zip(idx, new):
                out[i] = (self.tok.decode(ids, skip_special_tokens=True), len(ids) + (len(ids) < new_b))
        return out

    def stream(self, messages, max_new_tokens: int = 64, tools=None, tool_style: str = "json", prefix: str = ""):
        """Yield the reply's text piece by piece (for the interactive command)."""
        from ..generation import stream_generate

        max_new = max(1, min(int(max_new_tokens), self.max_len - 1))
        ids = self.encode(messages, prefix, tools, tool_style)[-(self.max_len - max_new):]
        stop = self.tok.token_to_id("<|im_end|>")
        done: list = []
        shown = ""
        for t in stream_generate(self.model, ids, max_new, temperature=self.temperature, eos_token_id=stop,
                                 pad_token_id=self.tok.pad_token_id, seed=self.seed):
            if t == stop:
                break
            done.append(t)
            text = self.tok.decode(done, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                yield text[len(shown):]
                shown = text


class ScriptedLLM:
    """An LLM that replays fixed replies (tests, docs): ``replies`` is a list of strings (the
    same script for every conversation) or a function ``(messages, prefix, tools) -> str``."""

    def __init__(self, replies):
        self.replies = replies
        self.calls: list = []

    def complete(self, requests, max_new_tokens: int = 64, tools=None, tool_style: str = "json") -> list:
        out = []
        for messages, prefix in requests:
            self.calls.append((list(messages), prefix, tools))
            if callable(self.replies):
                text = self.replies(messages, prefix, tools)
            else:
                n = sum(m["role"] == "assistant" for m in messages) + prefix.count(REACT_STOP)
                text = self.replies[min(n, len(self.replies) - 1)]
            out.append((text, len(text.split()) + 1))
        return out


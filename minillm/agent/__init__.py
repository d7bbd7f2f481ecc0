"""Happy LLM 7.3 — the agent: tools from Python functions, a tool-call format in the chat
template, a robust parser, a safe loop, and a tiny model trained to call tools, offline.

=====================================  =======================================================
the book (``docs/chapter7/Agent/src``)  here
=====================================  =======================================================
``utils.function_to_json``             ``tools.function_to_json``, ``tools.tool`` / ``Tool``
``tools.py`` (add, mul, compare,        ``tools.add``, ``mul``, ``compare``, ``count_letter``,
count_letter_in_string,                 ``get_current_datetime`` (``make_datetime_tool``: a clock
get_current_datetime, search_wikipedia) you can fix), ``calculate``, ``make_lookup_tool``,
                                        ``make_search_tool`` (RAG), ``make_read_file_tool``
``Agent.get_tool_schema``               ``core.Agent.get_tool_schema``
``Agent.handle_tool_call``              ``core.Agent.handle_tool_call`` (validated, timed out,
                                        errors become observations)
``Agent.get_completion``                ``core.Agent.get_completion`` / ``run`` / ``run_many``
the API's ``tool_calls`` format         ``<tool_call>`` in the chat template
                                        (``minillm/tokenizers/chat.py``), ``parser.parse_reply``;
                                        ReAct: ``parser.parse_react``, ``Agent(format="react")``
a remote 7B model                       ``tasks.make_dialogues`` (SFT traces) + ``core.ChatModel``
=====================================  =======================================================
"""
from .core import SYSTEM_PROMPT, Agent, AgentResult, ChatModel, ScriptedLLM, Step
from .parser import ParsedReply, ToolCall, parse_react, parse_reply
from .tools import (
    BOOK_TOOLS, Tool, ToolArgumentError, add, calculate, compare, count_letter, function_to_json, get_current_datetime,
    make_datetime_tool, make_lookup_tool, make_read_file_tool, make_search_tool, mul, tool,
)

__all__ = [
    "Agent", "AgentResult", "Step", "ChatModel", "ScriptedLLM", "SYSTEM_PROMPT", "ParsedReply", "ToolCall",
    "parse_reply", "parse_react", "Tool", "ToolArgumentError", "tool", "function_to_json", "add", "mul", "compare",
    "count_letter", "get_current_datetime", "make_datetime_tool", "calculate", "make_lookup_tool", "make_search_tool",
    "make_read_file_tool", "BOOK_TOOLS",
]

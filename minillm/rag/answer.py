"""Answering from retrieved passages (Happy LLM 7.2.2, TinyRAG ``LLM.py``: ``RAG_PROMPT_TEMPLATE``).

The book fills a template with the question and the retrieved context and sends it to a chat
API. Ours numbers the passages, so the model can say which one it used, and is answered by a
chat model trained in this project (``examples/rag.py`` trains one):

    prompt  = build_prompt(question, [hit.text for hit in hits])
    reply   = "the market. [2]"                      # what the model was fine-tuned to write
    answer, cited = parse_answer(reply)              # ("the market.", [2])

When no passage holds the answer the model was trained to reply ``NO_ANSWER`` ("I don't know."),
the book's "数据库中没有这个内容，你不知道".
"""
from __future__ import annotations

import re

from ..eval.harness import ModelLM
from ..eval.tasks import GenerationConfig

__all__ = ["RAG_PROMPT_TEMPLATE", "NO_ANSWER", "build_prompt", "format_reply", "parse_answer", "answer_questions"]

RAG_PROMPT_TEMPLATE = "Answer the question from the passages. If they do not contain the answer, say you do not know.\n{context}\nQuestion: {question}"
NO_ANSWER = "I don't know."
_CITE = re.compile(r"\s*\[(\d+)\]\s*$")


def build_prompt(question: str, passages) -> str:
    """The template filled with numbered passages ``[1] ...`` (one per line) and the question.

    >>> print(build_prompt("Where did Tom go?", ["Tom went to the park."]))
    Answer the question from the passages. If they do not contain the answer, say you do not know.
    [1] Tom went to the park.
    Question: Where did Tom go?
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"build_prompt: question must be a non-empty str, got {question!r}")
    passages = list(passages)
    if any(not isinstance(p, str) for p in passages):
        raise TypeError("build_prompt: passages must be strings")
    context = "\n".join(f"[{i}] {' '.join(p.split())}" for i, p in enumerate(passages, start=1))
    return RAG_PROMPT_TEMPLATE.format(context=context, question=question.strip())


def format_reply(answer: str, cited: int | None) -> str:
    """The reply the model learns: ``"the market. [2]"``, or ``NO_ANSWER`` without a citation."""
    return answer if cited is None else f"{answer} [{cited}]"


def parse_answer(reply: str) -> tuple:
    """``(answer, [cited passage numbers])`` of a reply.

    >>> parse_answer("the market. [2]")
    ('the market.', [2])
    >>> parse_answer("I don't know.")
    ("I don't know.", [])
    """
    cited = []
    while True:
        m = _CITE.search(reply)
        if not m:
            break
        cited.insert(0, int(m.group(1)))
        reply = reply[:m.start()]
    return reply.strip(), cited


def answer_questions(model, tokenizer, prompts, max_new_tokens: int = 16, batch_size: int = 32) -> list:
    """Greedy chat replies of ``model`` to user ``prompts`` (through the evaluation harness's
    ``ModelLM``: the chat template SFT trained on, stopped at ``<|im_end|>``)."""
    lm = ModelLM(model, tokenizer, batch_size=batch_size)
    settings = GenerationConfig(max_new_tokens=max_new_tokens, until=())
    return [texts[0].strip() for texts in lm.generate([((("user", p),), settings) for p in prompts])]

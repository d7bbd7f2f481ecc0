"""Task types of the leaderboards (Happy LLM 7.1), as lm-evaluation-harness defines them.

==========================  ===================================================================
``MultipleChoiceTask``      log-likelihood multiple choice (MMLU, C-Eval, HellaSwag, ARC): score
                            log P(choice | context) for every choice; ``acc`` picks the largest
                            sum, ``acc_norm`` the largest sum per UTF-8 byte of the choice
``GenerationTask``          generate until a stop sequence (GSM8K, SQuAD, translation,
                            HumanEval); score the text with named metrics (exact match, token
                            F1, ROUGE-L, final number, BLEU, pass@k)
``PerplexityTask``          rolling log-likelihood of whole documents (WikiText): word- and
                            byte-normalised perplexity, bits per byte
``build_context``           few-shot prompts: k demonstrations drawn with a fixed seed, in a
                            plain template or as chat turns
==========================  ===================================================================

A task holds *items* and knows how to turn one into requests for a language model and the
model's answers into a score; ``harness.evaluate`` runs the requests in batches. A prompt is
either plain text (``str``) or a chat, a tuple of ``(role, content)`` pairs.

Items:  ``MCItem(question, choices, gold)`` and ``GenItem(question, answers)``; ``question``
is the bare question (a chat's user turn); ``plain_template(item)`` wraps it for the plain
template (``"Question: {q}\\nAnswer:"``) and ``target_delimiter`` goes between it and the answer.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

from .bleu import corpus_bleu
from .metrics import exact_match  # the project's answer normalisation (NFKC, casefold, trailing punctuation)
from .text_metrics import number_match, pass_at_k, rouge_l, token_f1

__all__ = [
    "MCItem", "GenItem", "GenerationConfig", "Task", "MultipleChoiceTask", "GenerationTask", "PerplexityTask",
    "build_context", "sample_demos", "register_metric", "METRICS", "CORPUS_METRICS", "count_words",
]

Chat = tuple  # ((role, content), ...)
Prompt = Union[str, Chat]


@dataclass
class MCItem:
    """One multiple-choice question: ``choices[gold]`` is right."""

    question: str
    choices: list
    gold: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.question, str):
            raise TypeError(f"MCItem.question must be a str, got {type(self.question).__name__}")
        self.choices = list(self.choices)
        if len(self.choices) < 2 or not all(isinstance(c, str) and c for c in self.choices):
            raise ValueError(f"MCItem.choices must be >= 2 non-empty strings, got {self.choices!r}")
        if isinstance(self.gold, bool) or not isinstance(self.gold, int) or not 0 <= self.gold < len(self.choices):
            raise ValueError(f"MCItem.gold must be an index in [0, {len(self.choices)}), got {self.gold!r}")

    @property
    def target(self) -> str:
        return self.choices[self.gold]


@dataclass
class GenItem:
    """One generation item: any of ``answers`` is right (the first one is used as a demonstration)."""

    question: str
    answers: list
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.question, str):
            raise TypeError(f"GenItem.question must be a str, got {type(self.question).__name__}")
        self.answers = [self.answers] if isinstance(self.answers, str) else list(self.answers)
        if not self.answers or not all(isinstance(a, str) for a in self.answers):
            raise ValueError(f"GenItem.answers must be one or more strings, got {self.answers!r}")

    @property
    def target(self) -> str:
        return self.answers[0]


@dataclass(frozen=True)
class GenerationConfig:
    """How a generation task samples: ``until`` stop strings (the text is cut at the first),
    ``temperature`` 0 = greedy, ``n`` samples per prompt (for pass@k)."""

    max_new_tokens: int = 32
    until: tuple = ("\n\n",)
    temperature: float = 0.0
    n: int = 1

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"GenerationConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            raise ValueError(f"GenerationConfig.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"GenerationConfig.temperature must be >= 0, got {self.temperature}")
        if self.n > 1 and self.temperature == 0:
            raise ValueError("GenerationConfig: n > 1 samples need temperature > 0 (greedy gives n copies)")
        object.__setattr__(self, "until", tuple(self.until))


# --------------------------------------------------------------------------- metrics by name
# Per-item metrics: fn(prediction, references) -> float in [0, 1], averaged over items.
METRICS: dict = {
    "exact_match": lambda pred, refs: float(any(exact_match(pred, r) for r in refs)),
    "f1": lambda pred, refs: token_f1(pred, refs),
    "rouge_l": lambda pred, refs: max(rouge_l(pred, r)["fmeasure"] for r in refs),
    "number_match": lambda pred, refs: float(number_match(pred, refs[0])),
}
# Corpus metrics: fn(predictions, references) -> float over the whole set (BLEU counts n-grams
# over all sentences before dividing). ``references`` holds one list of strings per prediction.
CORPUS_METRICS: dict = {"bleu": lambda preds, refs: _bleu(preds, refs)}


def _bleu(predictions, references) -> float:
    """Corpus BLEU in 0..100 (sacrebleu's scale, as lm-eval reports it); several references per
    item become sacrebleu's reference streams when every item has the same number."""
    counts = {len(r) for r in references}
    streams = [list(s) for s in zip(*references)] if len(counts) == 1 else [[r[0] for r in references]]
    return corpus_bleu(list(predictions), streams).score


def register_metric(name: str, fn: Callable, corpus: bool = False) -> None:
    """Make a metric usable by name in ``GenerationTask(metrics=...)``.

    ``corpus=False``: ``fn(prediction, references) -> float``, averaged over items;
    ``corpus=True``: ``fn(predictions, references) -> float`` on the whole set (e.g. BLEU).
    """
    if not callable(fn):
        raise TypeError(f"register_metric: {name!r} needs a callable, got {type(fn).__name__}")
    (CORPUS_METRICS if corpus else METRICS)[name] = fn


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them for word perplexity: whitespace-separated
    pieces (so an unspaced Chinese sentence is one "word"; use byte perplexity across languages)."""
    return len(re.split(r"\s+", text))


# --------------------------------------------------------------------------- few-shot prompts
def sample_demos(pool: Sequence, k: int, seed: int, index: int, exclude=None) -> list:
    """``k`` demonstrations for item ``index``, drawn without replacement from ``pool`` (never
    ``exclude``, the item itself) by a generator seeded with ``(seed, index)``: the same item
    always gets the same demonstrations, whatever ``--limit`` cuts."""
    if k < 0:
        raise ValueError(f"num_fewshot must be >= 0, got {k}")
    if k == 0:
        return []
    candidates = [d for d in pool if d is not exclude]
    if k > len(candidates):
        raise ValueError(f"num_fewshot={k} but the task has only {len(candidates)} demonstration items")
    return random.Random(f"minillm-fewshot/{seed}/{index}").sample(candidates, k)


def build_context(task: "Task", item, demos: Sequence, template: str = "plain") -> Prompt:
    """The prompt for ``item`` after ``demos``.

    plain: ``description + (text(d) + delim + target(d) + "\\n\\n")*k + text(item)``;
    chat:  a user/assistant turn per demonstration, then the item as the last user turn.
    """
    if template == "plain":
        parts = [task.description] if task.description else []
        for d in demos:
            parts.append(task.plain_template(d) + task.delimiter(d) + d.target + task.fewshot_delimiter)
        parts.append(task.plain_template(item))
        return "".join(parts)
    if template == "chat":
        turns = []
        if task.description:
            turns.append(("system", task.description.strip()))
        for d in demos:
            turns += [("user", d.question), ("assistant", d.target)]
        turns.append(("user", item.question))
        return tuple(turns)
    raise ValueError(f"template must be 'plain' or 'chat', got {template!r}")


# --------------------------------------------------------------------------- tasks
class Task:
    """Items plus how to ask for them. ``fewshot_pool``: items demonstrations are drawn from
    (default: the items themselves, never the item being asked)."""

    output_type = ""

    def __init__(self, name: str, items: Sequence, fewshot_pool: Sequence | None = None, version: str = "1",
                 plain_template: Callable | None = None, target_delimiter: str | Callable = " ",
                 fewshot_delimiter: str = "\n\n", description: str = ""):
        if not items:
            raise ValueError(f"task {name!r} has no items")
        self.name = name
        self.items = list(items)
        self.fewshot_pool = list(fewshot_pool) if fewshot_pool is not None else self.items
        self.version = version
        self.plain_template = plain_template or (lambda item: item.question)
        self.target_delimiter = target_delimiter
        self.fewshot_delimiter = fewshot_delimiter
        self.description = description

    def delimiter(self, item) -> str:
        """What goes between a plain prompt and its answer: ``target_delimiter``, or its value
        for ``item`` when it is a function (" " before an English answer, "" before a Chinese one)."""
        d = self.target_delimiter
        return d(item) if callable(d) else d

    def contexts(self, num_fewshot: int = 0, limit: int | None = None, template: str = "plain", seed: int = 1234):
        """``[(item, prompt)]`` for the first ``limit`` items."""
        items = self.items if limit is None else self.items[: max(0, int(limit))]
        out = []
        for i, item in enumerate(items):
            demos = sample_demos(self.fewshot_pool, num_fewshot, seed, i, exclude=item)
            out.append((item, build_context(self, item, demos, template)))
        return out

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, {len(self.items)} items)"


class MultipleChoiceTask(Task):
    """Log-likelihood multiple choice: one ``(context, continuation)`` request per choice."""

    output_type = "multiple_choice"
    metric_names = ("acc", "acc_norm")

    def requests(self, item: MCItem, context: Prompt) -> list:
        delim = self.delimiter(item) if isinstance(context, str) else ""  # a chat reply starts fresh
        return [(context, delim + c) for c in item.choices]

    @staticmethod
    def process(item: MCItem, logliks: Sequence[float]) -> dict:
        """acc: argmax of the summed log-likelihoods; acc_norm: argmax of log-likelihood per
        UTF-8 byte of the choice (lm-eval's ``acc_norm``, which favours no choice for its length).
        Ties go to the first choice, as ``np.argmax``."""
        lls = [float(x) for x in logliks]
        if len(lls) != len(item.choices):
            raise ValueError(f"{len(item.choices)} choices but {len(lls)} log-likelihoods")
        norm = [ll / len(c.encode("utf-8")) for ll, c in zip(lls, item.choices)]
        pred = max(range(len(lls)), key=lambda i: (lls[i], -i))
        pred_norm = max(range(len(norm)), key=lambda i: (norm[i], -i))
        return {"acc": float(pred == item.gold), "acc_norm": float(pred_norm == item.gold), "pred": pred}

    @staticmethod
    def aggregate(per_item: Sequence[dict]) -> dict:
        n = len(per_item)
        return {"acc": sum(r["acc"] for r in per_item) / n, "acc_norm": sum(r["acc_norm"] for r in per_item) / n, "n": n}


class GenerationTask(Task):
    """Generate until a stop sequence and score the text with ``metrics`` (names in ``METRICS``
    or ``CORPUS_METRICS``, or ``"pass@K"`` with ``config.n >= K`` samples and ``check``)."""

    output_type = "generate_until"

    def __init__(self, name, items, metrics=("exact_match",), config: GenerationConfig | None = None,
                 check: Callable | None = None, postprocess: Callable | None = None,
                 corpus_preprocess: Callable | None = None, **kw):
        super().__init__(name, items, **kw)
        self.corpus_preprocess = corpus_preprocess  # e.g. segment Chinese into characters for BLEU
        self.metrics = tuple(metrics)
        self.config = config or GenerationConfig()
        self.check = check  # check(prediction, item) -> bool, for pass@k
        self.postprocess = postprocess or (lambda text: text.strip())
        for m in self.metrics:
            if m.startswith("pass@"):
                k = int(m[5:])
                if check is None or not 1 <= k <= self.config.n:
                    raise ValueError(f"task {name!r}: metric {m} needs check= and config.n >= {k}, got n={self.config.n}")

    def missing_metrics(self) -> list:
        """Metric names no one has registered yet (a task using them cannot run)."""
        return [m for m in self.metrics if not m.startswith("pass@") and m not in METRICS and m not in CORPUS_METRICS]

    def requests(self, item: GenItem, context: Prompt) -> list:
        return [(context, self.config)]

    def process(self, item: GenItem, samples: Sequence[str]) -> dict:
        samples = [self.postprocess(s) for s in samples]
        out = {"prediction": samples[0], "references": list(item.answers)}
        if self.check is not None:
            out["n_correct"] = sum(bool(self.check(s, item)) for s in samples)
            out["n_samples"] = len(samples)
        for m in self.metrics:
            if m in METRICS:
                out[m] = float(METRICS[m](samples[0], item.answers))
        return out

    def aggregate(self, per_item: Sequence[dict]) -> dict:
        n = len(per_item)
        res = {}
        for m in self.metrics:
            if m.startswith("pass@"):
                k = int(m[5:])
                res[m] = sum(pass_at_k(r["n_samples"], r["n_correct"], k) for r in per_item) / n
            elif m in METRICS:
                res[m] = sum(r[m] for r in per_item) / n
            elif m in CORPUS_METRICS:
                prep = self.corpus_preprocess or (lambda s: s)
                preds = [prep(r["prediction"]) for r in per_item]
                refs = [[prep(x) for x in r["references"]] for r in per_item]
                res[m] = float(CORPUS_METRICS[m](preds, refs))
            else:  # not registered (yet): say so in the results instead of guessing a number
                res.setdefault("missing_metrics", []).append(m)
        res["n"] = n
        return res


class PerplexityTask(Task):
    """Rolling log-likelihood of whole documents (lm-eval's ``loglikelihood_rolling``); items
    are strings. A document longer than the model's context is scored in sliding windows."""

    output_type = "loglikelihood_rolling"
    metric_names = ("word_perplexity", "byte_perplexity", "bits_per_byte")

    def __init__(self, name, documents: Sequence[str], **kw):
        docs = list(documents)
        bad = [i for i, d in enumerate(docs) if not isinstance(d, str) or not d]
        if bad:
            raise ValueError(f"task {name!r}: documents must be non-empty strings; item {bad[0]} is {docs[bad[0]]!r}")
        super().__init__(name, docs, **kw)

    def contexts(self, num_fewshot: int = 0, limit: int | None = None, template: str = "plain", seed: int = 1234):
        items = self.items if limit is None else self.items[: max(0, int(limit))]
        return [(d, d) for d in items]  # no prompt: the document itself, no demonstrations

    @staticmethod
    def process(doc: str, loglik: float) -> dict:
        return {"loglik": float(loglik), "words": count_words(doc), "bytes": len(doc.encode("utf-8"))}

    @staticmethod
    def aggregate(per_item: Sequence[dict]) -> dict:
        """Corpus-level, as lm-eval's ``weighted_perplexity``: total log-likelihood over total
        words (bytes), not an average of per-document perplexities."""
        ll = sum(r["loglik"] for r in per_item)
        words = sum(r["words"] for r in per_item)
        nbytes = sum(r["bytes"] for r in per_item)
        return {
            "word_perplexity": math.exp(-ll / words), "byte_perplexity": math.exp(-ll / nbytes),
            "bits_per_byte": -ll / nbytes / math.log(2), "n": len(per_item),
        }

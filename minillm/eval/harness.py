"""The evaluation harness (Happy LLM 7.1): run tasks against a language model in batches.

    lm = ModelLM(model, tokenizer, batch_size=32)
    results = evaluate(lm, [suite.get_task("world_mc"), ...], num_fewshot=3)
    print(format_results(results)); save_results(results, "runs/sft/model")

``ModelLM`` is the only code that touches the network. It answers three kinds of request, the
same three lm-evaluation-harness's ``LM`` answers:

=========================  ===================================================================
``loglikelihood``          ``[(prompt, continuation)] -> [log P(continuation | prompt)]``;
                           sequences sorted by length, right-padded into batches (causal
                           attention: a pad after a token never changes that token's logits)
``generate``               ``[(prompt, GenerationConfig)] -> [[text, ...]]``; left-padded
                           batches through ``minillm.generation.generate``, cut at stop strings
``loglikelihood_rolling``  ``[document] -> [log P(document)]`` in windows of the context length
=========================  ===================================================================

Any object with these three methods can be evaluated (the tests use stub scorers).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Sequence

import numpy as np

from .._files import atomic_write
from ..autograd import no_grad
from ..generation import generate as _generate
from ..generation import left_pad
from ..generation.decode import positions
from .tasks import GenerationTask, MultipleChoiceTask, PerplexityTask

__all__ = [
    "ModelLM", "evaluate", "run_task", "rolling_windows", "format_results", "compare_table", "save_results",
    "load_results", "RESULTS_NAME",
]

RESULTS_NAME = "eval_results.json"


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """log_softmax over the last axis in float64 (sums of many log-probs need the precision)."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def rolling_windows(ids: Sequence[int], max_length: int, stride: int | None = None) -> list:
    """Split the prediction of ``ids[1:]`` (``ids[0]`` is the document-start token) into
    ``(context, continuation)`` windows that fit ``max_length`` input tokens.

    Each window scores ``stride`` new tokens (default ``max_length``: disjoint windows, as
    lm-eval) and gives them up to ``max_length - stride`` earlier tokens as context (a sliding
    window, as Hugging Face's perplexity guide). Every token is scored exactly once.

    >>> rolling_windows([0, 1, 2, 3, 4], max_length=2)
    [([0], [1, 2]), ([2], [3, 4])]
    """
    if max_length < 1:
        raise ValueError(f"rolling_windows: max_length must be >= 1, got {max_length}")
    stride = max_length if stride is None else stride
    if not 1 <= stride <= max_length:
        raise ValueError(f"rolling_windows: stride must be in [1, max_length={max_length}], got {stride}")
    n = len(ids) - 1  # targets ids[1..n]
    out, scored = [], 1
    while scored <= n:
        end = min(scored + stride, n + 1)  # this window scores targets ids[scored:end]
        start = max(0, end - 1 - max_length)  # its inputs ids[start:end-1]: at most max_length tokens
        out.append((list(ids[start:scored]), list(ids[scored:end])))  # context never empty: start < scored
        scored = end
    return out


class ModelLM:
    """A minillm causal LM + tokenizer as a scorer.

    Plain prompts start with the tokenizer's EOS: pretraining put EOS between documents, so a
    prompt after EOS reads as the start of a document. Chat prompts are ``encode_chat`` ids
    (the ids SFT trained on) and generation stops at ``<|im_end|>``.
    """

    def __init__(self, model, tokenizer, batch_size: int = 32, seed: int = 0, stride: int | None = None):
        if batch_size < 1:
            raise ValueError(f"ModelLM: batch_size must be >= 1, got {batch_size}")
        if tokenizer.eos_token_id is None:
            raise ValueError("ModelLM: the tokenizer needs an EOS token (the document boundary of pretraining)")
        self.model, self.tok = model, tokenizer
        self.batch_size = batch_size
        self.seed = seed
        self.max_length = int(model.args.max_seq_len)
        self.stride = stride

    # ------------------------------------------------------------------ encoding
    def encode_prompt(self, prompt) -> list:
        if isinstance(prompt, str):
            return [self.tok.eos_token_id] + self.tok.encode_ordinary(prompt)
        if isinstance(prompt, tuple):
            return self.tok.encode_chat([{"role": r, "content": c} for r, c in prompt], add_generation_prompt=True)
        raise TypeError(f"a prompt is a str or a tuple of (role, content) pairs, got {type(prompt).__name__}")

    def _encode_pair(self, context, continuation: str) -> tuple:
        if isinstance(context, str):
            # lm-eval's rule: trailing spaces of the context belong to the continuation, and the
            # continuation's ids are cut from the ids of the whole string, so BPE sees the text
            # exactly as it would in a document
            n_spaces = len(context) - len(context.rstrip(" "))
            if n_spaces:
                continuation = context[-n_spaces:] + continuation
                context = context[:-n_spaces]
            ctx = self.encode_prompt(context)
            whole = self.encode_prompt(context + continuation)
            cont = whole[len(ctx):] if whole[: len(ctx)] == ctx else self.tok.encode_ordinary(continuation)
        else:
            ctx, cont = self.encode_prompt(context), self.tok.encode_ordinary(continuation)
        if not cont:
            raise ValueError(f"loglikelihood: the continuation {continuation!r} encodes to no tokens")
        return ctx, cont

    # ------------------------------------------------------------------ log-likelihoods
    def loglikelihood(self, requests: Sequence[tuple], bar=None) -> list:
        """``log P(continuation | context)`` for each ``(context, continuation)`` request."""
        return self.loglikelihood_tokens([self._encode_pair(c, x) for c, x in requests], bar=bar)

    def loglikelihood_tokens(self, pairs: Sequence[tuple], bar=None) -> list:
        """Sum of log-probs of each ``(context_ids, continuation_ids)`` pair's continuation.

        Pairs that share their context (a multiple-choice question and its choices) run the
        context once: its keys and values are kept in a KV cache (``_score_shared``) and only
        each choice's own tokens go through the model after it. The other pairs run whole
        (``_score_full``): longest sequences first, right padding; sequences longer than the
        context keep their last ``max_length + 1`` tokens. Both give the same numbers up to
        float rounding (tested).
        """
        seqs = []
        for ctx, cont in pairs:
            if len(cont) > self.max_length:
                raise ValueError(f"loglikelihood: a continuation of {len(cont)} tokens exceeds the context {self.max_length}")
            if not ctx:
                raise ValueError("loglikelihood: the context must hold at least one token (the document start)")
            seq = (list(ctx) + list(cont))[-(self.max_length + 1):]
            seqs.append((seq, len(cont)))
        groups: dict = {}
        if hasattr(self.model, "new_kv_cache"):
            for i, (ctx, cont) in enumerate(pairs):
                if len(ctx) + len(cont) - 1 <= self.max_length:  # nothing cut: the context is the same for every choice
                    groups.setdefault(tuple(ctx), []).append(i)
        shared = [(ctx, idx) for ctx, idx in groups.items() if len(idx) > 1]
        in_shared = {i for _, idx in shared for i in idx}
        out = [0.0] * len(seqs)
        with no_grad(), self.model.mode(training=False):
            self._score_full(seqs, [i for i in range(len(seqs)) if i not in in_shared], out, bar)
            questions = [(list(ctx), [list(pairs[i][1]) for i in idx]) for ctx, idx in shared]
            for (_, idx), scores in zip(shared, self._score_shared(questions, bar)):
                for i, ll in zip(idx, scores):
                    out[i] = ll
        return out

    def _score_full(self, seqs: list, indices: list, out: list, bar=None) -> None:
        """Score ``seqs[i] = (ids, n_continuation)`` for i in ``indices`` whole, in batches."""
        order = sorted(indices, key=lambda i: -len(seqs[i][0]))
        for b0 in range(0, len(order), self.batch_size):
            idx = order[b0 : b0 + self.batch_size]
            T = max(len(seqs[i][0]) for i in idx) - 1
            inp = np.zeros((len(idx), T), dtype=np.int64)  # right padding with id 0: never attended by real tokens
            for r, i in enumerate(idx):
                s = seqs[i][0]
                inp[r, : len(s) - 1] = s[:-1]
            logits = self.model(inp).logits.data  # (B, T, vocab)
            for r, i in enumerate(idx):
                s, k = seqs[i]
                L = len(s) - 1  # real input positions 0..L-1 predict s[1..L]
                lp = _log_softmax(logits[r, L - k : L])  # (k, vocab): the positions predicting the continuation
                out[i] = float(lp[np.arange(k), s[L - k + 1 : L + 1]].sum())
            if bar is not None:
                bar.update(len(idx))

    def _score_shared(self, questions: list, bar=None) -> list:
        """``log P(cont | ctx)`` for every ``(ctx, conts)`` question, running each ``ctx`` once.

        Contexts run together, up to ``batch_size`` choices' worth of questions per forward
        call, left-padded (``attention_mask`` 0 on the padding, RoPE/position ids counted from
        each row's first real token: the same numbers as running the context alone). Their
        last position's logits score every choice's first token. Then each choice gets a copy
        of its context's KV-cache row and its tokens minus the last run after it, right-padded:
        position t of a choice predicts its token t + 1. Returns one list of scores per question.
        """
        order = sorted(range(len(questions)), key=lambda q: -len(questions[q][0]))  # longest context first
        out = [None] * len(questions)
        start = 0
        while start < len(order):
            batch, rows = [], 0  # questions whose contexts run together
            width = len(questions[order[start]][0])  # the longest context in this batch
            for q in order[start:]:
                ctx, conts = questions[q]
                if batch and (rows + len(conts) > self.batch_size or width + max(map(len, conts)) - 1 > self.max_length):
                    break  # a full batch, or a choice that would not fit behind the padded context
                batch.append(q)
                rows += len(conts)
            start += len(batch)
            for q, scores in zip(batch, self._score_contexts([questions[q] for q in batch])):
                out[q] = scores
                if bar is not None:
                    bar.update(len(scores))
        return out

    def _score_contexts(self, questions: list) -> list:
        """One batch of ``_score_shared``: the contexts left-padded to the longest."""
        ids, mask = left_pad([ctx for ctx, _ in questions])  # (n, width) each; mask 0 on the left padding
        padded = not mask.all()  # else no mask and default positions: the same numbers, the unmasked path
        cache = self.model.new_kv_cache(len(questions))
        logits = self.model(ids, attention_mask=mask if padded else None, position_ids=positions(mask),
                            kv_cache=cache).logits.data  # (n, width, vocab)
        first = _log_softmax(logits[:, -1])  # (n, vocab): log P(first choice token | context)
        choices = [(r, c) for r, (_, conts) in enumerate(questions) for c in conts]  # (context row, choice)
        scores = []
        for b0 in range(0, len(choices), self.batch_size):
            chunk = choices[b0 : b0 + self.batch_size]
            T = max(len(c) for _, c in chunk) - 1
            if T == 0:  # one-token choices: the context's logits are all that is needed
                scores += [float(first[r, c[0]]) for r, c in chunk]
                continue
            rows = np.array([r for r, _ in chunk])
            copies = []
            for c in cache:  # (n, Hkv, S, D) -> (len(chunk), Hkv, S, D): each choice's context row
                copy = type(c).from_arrays(np.take(c.k, rows, axis=0), np.take(c.v, rows, axis=0))
                copy.length = c.length
                copies.append(copy)
            inp = np.zeros((len(chunk), T), dtype=np.int64)  # right padding: never attended by real tokens
            for i, (_, c) in enumerate(chunk):
                inp[i, : len(c) - 1] = c[:-1]
            chunk_mask = chunk_positions = None
            if padded:
                chunk_mask = np.concatenate([mask[rows], np.ones((len(chunk), T), dtype=np.int64)], axis=1)  # (len(chunk), width + T)
                chunk_positions = mask[rows].sum(axis=1, keepdims=True) + np.arange(T)  # (len(chunk), T): after each context
            logits = self.model(inp, attention_mask=chunk_mask, position_ids=chunk_positions, kv_cache=copies).logits.data
            for i, (r, c) in enumerate(chunk):
                k = len(c)
                lp = _log_softmax(logits[i, : k - 1])  # (k - 1, vocab)
                scores.append(float(first[r, c[0]] + lp[np.arange(k - 1), c[1:]].sum()))
        per_question, i = [], 0
        for _, conts in questions:
            per_question.append(scores[i : i + len(conts)])
            i += len(conts)
        return per_question

    def loglikelihood_rolling(self, documents: Sequence[str], bar=None) -> list:
        """``log P(document)`` of whole documents, every token scored once, in windows of the
        model's context (``stride`` new tokens per window, see ``rolling_windows``)."""
        pairs, owner = [], []
        for d, doc in enumerate(documents):
            ids = [self.tok.eos_token_id] + self.tok.encode_ordinary(doc)
            for ctx, cont in rolling_windows(ids, self.max_length, self.stride):
                pairs.append((ctx, cont))
                owner.append(d)
        lls = self.loglikelihood_tokens(pairs)
        out = [0.0] * len(documents)
        for d, ll in zip(owner, lls):
            out[d] += ll
        if bar is not None:
            bar.update(len(documents))
        return out

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[tuple], bar=None) -> list:
        """``[(prompt, GenerationConfig)] -> [[text] * config.n]``: texts cut at the first stop
        string, special tokens dropped. Greedy when ``temperature == 0``; sampled with the
        harness seed otherwise (reproducible)."""
        out = [None] * len(requests)
        groups: dict = {}
        for i, (prompt, cfg) in enumerate(requests):
            groups.setdefault((cfg, isinstance(prompt, tuple)), []).append(i)
        with no_grad():
            for (cfg, is_chat), idxs in groups.items():
                stop_id = self.tok.token_to_id("<|im_end|>") if is_chat else self.tok.eos_token_id
                max_new = max(1, min(cfg.max_new_tokens, self.max_length - 1))
                budget = self.max_length - max_new
                rows = []  # (request index, prompt ids), each prompt n times
                for i in idxs:
                    ids = self.encode_prompt(requests[i][0])[-budget:]  # keep the end of a too-long prompt
                    rows += [(i, ids)] * cfg.n
                rows.sort(key=lambda r: -len(r[1]))  # similar lengths together: little left padding
                texts: dict = {}
                for b0 in range(0, len(rows), self.batch_size):
                    chunk = rows[b0 : b0 + self.batch_size]
                    new = _generate(self.model, [ids for _, ids in chunk], max_new, temperature=cfg.temperature,
                                    eos_token_id=stop_id, pad_token_id=self.tok.pad_token_id,
                                    seed=self.seed + b0)
                    for (i, _), ids in zip(chunk, new):
                        texts.setdefault(i, []).append(_cut(self.tok.decode(ids, skip_special_tokens=True), cfg.until))
                    if bar is not None:
                        bar.update(len(chunk) / cfg.n)  # in prompts, whatever n
                for i in idxs:
                    out[i] = texts[i]
        return out


def _cut(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = len(text)
    for s in until:
        j = text.find(s)
        if s and j != -1:
            cut = min(cut, j)
    return text[:cut]


# ---------------------------------------------------------------------------- running tasks
def _bar(total, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="req", leave=True, dynamic_ncols=True)


def run_task(lm, task, num_fewshot: int = 0, limit: int | None = None, template: str = "plain", seed: int = 1234,
             progress: bool = False) -> dict:
    """Score one task: build its prompts, ask ``lm`` in batches, aggregate the metrics."""
    ctxs = task.contexts(num_fewshot=num_fewshot, limit=limit, template=template, seed=seed)
    if not ctxs:
        raise ValueError(f"task {task.name!r}: limit={limit} leaves no items")
    if isinstance(task, MultipleChoiceTask):
        reqs, spans = [], []
        for item, ctx in ctxs:
            r = task.requests(item, ctx)
            spans.append((len(reqs), len(reqs) + len(r)))
            reqs += r
        bar = _bar(len(reqs), task.name, progress)
        lls = lm.loglikelihood(reqs, bar=bar)
        per_item = [task.process(item, lls[a:b]) for (item, _), (a, b) in zip(ctxs, spans)]
    elif isinstance(task, GenerationTask):
        missing = task.missing_metrics()
        if len(missing) == len(task.metrics):
            raise KeyError(f"task {task.name!r}: metric(s) {missing} are not registered (see tasks.register_metric)")
        if missing:
            print(f"warning: task {task.name}: metric(s) {', '.join(missing)} not registered, skipped", flush=True)
        bar = _bar(len(ctxs), task.name, progress)
        samples = lm.generate([task.requests(item, ctx)[0] for item, ctx in ctxs], bar=bar)
        per_item = [task.process(item, s) for (item, _), s in zip(ctxs, samples)]
    elif isinstance(task, PerplexityTask):
        bar = _bar(len(ctxs), task.name, progress)
        lls = lm.loglikelihood_rolling([doc for doc, _ in ctxs], bar=bar)
        per_item = [task.process(doc, ll) for (doc, _), ll in zip(ctxs, lls)]
    else:
        raise TypeError(f"unknown task type {type(task).__name__}")
    if bar is not None:
        bar.close()
    res = task.aggregate(per_item)
    res["samples"] = per_item[:5]  # a few items to read next to the numbers
    return res


def evaluate(lm, tasks: Sequence, num_fewshot: int = 0, limit: int | None = None, template: str = "plain",
             seed: int = 1234, progress: bool = True, model_name: str = "") -> dict:
    """Run every task; returns ``{"model", "config", "versions", "results": {task: metrics},
    "seconds": {task: s}}`` (JSON-serialisable)."""
    if template not in ("plain", "chat"):
        raise ValueError(f"template must be 'plain' or 'chat', got {template!r}")
    results, seconds, versions = {}, {}, {}
    for task in tasks:
        t0 = time.perf_counter()
        results[task.name] = run_task(lm, task, num_fewshot, limit, template, seed, progress)
        seconds[task.name] = round(time.perf_counter() - t0, 2)
        versions[task.name] = task.version
    return {
        "model": model_name,
        "config": {"num_fewshot": num_fewshot, "limit": limit, "template": template, "seed": seed},
        "versions": versions, "results": results, "seconds": seconds,
    }


# ---------------------------------------------------------------------------- files and tables
def save_results(results: dict, directory) -> str:
    """Write ``directory/eval_results.json`` (atomically) and return its path."""
    path = os.path.join(os.fspath(directory), RESULTS_NAME)
    atomic_write(path, json.dumps(results, ensure_ascii=False, indent=1))
    return path


def load_results(path) -> dict:
    """Read results written by ``save_results`` (a directory or the JSON file itself)."""
    p = os.path.join(path, RESULTS_NAME) if os.path.isdir(path) else os.fspath(path)
    with open(p, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "results" not in data:
        raise ValueError(f"{p}: not an evaluation results file (no 'results' key)")
    return data


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def format_results(results: dict) -> str:
    """One row per (task, metric): a Markdown table."""
    lines = ["| task | version | metric | value | n |", "|---|---|---|---:|---:|"]
    for name, res in results["results"].items():
        for metric, value in res.items():
            if metric in ("n", "samples", "missing_metrics"):
                continue
            lines.append(f"| {name} | {results['versions'].get(name, '')} | {metric} | {_fmt(value)} | {res['n']} |")
    return "\n".join(lines)


def _primary(task_name: str, res: dict) -> tuple:
    """The metric a leaderboard column shows for a task."""
    for m in ("acc_norm", "exact_match", "number_match", "bleu", "pass@1", "f1", "rouge_l", "word_perplexity"):
        if m in res:
            return m, res[m]
    m = next(k for k in res if k not in ("n", "samples", "missing_metrics"))
    return m, res[m]


def compare_table(named_results: Sequence[tuple]) -> str:
    """A leaderboard: one row per ``(name, results)``, one column per task (its main metric),
    and the average of the columns that are scores in [0, 1] (perplexities are not averaged)."""
    tasks = []
    for _, r in named_results:
        tasks += [t for t in r["results"] if t not in tasks]
    heads = []
    for t in tasks:
        for _, r in named_results:
            if t in r["results"]:
                heads.append((t, _primary(t, r["results"][t])[0]))
                break
    lines = ["| model | " + " | ".join(f"{t} ({m})" for t, m in heads) + " | average |",
             "|---|" + "---:|" * (len(heads) + 1)]
    for name, r in named_results:
        cells, scores = [], []
        for t, m in heads:
            v = r["results"].get(t, {}).get(m)
            cells.append("–" if v is None else _fmt(v))
            if v is not None and "perplexity" not in m and not math.isnan(v):
                scores.append(v if m != "bleu" or v <= 1 else v / 100)
        avg = _fmt(sum(scores) / len(scores)) if scores else "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg} |")
    return "\n".join(lines)

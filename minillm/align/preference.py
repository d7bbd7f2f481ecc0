"""Preference data (Happy LLM 4.2.3 "RLHF", 6.4): a prompt, a chosen reply and a rejected reply.

The third training stage learns from *comparisons*: for one prompt, this answer is better than
that one. The book's 6.4 and TRL store them as JSONL lines in one shape, which we use too::

    {"prompt": "What is 7 + 5?", "chosen": "12", "rejected": "13"}

``prompt`` is the user's message (a string, or a list of ``{"role", "content"}`` messages
for a multi-turn prompt); ``chosen`` and ``rejected`` are the assistant's replies (strings, or
a one-message list ``[{"role": "assistant", "content": ...}]``, TRL's conversational shape).

Where the pairs come from
-------------------------
Our built-in world knows the right answer to every question it asks, so it can label replies
without a human:

=========================  ===================================================================
``offline_pairs``          chosen = the world's answer; rejected = a *made-up* mistake of the
                           kinds a small SFT model makes: the wrong entity from the story
                           ("the park." for "the market."), an arithmetic slip (13 for 12), a
                           reply that never stops ("12 12 12 12 ..."), the wrong language
                           ("市场。" to an English question). Cheap, no model needed.
``on_policy_pairs``        sample the SFT model itself several times per prompt and label each
                           reply with the world's answer (``exact_match``); a wrong sample is
                           the rejected reply, a right sample (or, if none, the world's answer)
                           the chosen one. These are the mistakes *this* model makes, so
                           training on them fixes what is actually broken (InstructGPT and
                           on-policy DPO work this way). ``examples/align.py`` uses these.
=========================  ===================================================================

Files: ``write_preference_jsonl`` / ``read_preference_jsonl`` (a user's own file in the same
shape; each bad line is reported with its file and line number). ``tokenize_pair`` turns a
pair into the token ids the reward model and DPO train on, with the SFT chat template.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from .._files import atomic_path
from ..data.sft import IGNORE_INDEX, _ChatPieces, tokenize_conversation
from ..data.world import ANIMALS, CITIES, COLOURS, NAMES, OBJECTS, PLACES, article, lexicon
from ..eval.metrics import exact_match, normalize_answer

__all__ = [
    "PreferencePair", "read_preference_jsonl", "write_preference_jsonl", "offline_pairs", "on_policy_pairs",
    "label_reply", "make_mistake", "tokenize_pair", "tokenize_reply", "PreferenceDataset", "collate_pairs", "MISTAKES",
]

# The failure modes a pair's rejected reply shows (``PreferencePair.kind``).
MISTAKES = ("wrong_entity", "arithmetic", "no_stop", "wrong_language", "other")


@dataclass
class PreferencePair:
    """One comparison. ``prompt`` is a list of messages (a plain string prompt becomes one user
    message); ``chosen`` / ``rejected`` are reply strings. ``meta`` is free-form (skill,
    mistake kind, reference answer); it is written to JSONL and ignored by training."""

    prompt: list
    chosen: str
    rejected: str
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        prompt = self.prompt[0]["content"] if len(self.prompt) == 1 and self.prompt[0]["role"] == "user" else self.prompt
        out = {"prompt": prompt, "chosen": self.chosen, "rejected": self.rejected}
        if self.meta:
            out["meta"] = self.meta
        return out


# ----------------------------------------------------------------------------- files
def _reply_text(value, key: str) -> str:
    if isinstance(value, str):
        return value
    if (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
            and value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str)):
        return value[0]["content"]
    raise ValueError(f"'{key}' must be a string or [{{'role': 'assistant', 'content': str}}], got {value!r:.80}")


def _prompt_messages(value) -> list:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("'prompt' is an empty string")
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value:
        for i, m in enumerate(value):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
                raise ValueError(f"'prompt' message {i} must be {{'role': system|user|assistant, 'content': str}}, got {m!r:.80}")
        if value[-1]["role"] != "user":
            raise ValueError(f"'prompt' must end with a user message (the reply answers it), got role {value[-1]['role']!r}")
        return [dict(role=m["role"], content=m["content"]) for m in value]
    raise ValueError(f"'prompt' must be a string or a non-empty list of messages, got {value!r:.80}")


def pair_from_json(obj) -> PreferencePair:
    """A ``PreferencePair`` from one decoded JSON line (``ValueError`` naming the bad field)."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object with 'prompt', 'chosen', 'rejected', got {type(obj).__name__}")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {missing}; a preference line is {{'prompt', 'chosen', 'rejected'}}")
    prompt = _prompt_messages(obj["prompt"])
    chosen, rejected = _reply_text(obj["chosen"], "chosen"), _reply_text(obj["rejected"], "rejected")
    if chosen == rejected:
        raise ValueError(f"'chosen' and 'rejected' are the same reply {chosen!r:.60}: nothing to prefer")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError(f"'meta' must be an object, got {type(meta).__name__}")
    return PreferencePair(prompt, chosen, rejected, meta)


def read_preference_jsonl(path, limit: Optional[int] = None) -> list:
    """Every pair of a ``{"prompt", "chosen", "rejected"}`` JSONL file.

    Blank lines are skipped; any other bad line raises ``ValueError("file:line: what is wrong")``
    before anything is trained, so a broken file never costs a run.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"preference file not found: {path}")
    pairs = []
    with open(path, encoding="utf-8-sig") as f:  # -sig: a BOM from an editor is not part of line 1
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            try:
                pairs.append(pair_from_json(obj))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            if limit is not None and len(pairs) >= limit:
                break
    if not pairs:
        raise ValueError(f"{path}: no preference pairs in the file")
    return pairs


def write_preference_jsonl(path, pairs: Iterable[PreferencePair]) -> str:
    """Write pairs as JSONL (one ``{"prompt", "chosen", "rejected", "meta"}`` per line), atomically."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for p in pairs:
            f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
    return path


# ----------------------------------------------------------------------------- the world's answers
# Each answer of the world's QA skill is one entity in a fixed format. ``_FORMATS[qtype]`` lists
# every possible answer of that question type, in each language, so a right answer can be
# turned into a wrong one of the same shape ("the market." -> "the park.", "一只猫。" -> "一条鱼。")
# or the same one in the other language ("the market." -> "市场。").
def _an(word: str) -> str:
    return f"{article(word)} {word}"


_FORMATS = {
    "where": {"en": [f"the {p[0]}." for p in PLACES], "zh": [f"{p[1]}。" for p in PLACES]},
    "who_met": {"en": [f"{n[0]}." for n in NAMES], "zh": [f"{n[1]}。" for n in NAMES]},
    "what_got": {"en": [f"{_an(o[0])}." for o in OBJECTS], "zh": [f"一{o[2]}{o[1]}。" for o in OBJECTS]},
    "colour": {"en": [f"{c[0]}." for c in COLOURS], "zh": [f"{c[1]}。" for c in COLOURS]},
    "animal": {"en": [f"{_an(a[0])}." for a in ANIMALS], "zh": [f"一{a[2]}{a[1]}。" for a in ANIMALS]},
    "home": {"en": [f"{c[0]}." for c in CITIES], "zh": [f"{c[1]}。" for c in CITIES]},
}
_FORMATS["give_to"] = _FORMATS["who_met"]
_FORMATS["pet"] = _FORMATS["animal"]
_FORMATS["fav"] = _FORMATS["colour"]
_SURFACE = {  # the words that name entity i inside a story, to prefer distractors the story mentions
    "where": {"en": [p[0] for p in PLACES], "zh": [p[1] for p in PLACES]},
    "who_met": {"en": [n[0] for n in NAMES], "zh": [n[1] for n in NAMES]},
    "what_got": {"en": [o[0] for o in OBJECTS], "zh": [o[1] for o in OBJECTS]},
    "colour": {"en": [c[0] for c in COLOURS], "zh": [c[1] for c in COLOURS]},
    "animal": {"en": [a[0] for a in ANIMALS], "zh": [a[1] for a in ANIMALS]},
    "home": {"en": [c[0] for c in CITIES], "zh": [c[1] for c in CITIES]},
}
for _alias, _base in (("give_to", "who_met"), ("pet", "animal"), ("fav", "colour")):
    _SURFACE[_alias] = _SURFACE[_base]
_LEXICON = lexicon()


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _wrong_entity(qtype, lang, answer, prompt_text, rng) -> Optional[str]:
    forms = _FORMATS.get(qtype, {}).get(lang)
    if not forms or answer not in forms:
        return None
    right = forms.index(answer)
    words = _SURFACE[qtype][lang]
    story = prompt_text.rsplit("\n", 1)[0]  # the story, without the question
    in_story = [i for i, w in enumerate(words) if i != right and w in story]  # the distractors a model confuses
    pool = in_story or [i for i in range(len(forms)) if i != right]
    return forms[rng.choice(pool)]


def _other_language(qtype, lang, answer, skill, prompt_text) -> Optional[str]:
    if skill == "translate":  # answering in the language of the question: echo the word back
        word = prompt_text.split(":", 1)[1].strip() if ":" in prompt_text else prompt_text.split(" ", 1)[0]
        return word if word != answer else None
    forms = _FORMATS.get(qtype, {})
    if lang not in forms or answer not in forms[lang]:
        return None
    other = "zh" if lang == "en" else "en"
    return forms[other][forms[lang].index(answer)]


def _arithmetic_slip(answer: str, qtype: str, prompt_text: str, rng) -> Optional[str]:
    try:
        value = int(answer)
    except ValueError:
        return None
    slips = [value + d for d in (-2, -1, 1, 2, 10, -10) if value + d >= 0]
    nums = [int(t) for t in prompt_text.replace("?", " ").replace("？", " ").split() if t.isdigit()]
    if qtype == "sub" and len(nums) == 2:
        slips.append(nums[0] + nums[1])  # added instead of subtracting
    if qtype == "add" and len(nums) == 2 and nums[0] >= nums[1]:
        slips.append(nums[0] - nums[1])
    slips = [s for s in slips if s != value]
    return str(rng.choice(slips)) if slips else None


def _no_stop(answer: str, rng) -> str:
    # what a model that never learned to stop does: repeat itself until the token budget runs out
    sep = "" if _has_cjk(answer) else " "
    return sep.join([answer] * rng.randint(4, 7))


def _wrong_translation(answer: str, rng) -> Optional[str]:
    zh = _has_cjk(answer)
    pool = [p[1] if zh else p[0] for p in _LEXICON]
    pool = [w for w in pool if w != answer]
    return rng.choice(pool) if pool else None


def make_mistake(record: dict, kind: str, rng: random.Random) -> Optional[str]:
    """A wrong reply of ``kind`` (one of ``MISTAKES`` but "other") to an SFT record of the world
    (``{"messages": [..., user, assistant], "meta": {"skill", "lang", "qtype"}}``), or None when
    that kind of mistake does not apply to the question (an arithmetic slip in a translation)."""
    user, answer = record["messages"][-2]["content"], record["messages"][-1]["content"]
    meta = record.get("meta") or {}
    skill, lang, qtype = meta.get("skill"), meta.get("lang"), meta.get("qtype")
    if kind == "wrong_entity":
        if skill == "translate":
            return _wrong_translation(answer, rng)
        return _wrong_entity(qtype, lang, answer, user, rng)
    if kind == "arithmetic":
        return _arithmetic_slip(answer, qtype, user, rng) if skill == "math" else None
    if kind == "no_stop":
        return _no_stop(answer, rng)
    if kind == "wrong_language":
        return _other_language(qtype, lang, answer, skill, user) if skill != "math" else None
    raise ValueError(f"make_mistake: kind must be one of {MISTAKES[:-1]}, got {kind!r}")


def offline_pairs(records: Sequence[dict], seed: int = 0,
                  kinds: Sequence[str] = ("wrong_entity", "arithmetic", "no_stop", "wrong_language")) -> list:
    """One pair per record: chosen = the world's answer, rejected = a made-up mistake.

    The mistake kind is drawn from ``kinds`` among those that apply to the record's skill
    (math gets slips, QA wrong entities, ...). ``meta`` keeps the skill, the kind and the
    reference answer.
    """
    bad = [k for k in kinds if k not in MISTAKES[:-1]]
    if bad or not kinds:
        raise ValueError(f"offline_pairs: kinds must be some of {MISTAKES[:-1]}, got {list(kinds)}")
    rng = random.Random(f"minillm-align/offline/{seed}")
    out = []
    for i, rec in enumerate(records):
        _check_record(rec, i, "offline_pairs")
        options = list(kinds)
        rng.shuffle(options)
        for kind in options:
            wrong = make_mistake(rec, kind, rng)
            answer = rec["messages"][-1]["content"]
            if wrong is not None and not exact_match(wrong, answer):
                meta = {**(rec.get("meta") or {}), "kind": kind, "reference": answer, "source": "offline"}
                out.append(PreferencePair(_prompt_of(rec), answer, wrong, meta))
                break
    return out


def _check_record(rec, i, who):
    msgs = rec.get("messages") if isinstance(rec, dict) else None
    if not msgs or len(msgs) < 2 or msgs[-1].get("role") != "assistant" or msgs[-2].get("role") != "user":
        raise ValueError(f"{who}: record {i} must be {{'messages': [..., user, assistant]}} (an SFT record), got {rec!r:.80}")


def _prompt_of(rec) -> list:
    return [dict(role=m["role"], content=m["content"]) for m in rec["messages"][:-1]]


# ----------------------------------------------------------------------------- on-policy pairs
def label_reply(reply: str, reference: str, prompt_text: str = "", stopped: bool = True) -> str:
    """``"correct"`` or the kind of mistake a sampled ``reply`` makes, judged by the world's
    ``reference`` answer: ``no_stop`` (the model never wrote ``<|im_end|>``: ``stopped=False``,
    or the right answer and then more), ``wrong_language``, ``arithmetic`` (a number, but the
    wrong one), ``wrong_entity`` (a wrong answer in the right language), or ``other`` (empty)."""
    if stopped and exact_match(reply, reference):
        return "correct"
    r, ref = normalize_answer(reply), normalize_answer(reference)
    if not stopped or (r.startswith(ref) and len(r) > len(ref)):
        return "no_stop"
    if not r:
        return "other"
    if _has_cjk(reply) != _has_cjk(reference):
        return "wrong_language"
    if ref.lstrip("-").isdigit():
        return "arithmetic" if r.lstrip("-").isdigit() else "other"
    return "wrong_entity"


def on_policy_pairs(records: Sequence[dict], replies: Sequence[Sequence[str]], seed: int = 0,
                    max_pairs_per_prompt: int = 1, greedy: Optional[Sequence] = None,
                    sampled_chosen_only: bool = False) -> tuple:
    """Pairs from the model's own samples: ``replies[i]`` are the samples for ``records[i]``
    (strings, or ``minillm.align.rollout.Reply`` objects, which also say whether it stopped).

    Each sample is labelled by ``label_reply`` against the record's reference answer. For a
    prompt with a wrong sample, the rejected reply is a wrong sample and the chosen one a
    right sample if the model produced one, else the reference answer. Prompts the model
    always answers right give no pair (there is nothing to fix). ``sampled_chosen_only=True``
    drops the reference fallback: a prompt gives pairs only when the model wrote both a right and
    a wrong reply, so both sides are the policy's own samples (online / iterative DPO).

    ``greedy[i]`` (optional) is the model's greedy reply to ``records[i]``: the answer it gives
    when asked, which is what exact match scores. A wrong greedy reply is then always the
    (first) rejected one, so the pairs target the mistakes the model really makes rather than
    unlucky samples (``meta["greedy_rejected"]``). Returns ``(pairs, stats)``, stats counting
    the labelled replies (samples and greedy ones) by label.
    """
    if len(records) != len(replies):
        raise ValueError(f"on_policy_pairs: {len(records)} records but {len(replies)} reply lists")
    if greedy is not None and len(greedy) != len(records):
        raise ValueError(f"on_policy_pairs: {len(records)} records but {len(greedy)} greedy replies")
    rng = random.Random(f"minillm-align/on-policy/{seed}")
    stats = {k: 0 for k in ("correct",) + MISTAKES}
    pairs = []
    for i, (rec, samples) in enumerate(zip(records, replies)):
        _check_record(rec, i, "on_policy_pairs")
        ref, question = rec["messages"][-1]["content"], rec["messages"][-2]["content"]
        first = [] if greedy is None else [greedy[i]]
        stopped = [getattr(s, "stopped", True) for s in first + list(samples)]
        texts = [getattr(s, "text", s) for s in first + list(samples)]
        labels = [label_reply(s, ref, question, st) for s, st in zip(texts, stopped)]
        for lab in labels:
            stats[lab] += 1
        right = list(dict.fromkeys(s for s, lab in zip(texts, labels) if lab == "correct"))
        wrong = list(dict.fromkeys((s, lab) for s, lab in zip(texts, labels) if lab != "correct"))
        if sampled_chosen_only and not right:
            continue
        greedy_wrong = bool(first) and labels[0] != "correct"
        head, rest = (wrong[:1], wrong[1:]) if greedy_wrong else ([], wrong)
        rng.shuffle(rest)
        for j, (s, lab) in enumerate((head + rest)[:max_pairs_per_prompt]):
            chosen = rng.choice(right) if right else ref
            meta = {**(rec.get("meta") or {}), "kind": lab, "reference": ref, "source": "on_policy",
                    "chosen_sampled": bool(right)}
            if first:
                meta["greedy_rejected"] = greedy_wrong and j == 0
            pairs.append(PreferencePair(_prompt_of(rec), chosen, s, meta))
    return pairs, stats


# ----------------------------------------------------------------------------- tokens
@dataclass
class TokenizedPair:
    """Token ids of one pair. ``*_ids`` are whole sequences (prompt + reply + ``<|im_end|>``);
    ``*_targets`` are the shifted labels of ``ids[:-1]``: the reply's tokens, -100 on the prompt
    (exactly what SFT trains on). ``prompt_len`` is the number of prompt tokens."""

    chosen_ids: np.ndarray
    rejected_ids: np.ndarray
    prompt_len: int


def _conversation_ids(prompt: list, reply: str, tokenizer, pieces) -> tuple:
    """Ids of ``prompt + reply`` in the SFT template, ending with the reply's ``<|im_end|>``, and
    the number of prompt ids."""
    ids, labels = tokenize_conversation(prompt + [{"role": "assistant", "content": reply}], tokenizer, _pieces=pieces)
    while labels and labels[-1] == IGNORE_INDEX:  # the "\n" after the last <|im_end|>: not part of the reply
        ids, labels = ids[:-1], labels[:-1]
    return ids, next(i for i, t in enumerate(labels) if t != IGNORE_INDEX)


def _fit(ids: list, n_prompt: int, reply_len: int, max_length: int) -> tuple:
    room = max_length - min(reply_len, max_length // 2)  # a reply may take at most half the context
    cut = max(0, n_prompt - room)  # drop the prompt's beginning, keep its question
    return np.asarray(ids[cut:][:max_length], dtype=np.int64), n_prompt - cut


def tokenize_reply(prompt: list, reply: str, tokenizer, max_length: int, _pieces=None) -> tuple:
    """``(ids, prompt_len)`` of one prompt + reply (see ``tokenize_pair``)."""
    pieces = _pieces if _pieces is not None else _ChatPieces(tokenizer)
    ids, n_prompt = _conversation_ids(prompt, reply, tokenizer, pieces)
    return _fit(ids, n_prompt, len(ids) - n_prompt, int(max_length))


def tokenize_pair(pair: PreferencePair, tokenizer, max_length: int, _pieces=None) -> TokenizedPair:
    """The ids of ``prompt + chosen`` and ``prompt + rejected`` in the SFT chat template
    (``minillm.data.sft.tokenize_conversation``, the very ids SFT trained on), each ending with
    the reply's ``<|im_end|>`` (so the last token is where a reward model reads its score). A
    too-long pair keeps the *end* of the prompt (its question) and the beginning of each reply;
    both sides keep the same prompt tokens."""
    pieces = _pieces if _pieces is not None else _ChatPieces(tokenizer)
    (c, n_prompt), (r, _) = (_conversation_ids(pair.prompt, x, tokenizer, pieces) for x in (pair.chosen, pair.rejected))
    longest = max(len(c), len(r)) - n_prompt
    (c, n), (r, _) = _fit(c, n_prompt, longest, int(max_length)), _fit(r, n_prompt, longest, int(max_length))
    return TokenizedPair(c, r, n)


class PreferenceDataset:
    """Tokenized pairs for the reward model and DPO; ``ds[i]`` is
    ``(chosen_ids, rejected_ids, prompt_len, ref_chosen_logp, ref_rejected_logp)`` (the two
    reference log-probs are NaN until ``minillm.align.dpo.precompute_reference_logps`` fills
    ``ref_chosen_logps`` / ``ref_rejected_logps``; the reward model ignores them)."""

    def __init__(self, pairs: Sequence[PreferencePair], tokenizer, max_length: int):
        if int(max_length) < 4:
            raise ValueError(f"PreferenceDataset: max_length must be >= 4, got {max_length}")
        pieces = _ChatPieces(tokenizer)
        self.pairs = list(pairs)
        if not self.pairs:
            raise ValueError("PreferenceDataset: no pairs")
        self.items = [tokenize_pair(p, tokenizer, int(max_length), pieces) for p in self.pairs]
        self.ref_chosen_logps = np.full(len(self.items), np.nan)
        self.ref_rejected_logps = np.full(len(self.items), np.nan)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        t = self.items[i]
        return t.chosen_ids, t.rejected_ids, t.prompt_len, self.ref_chosen_logps[i], self.ref_rejected_logps[i]


def collate_pairs(batch, pad_id: int) -> dict:
    """B pairs -> one batch of 2B right-padded rows, the B chosen rows first (TRL's
    "concatenated forward": one model call scores both sides).

    Returns ``{"input_ids": (2B, T), "attention_mask": (2B, T), "prompt_lens": (2B,),
    "ref_logps": (2B,)}`` (int64, int64, int64, float64).
    """
    if pad_id is None:
        raise ValueError("collate_pairs: pad_id is None (the tokenizer needs a pad token)")
    if not len(batch):
        raise ValueError("collate_pairs: empty batch")
    seqs = [b[0] for b in batch] + [b[1] for b in batch]
    T = max(len(s) for s in seqs)
    ids = np.full((len(seqs), T), int(pad_id), dtype=np.int64)  # (2B, T)
    mask = np.zeros((len(seqs), T), dtype=np.int64)  # (2B, T)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
        mask[r, : len(s)] = 1
    prompt_lens = np.array([b[2] for b in batch] * 2, dtype=np.int64)  # (2B,)
    ref = np.array([b[3] for b in batch] + [b[4] for b in batch], dtype=np.float64)  # (2B,)
    return {"input_ids": ids, "attention_mask": mask, "prompt_lens": prompt_lens, "ref_logps": ref}

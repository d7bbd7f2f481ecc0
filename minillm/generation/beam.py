"""Beam search (Happy LLM, Extra chapter "generation-method"; 5.1 ``generate_super``).

Greedy decoding keeps the single most likely next token; beam search keeps the
``num_beams`` most likely *sequences* ("beams") and extends each by every token, then
keeps the best ``num_beams`` of those ``num_beams x V`` candidates, scored by their summed
log-probabilities. A candidate that ends with ``eos_token_id`` (or reaches
``max_new_tokens``) becomes a finished *hypothesis* with the score

    sum of its log-probabilities / (generated length, EOS included) ** length_penalty

(``length_penalty`` > 0 favours longer sequences, < 0 shorter ones), and the best
``num_return_sequences`` hypotheses are returned, best first.

The rules follow Hugging Face transformers (``GenerationMixin._beam_search``), so the same
model gives the same tokens (an optional test checks it):

* each step keeps the top ``2 * num_beams`` candidates, so that ``num_beams`` unfinished
  ones remain even if every beam's best next token is EOS; only candidates ranked in the
  top ``num_beams`` may become hypotheses;
* at the start only beam 0 is live (the others get score -1e9), so the beams differ;
* ``early_stopping=True``: a prompt is done once it has ``num_beams`` hypotheses.
  ``False``: done when, in addition, the best running beam scored at the current length
  cannot beat the worst hypothesis (a heuristic). ``"never"``: done only when no running
  beam can beat the worst hypothesis even at the longest length (``max_new_tokens``) when
  ``length_penalty > 0``: the exact rule, which, with enough beams, finds the best sequence.

Every model works through the runners of ``decode.py``: one KV-cache row per beam, and
``runner.reorder(index)`` moves each surviving beam's cache row to its new place.
"""
from __future__ import annotations

import numpy as np

from .config import GenerationConfig
from .decode import initial_seen
from .sampling import apply_repetition_penalty, check_logits

__all__ = ["beam_search"]

NEG = -1.0e9  # HF's "impossible" score for dead beams and masked candidates


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))  # (N, V)


class _Hypotheses:
    """The best ``num_beams`` finished sequences of one prompt, as (score, tokens)."""

    def __init__(self, num_beams: int):
        self.num_beams = num_beams
        self.items: list[tuple[float, list[int]]] = []

    def add(self, score: float, tokens: list[int]) -> None:
        self.items.append((score, tokens))
        self.items.sort(key=lambda item: -item[0])  # stable: earlier hypotheses win ties
        del self.items[self.num_beams :]

    @property
    def full(self) -> bool:
        return len(self.items) >= self.num_beams

    @property
    def worst(self) -> float:
        return self.items[-1][0]


def beam_search(runner, config: GenerationConfig, max_new_tokens: int, context_ids, context_mask) -> list:
    """Beam search over ``runner``, whose rows are each prompt repeated ``num_beams`` times
    (rows b·nb ... b·nb + nb - 1 are prompt b's beams). Returns, for each prompt, its best
    ``num_return_sequences`` token lists (EOS dropped), best first: a list of B·n lists."""
    nb = config.num_beams
    B = runner.batch_size // nb
    eos, lp = config.eos_token_id, config.length_penalty
    if max_new_tokens == 0:
        return [[] for _ in range(B * config.num_return_sequences)]
    keep = 2 * nb  # HF: max(2, 1 + number of EOS ids) * num_beams candidates per step
    hyps = [_Hypotheses(nb) for _ in range(B)]
    improvable = np.ones(B, dtype=bool)  # the early-stop heuristic has not closed this prompt yet
    running = np.zeros((B, nb))  # (B, nb) summed log-probs of the running beams
    running[:, 1:] = NEG  # all beams start equal: only beam 0 may expand at first
    tokens = [[] for _ in range(B * nb)]  # generated tokens of each running beam
    logits = runner.prefill()  # (B·nb, V)
    V = logits.shape[-1]
    seen = initial_seen(context_ids, context_mask, V) if config.repetition_penalty != 1.0 else None
    for step in range(max_new_tokens):
        length = step + 1  # generated length of every candidate made in this step
        last = step == max_new_tokens - 1
        check_logits(logits, step)
        logp = _log_softmax(logits)  # (B·nb, V)
        if seen is not None:  # HF applies its logits processors to the log-probs
            logp = apply_repetition_penalty(logp, seen, config.repetition_penalty)
        scores = (logp.reshape(B, nb, V) + running[:, :, None]).reshape(B, nb * V)  # (B, nb·V) candidates
        top = np.argsort(-scores, axis=1, kind="stable")[:, :keep]  # (B, 2nb) best candidates, best first
        top_scores = np.take_along_axis(scores, top, axis=1)  # (B, 2nb)
        parent, token = top // V, top % V  # which beam each candidate extends, and with which token
        finished = np.full(top.shape, last) if eos is None else (token == eos) | last  # (B, 2nb)

        # Finished candidates ranked in the top nb become hypotheses (if the prompt is still open).
        for b in range(B):
            if not improvable[b] or (config.early_stopping is True and hyps[b].full):
                continue
            for r in np.nonzero(finished[b, :nb])[0]:
                seq = tokens[b * nb + parent[b, r]] + [int(token[b, r])]
                hyps[b].add(float(top_scores[b, r]) / length**lp, seq)

        # The best nb unfinished candidates are the next running beams.
        alive = np.where(finished, top_scores + NEG, top_scores)  # (B, 2nb)
        pick = np.argsort(-alive, axis=1, kind="stable")[:, :nb]  # (B, nb)
        running = np.take_along_axis(alive, pick, axis=1)  # (B, nb), best first
        src = np.take_along_axis(parent, pick, axis=1) + np.arange(B)[:, None] * nb  # (B, nb) flat parent rows
        nxt = np.take_along_axis(token, pick, axis=1).reshape(-1)  # (B·nb,)
        src = src.reshape(-1)
        tokens = [tokens[i] + [int(t)] for i, t in zip(src, nxt)]

        # Early-stop heuristic (HF's): can the best running beam still beat the worst hypothesis?
        best_len = max_new_tokens if config.early_stopping == "never" and lp > 0 else length
        for b in range(B):
            if improvable[b] and hyps[b].full and running[b, 0] / best_len**lp <= hyps[b].worst:
                improvable[b] = False
        all_full = all(h.full for h in hyps)
        if last or not improvable.any() or (config.early_stopping is True and all_full):
            break
        runner.reorder(src)
        if seen is not None:
            seen = seen[src]
            seen[np.arange(B * nb), nxt] = True
        logits = runner.step(nxt)

    out = []
    for h in hyps:
        for _score, seq in h.items[: config.num_return_sequences]:
            out.append(seq[:-1] if eos is not None and seq and seq[-1] == eos else seq)
    return out

"""Sample generations during training (Happy LLM 5.3 / 5.4: "see what the model writes").

Reading a few continuations at every evaluation tells you more than a loss number:
first random characters, then words, then sentences that follow the corpus.

    sample_fn = make_sample_fn(tokenizer, ["Once upon a time", "小明"], max_new_tokens=40)
    trainer = Trainer(model, None, train_loader, val_loader, config, sample_fn=sample_fn)
"""
from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["make_sample_fn"]


def make_sample_fn(tokenizer, prompts: Sequence[str], max_new_tokens: int = 40, temperature: float = 0.8,
                   top_k: Optional[int] = None, top_p: Optional[float] = None, seed: int = 0):
    """A ``sample_fn(model, step) -> list[str]`` that continues each prompt with ``minillm.generation.generate``.

    The fixed ``seed`` makes the samples of different steps comparable: only the model
    changed between them. Each sample is ``prompt + continuation`` (decoded).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("make_sample_fn needs at least one prompt")
    encoded = [tokenizer.encode(p) for p in prompts]
    for p, ids in zip(prompts, encoded):
        if not ids:
            raise ValueError(f"prompt {p!r} encodes to no tokens")

    def sample_fn(model, step):
        from ..generation import generate  # imported here: generation depends on the model layer

        eos = getattr(tokenizer, "eos_token_id", None)
        out = []
        for p, ids in zip(prompts, encoded):
            new = generate(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           eos_token_id=eos, seed=seed)
            out.append(p + tokenizer.decode(new))
        return out

    return sample_fn

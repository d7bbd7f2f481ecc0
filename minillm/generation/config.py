"""``GenerationConfig``: every knob of ``generate`` in one validated dataclass (Hugging Face's
names, so a ``transformers`` user reads it without a dictionary).

    cfg = GenerationConfig(max_new_tokens=50, temperature=0)              # greedy
    cfg = GenerationConfig(max_new_tokens=50, temperature=0.8, top_p=0.9, seed=1)
    cfg = GenerationConfig(max_new_tokens=20, num_beams=4, length_penalty=1.0)
    generate(model, ids, cfg)  ==  generate(model, ids, max_new_tokens=50, temperature=0)

Greedy or sampling: ``do_sample=None`` (the default) follows the book's rule, temperature 0
means greedy (argmax) and temperature > 0 means sampling, except that beam search
(``num_beams > 1``) is deterministic unless ``do_sample=True`` is asked for (and then
refused: beam sampling is not implemented). ``do_sample=False`` is always greedy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = ["GenerationConfig"]


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


@dataclass
class GenerationConfig:
    """How ``generate`` / ``stream_generate`` pick new tokens. Invalid values raise ``ValueError``
    naming the field.

    Length and stopping:
      max_new_tokens: new tokens to produce at most (HF's default 20).
      eos_token_id: a row stops when it produces this token (not included in its output).
      pad_token_id: id used to left-pad a batch of prompts (default: ``eos_token_id``, else 0).
    Choosing a token (greedy / sampling):
      do_sample: None = sample when ``temperature > 0`` and ``num_beams == 1``; True / False force it.
      temperature: logits / temperature before sampling; 0 means greedy.
      top_k: keep only the k most likely tokens; top_p: keep the smallest set of most likely
        tokens whose probability reaches p (nucleus sampling).
      repetition_penalty: > 1 makes tokens already in the context less likely (CTRL's rule).
      seed: seeds the sampler (default: the library's generator, ``mi.manual_seed``).
    Beam search (``num_beams > 1``; see ``minillm.generation.beam``):
      num_beams, length_penalty (finished scores are sum log-probs / length ** length_penalty),
      early_stopping (True, False or "never": HF's meanings), num_return_sequences (how many
        of the best hypotheses per prompt; also the number of samples per prompt when sampling).
    Encoder-decoder models:
      decoder_start_token_id: the first target token the decoder sees (required for them).
    Speculative (assisted) decoding:
      num_assistant_tokens: tokens the draft model proposes per round.
    Implementation switches (the tokens do not depend on them):
      use_cache: decode with the KV cache (False: the book's loop, the whole prefix every step).
      fused_decode: let LLaMA2 run each cached step as one fused kernel call after checking, on
        the prompt, that the kernel computes what the model's modules compute (``fused.py``).
    """

    max_new_tokens: int = 20
    do_sample: bool | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    decoder_start_token_id: int | None = None
    seed: int | None = None
    num_assistant_tokens: int = 5
    use_cache: bool = True
    fused_decode: bool = True

    def __post_init__(self):
        def bad(field, why):
            return ValueError(f"GenerationConfig.{field} {why}, got {getattr(self, field)!r}")

        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 0:
            raise bad("max_new_tokens", "must be a non-negative int")
        if self.do_sample is not None and not isinstance(self.do_sample, bool):
            raise bad("do_sample", "must be True, False or None")
        if not _is_number(self.temperature) or not 0 <= self.temperature < np.inf:
            raise bad("temperature", "must be a finite number >= 0 (0 = greedy)")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            raise bad("top_k", "must be a positive int or None")
        if self.top_p is not None and (not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0):
            raise bad("top_p", "must be in (0, 1] or None")
        if not _is_number(self.repetition_penalty) or not 0 < self.repetition_penalty < np.inf:
            raise bad("repetition_penalty", "must be a finite number > 0 (1 = no penalty)")
        for name in ("eos_token_id", "pad_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise bad(name, "must be a non-negative int or None")
        for name in ("num_beams", "num_return_sequences", "num_assistant_tokens"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "must be a positive int")
        if not _is_number(self.length_penalty) or not np.isfinite(self.length_penalty):
            raise bad("length_penalty", "must be a finite number")
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise bad("early_stopping", 'must be True, False or "never"')
        if self.seed is not None and not _is_int(self.seed):
            raise bad("seed", "must be an int or None")
        for name in ("use_cache", "fused_decode"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be a bool")
        if self.do_sample is True and self.temperature == 0:
            raise bad("temperature", "must be > 0 when do_sample=True")
        if self.num_beams > 1:
            if self.do_sample is True:
                raise bad("do_sample", "must not be True with num_beams > 1 (beam sampling is not implemented)")
            if self.num_return_sequences > self.num_beams:
                raise ValueError(
                    f"GenerationConfig.num_return_sequences ({self.num_return_sequences}) must be <= num_beams ({self.num_beams})"
                )
        elif self.num_return_sequences > 1 and not self.sampling:
            raise ValueError(
                f"GenerationConfig.num_return_sequences ({self.num_return_sequences}) > 1 needs sampling or beam search: "
                "greedy decoding would return the same sequence each time"
            )

    @property
    def sampling(self) -> bool:
        """True when tokens are drawn at random (see the module docstring for the rule)."""
        if self.do_sample is not None:
            return self.do_sample
        return self.temperature > 0 and self.num_beams == 1

    def update(self, **kwargs) -> "GenerationConfig":
        """A validated copy with some fields changed; unknown names raise ``TypeError`` naming them."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"GenerationConfig has no field(s) {unknown}; known fields: {sorted(known)}")
        return dataclasses.replace(self, **kwargs)

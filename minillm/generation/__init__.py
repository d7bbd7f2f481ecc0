"""Text generation (Happy LLM 5.1.6 ``Transformer.generate``, 5.3/5.4 inference, the Extra
chapter "generation-method"): greedy, sampling, beam search and speculative decoding, for
decoder-only models (LLaMA2) and encoder-decoder models (the ch.2 Transformer).

    from minillm.generation import GenerationConfig, generate, stream_generate
    new_ids = generate(model, prompt_ids, max_new_tokens=50, temperature=0)        # greedy
    new_ids = generate(model, prompt_ids, 50, temperature=0.8, top_p=0.9, seed=1)   # nucleus sampling
    best = generate(model, prompt_ids, 20, num_beams=4, num_return_sequences=2)     # beam search
    new_ids = generate(model, prompt_ids, 50, temperature=0, assistant_model=draft)  # speculative
    tgt_ids = generate(translator, src_ids, 30, decoder_start_token_id=bos, num_beams=4)   # encoder-decoder
    for tok in stream_generate(model, prompt_ids, 200, eos_token_id=eos): print(decode([tok]), end="")

Where each piece lives:

    config.py       GenerationConfig: every option, validated (Hugging Face's names)
    sampling.py     greedy / temperature / top-k / top-p / repetition penalty; padding prompts
    decode.py       the token-by-token loop and the runners that feed each kind of model
                    (KV cache, cropping past max_seq_len, the encoder run once)
    fused.py        FusedDecoder: LLaMA2's cached step as one kernel call, used only after it
                    is checked equal to the model's modules on the prompt
    beam.py         beam search (HF's rules: length_penalty, early_stopping, num_return_sequences)
    speculative.py  assisted decoding: a draft model proposes, the target verifies in one pass
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .._checks import check_token_ids
from ..autograd import no_grad
from .beam import beam_search
from .config import GenerationConfig
from .decode import CausalLMRunner, Seq2SeqRunner, is_encoder_decoder, model_config, sample_loop
from .fused import FusedDecoder, fused_decode_unsupported
from .sampling import left_pad, next_token_probs, prepare_inputs, right_pad, sample_next_token
from .speculative import AssistedStats, assisted_decode

__all__ = [
    "generate", "stream_generate", "GenerationConfig", "sample_next_token", "next_token_probs", "left_pad", "right_pad",
    "FusedDecoder", "fused_decode_unsupported", "AssistedStats",
]


def _config(generation_config, kwargs) -> GenerationConfig:
    """The config a call asks for: a GenerationConfig (or the book's positional max_new_tokens)
    with keyword arguments overriding its fields."""
    if isinstance(generation_config, GenerationConfig):
        base = generation_config
    elif generation_config is None:
        base = GenerationConfig()
    elif isinstance(generation_config, (int, np.integer)) and not isinstance(generation_config, bool):
        if "max_new_tokens" in kwargs:
            raise TypeError("generate: max_new_tokens given twice (positionally and as a keyword)")
        base, kwargs = GenerationConfig(), {**kwargs, "max_new_tokens": generation_config}
    else:
        raise TypeError(
            f"generate: the third argument must be a GenerationConfig or max_new_tokens (an int), got {type(generation_config).__name__}"
        )
    return base.update(**kwargs) if kwargs else base


class _Job:
    """What one ``generate`` call decodes: the runner over the (expanded) rows and the context."""

    def __init__(self, model, input_ids, attention_mask, config: GenerationConfig):
        self.config = config
        eos = config.eos_token_id
        pad = config.pad_token_id if config.pad_token_id is not None else (eos if eos is not None else 0)
        self.enc_dec = is_encoder_decoder(model)
        ids, mask, self.single = prepare_inputs(input_ids, attention_mask, pad, "right" if self.enc_dec else "left")
        if not self.enc_dec:
            vocab = model_config(model).vocab_size
            check_token_ids(np.where(mask, ids, 0), vocab, "generate")  # padding positions need no check
            ids = np.where(mask, ids, np.clip(ids, 0, vocab - 1))  # padding ids only need to be valid
        self.batch = ids.shape[0]
        # one row per beam (beam search) or per returned sample (sampling), prompt-major
        rows = config.num_beams if config.num_beams > 1 else config.num_return_sequences
        ids, mask = np.repeat(ids, rows, axis=0), np.repeat(mask, rows, axis=0)
        self.max_new_tokens = config.max_new_tokens
        if self.enc_dec:
            self.runner = Seq2SeqRunner(model, ids, mask, config)
            self.max_new_tokens = min(config.max_new_tokens, self.runner.max_len - 1)  # the start token takes one place
            self.context_ids, self.context_mask = self.runner.tgt, np.ones(self.runner.tgt.shape, dtype=bool)
        else:
            self.runner = CausalLMRunner(model, ids, mask, config)
            self.context_ids, self.context_mask = ids, mask
        self.rng = np.random.default_rng(config.seed) if config.seed is not None else None

    def steps(self):
        return sample_loop(self.runner, self.config, self.max_new_tokens, self.context_ids, self.context_mask, self.rng)

    def result(self, out: list):
        return out[0] if self.single and len(out) == 1 else out


def generate(model, input_ids, generation_config=None, *, attention_mask=None, assistant_model=None, **kwargs):
    """Continue ``input_ids`` by up to ``max_new_tokens`` tokens; return only the new ones.

    model: a decoder-only model (``minillm.models.llama.Transformer``, or a ``PeftModel``
    around one) or an encoder-decoder model (``model.is_encoder_decoder``; then
    ``input_ids`` is the source, padded on the right, ``decoder_start_token_id`` is required,
    and the result is the target without its start token, at most ``max_seq_len - 1`` tokens).
    input_ids: one prompt (list of ints / 1-D array) -> returns ``list[int]``; a batch (list of
    lists of any lengths, or a 2-D array with an optional ``attention_mask``; padding on the
    left for decoder-only models) -> returns ``list[list[int]]``. With
    ``num_return_sequences = n > 1`` each prompt gives n lists, prompt-major.
    generation_config: a ``GenerationConfig``, or (the book's order) ``max_new_tokens``;
    any ``GenerationConfig`` field may be given as a keyword and overrides it:
    ``temperature=0`` (greedy), ``top_k``, ``top_p``, ``repetition_penalty``,
    ``eos_token_id`` (a row stops there; EOS is not returned), ``seed``, ``num_beams``, ...
    assistant_model: a smaller decoder-only model with the same vocabulary that proposes
    ``num_assistant_tokens`` tokens per round (speculative decoding; one prompt).
    """
    config = _config(generation_config, kwargs)
    with model.mode(training=False), no_grad():
        if assistant_model is not None:
            return _assisted(model, assistant_model, input_ids, attention_mask, config, stream=False)
        job = _Job(model, input_ids, attention_mask, config)
        if config.num_beams > 1:
            return job.result(beam_search(job.runner, config, job.max_new_tokens, job.context_ids, job.context_mask))
        eos = config.eos_token_id
        out = [[] for _ in range(job.runner.batch_size)]
        for nxt, active in job.steps():
            for b in np.nonzero(active)[0]:
                if eos is None or nxt[b] != eos:
                    out[b].append(int(nxt[b]))
        return job.result(out)


def stream_generate(model, input_ids, generation_config=None, *, assistant_model=None, **kwargs) -> Iterator[int]:
    """Like ``generate`` for one prompt, but yields each new token id as soon as it exists
    (for a chat loop that prints while the model writes). Stops before EOS. Greedy or
    sampling (beam search only knows its answer at the end)."""
    config = _config(generation_config, kwargs)
    if config.num_beams > 1 or config.num_return_sequences > 1:
        raise ValueError("stream_generate: streams one sequence; use generate() for num_beams > 1 or num_return_sequences > 1")
    with model.mode(training=False):
        if assistant_model is not None:
            steps = _assisted(model, assistant_model, input_ids, None, config, stream=True)
            yield from _with_no_grad(steps)
            return
        with no_grad():
            job = _Job(model, input_ids, None, config)
        if job.batch != 1:
            raise ValueError(f"stream_generate: expected one prompt, got a batch of {job.batch}; use generate() for batches")
        for nxt, _active in _with_no_grad(job.steps()):
            tok = int(nxt[0])
            if config.eos_token_id is not None and tok == config.eos_token_id:
                return
            yield tok


def _assisted(model, assistant_model, input_ids, attention_mask, config, stream: bool):
    if is_encoder_decoder(model) or is_encoder_decoder(assistant_model):
        raise ValueError("generate: assisted decoding is implemented for decoder-only models")
    if config.num_beams > 1 or config.num_return_sequences > 1:
        raise ValueError("generate: assisted decoding returns one sequence: num_beams and num_return_sequences must be 1")
    if not config.use_cache:
        raise ValueError("generate: assisted decoding needs the KV cache (use_cache=True)")
    pad = config.pad_token_id if config.pad_token_id is not None else (config.eos_token_id or 0)
    ids, mask, single = prepare_inputs(input_ids, attention_mask, pad)
    if ids.shape[0] != 1:
        raise ValueError(f"generate: assisted decoding takes one prompt, got a batch of {ids.shape[0]}")
    prompt = ids[0][mask[0]]
    vocab = model_config(model).vocab_size
    check_token_ids(prompt, vocab, "generate")
    rng = np.random.default_rng(config.seed) if config.seed is not None else None
    if rng is None:
        from .. import random as _random

        rng = _random.default_generator()
    eos = config.eos_token_id

    def tokens():
        with assistant_model.mode(training=False):
            for tok in assisted_decode(model, assistant_model, prompt, config, rng):
                if eos is not None and tok == eos:
                    return
                yield tok

    if stream:
        return tokens()
    out = list(tokens())
    return out if single else [out]


def _with_no_grad(gen):
    """Run each step of a generator inside no_grad (a ``with`` around ``yield`` would leak
    no-grad mode into the caller's code between tokens)."""
    while True:
        with no_grad():
            try:
                item = next(gen)
            except StopIteration:
                return
        yield item

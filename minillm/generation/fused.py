"""Fast inference for the LLaMA2 model: each decode step is one fused kernel call.

Generation (Happy LLM 5.1.6) adds one token at a time. Through ``Transformer.forward``
every such step runs ~100 autograd ops on (B, 1, dim) arrays, and at batch 1 their Python
overhead costs more than their arithmetic. ``FusedDecoder`` keeps the readable model for
the prompt ("prefill": many tokens at once, where the ops are efficient) and runs every
later step as ONE call of ``kernels.llama_decode_step``: embedding, then per layer
RMSNorm -> wq/wk/wv -> RoPE -> KV-cache write -> attention -> wo -> residual ->
RMSNorm -> SwiGLU MLP -> residual, then the final norm and the output head.

    dec = FusedDecoder(model, batch_size=1)
    logits, reason = dec.prefill(ids, verify=True)   # (B, V) logits of the last prompt position
    logits = dec.step(next_ids)                      # (B, V) after one more token per row

**The kernel never replaces code a learner edited.** The kernel is a second copy of the
model's arithmetic, so ``generate`` uses it only when it provably computes what the modules
compute: ``fused_decode_unsupported`` rules out models it does not describe (other classes,
LoRA adapters not merged, ``flash_attn=False``, the book's readable path), and
``prefill(verify=True)`` recomputes the last prompt token with the kernel and compares its
logits with the modules' (``logits_match``). If an edit to ``Attention.forward``,
``MLP.forward``, ... changed the modules, they disagree, and ``generate`` warns once and
decodes through the modules. The check costs one kernel step per ``generate`` call.

The kernel's NumPy twin, ``kernels.reference.llama_decode_step``, is the same step written
out with array operations (``MINILLM_KERNELS=numpy`` runs it); tests check both against
``Transformer.forward``. With 2+ kernel threads (``numba.set_num_threads``) a model of
TEAM_MIN_BYTES of weights or more runs each step as one team (every thread on every row, each
phase's weight rows shared out: ``kernels/_decode.decode_team``); a smaller one splits a batch of
SPLIT_MIN_ROWS rows or more, each thread running the kernel on its own rows. Same bits either way.
A team step that no other thread joined before the caller had run it alone means the cores are
taken by other jobs: the thread pool then backs off (``_spin.back_off``) and, while it does, steps
take the other paths, which never wait for a thread that is not on a core.

Weights are packed once per decoder (stacked over layers, (L, out, in)), so build a new
``FusedDecoder`` after changing the model's weights.
"""
from __future__ import annotations

import threading

import numba
import numpy as np

from .. import kernels
from ..kernels import _decode, _spin
from .._checks import check_token_ids
from ..nn import Linear, RMSNorm
from ..nn.kv_cache import KVCache

__all__ = ["FusedDecoder", "fused_decode_unsupported", "logits_match"]

_LINEARS = ("attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


def fused_decode_unsupported(model) -> str | None:
    """Why ``model`` cannot run on ``FusedDecoder``, or None when it can.

    The kernel computes exactly the plain LLaMA2 of ``minillm.models.llama``: bias-free
    ``nn.Linear`` projections and ``nn.RMSNorm``s, all in one float dtype, with the fused
    attention (``flash_attn=True``). A model class says it has that layout with the class
    attribute ``fused_decode_layout = "llama2"`` (so this package, which sits below the
    models, never imports them). Anything else (a subclass with its own forward, LoRA
    adapters that are not merged, mixed dtypes, the book's readable attention) takes the
    layer-by-layer path, which handles every module. Edited module *code* is caught by
    ``FusedDecoder.prefill(verify=True)``, not here.
    """
    declared = next((c for c in type(model).__mro__ if "fused_decode_layout" in vars(c)), None)
    if declared is None or declared.fused_decode_layout != "llama2":
        return f"{type(model).__name__} is not a minillm.models.llama.Transformer (no fused_decode_layout = 'llama2')"
    if next(c for c in type(model).__mro__ if "forward" in vars(c)) is not declared:
        return f"{type(model).__name__} is not a minillm.models.llama.Transformer: it overrides forward"
    if not model.args.flash_attn:
        return "ModelConfig.flash_attn=False asks for the book's readable attention path"
    for i, layer in enumerate(model.layers):
        for name in _LINEARS:
            m = _get(layer, name)
            if type(m) is not Linear or m.bias is not None:
                return f"layers.{i}.{name} is a {type(m).__name__}, not a bias-free nn.Linear (merge LoRA adapters first)"
        for name in ("attention_norm", "ffn_norm"):
            if not isinstance(_get(layer, name), RMSNorm):
                return f"layers.{i}.{name} is not an RMSNorm"
    if type(model.output) is not Linear or model.output.bias is not None or not isinstance(model.norm, RMSNorm):
        return "the output head must be a bias-free nn.Linear after an RMSNorm"
    dtypes = {p.data.dtype for p in model.parameters()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
        return f"parameters must all be float32 or all float64, got {sorted(str(d) for d in dtypes)}"
    return None


class FusedDecoder:
    """Prefill with ``Transformer.forward``, then one fused kernel call per new token.

    model: a ``Transformer`` (checked with ``fused_decode_unsupported``); its weights are
    copied into layer-stacked arrays here. batch_size: rows decoded together. The KV cache,
    (L, B, n_kv_heads, max_seq_len, head_dim) for keys and for values, is shared by both
    paths: ``kv_cache`` lists per-layer ``KVCache`` views of it for ``Transformer.forward``.
    Inference only (no gradients); dropout is not applied.
    """

    def __init__(self, model, batch_size: int = 1):
        reason = fused_decode_unsupported(model)
        if reason is not None:
            raise ValueError(f"FusedDecoder: {reason}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"FusedDecoder: batch_size must be a positive int, got {batch_size!r}")
        a = model.args
        self.model = model
        self.batch_size = int(batch_size)
        layers = model.layers
        dtype = model.output.weight.dtype

        def stacked(path):  # the same weight of every layer -> (L, ...) contiguous
            return np.stack([_get(layer, path).weight.data for layer in layers])

        self.weights = dict(
            emb=np.ascontiguousarray(model.tok_embeddings.weight.data),  # (V, dim)
            attention_norm=stacked("attention_norm"),  # (L, dim)
            wq=stacked("attention.wq"), wk=stacked("attention.wk"), wv=stacked("attention.wv"), wo=stacked("attention.wo"),
            ffn_norm=stacked("ffn_norm"),  # (L, dim)
            w1=stacked("feed_forward.w1"), w2=stacked("feed_forward.w2"), w3=stacked("feed_forward.w3"),
            norm=np.ascontiguousarray(model.norm.weight.data),  # (dim,)
            output=np.ascontiguousarray(model.output.weight.data),  # (V, dim); the embedding when tied
            cos=np.ascontiguousarray(model.freqs_cos.data, dtype=dtype),  # (max_seq_len, D/2)
            sin=np.ascontiguousarray(model.freqs_sin.data, dtype=dtype),
        )
        shape = (a.n_layers, self.batch_size, a.n_kv_heads, a.max_seq_len, a.head_dim)
        self.k_cache = np.zeros(shape, dtype)  # (L, B, Hkv, S, D)
        self.v_cache = np.zeros(shape, dtype)
        self.kv_cache = [KVCache.from_arrays(self.k_cache[i], self.v_cache[i]) for i in range(a.n_layers)]
        self.eps = float(a.norm_eps)
        # what a step streams: every matrix but the embedding (B rows of it are read) and the RoPE tables
        self.weight_bytes = sum(v.nbytes for name, v in self.weights.items() if name not in ("emb", "cos", "sin"))

    @property
    def length(self) -> int:
        """Positions filled in the cache."""
        return self.kv_cache[0].length

    def reset(self) -> None:
        for c in self.kv_cache:
            c.reset()

    def prefill(self, input_ids, attention_mask=None, position_ids=None, verify: bool = False):
        """Empty the cache and run the prompt (B, T) through ``Transformer.forward``, which
        fills the cache. attention_mask (B, T) marks real tokens (left padding = 0);
        position_ids (B, T) are RoPE positions. Returns the last position's logits (B, V).

        ``verify=True`` returns ``(logits, reason)``: the last prompt token is run once more
        through the kernel (against the cache of the tokens before it), and ``reason`` is None
        when the kernel's logits match the modules' (``logits_match``) or a one-line
        explanation when they do not. The cache then holds the modules' keys and values, so
        decoding can go on through the modules with ``kv_cache``."""
        ids = np.asarray(getattr(input_ids, "data", input_ids))
        if ids.ndim != 2 or ids.shape[0] != self.batch_size:
            raise ValueError(f"FusedDecoder.prefill: input_ids must have shape ({self.batch_size}, T), got {ids.shape}")
        self.reset()
        out = self.model(ids, attention_mask=attention_mask, position_ids=position_ids, kv_cache=self.kv_cache, logits_to_keep=1)
        logits = out.logits.data[:, -1]  # (B, 1, V) -> (B, V)
        if not verify:
            return logits
        T = ids.shape[1]
        last = T - 1  # rewind the cache by one token and recompute that token with the kernel
        saved = self.k_cache[:, :, :, last].copy(), self.v_cache[:, :, :, last].copy()  # (L, B, Hkv, D) the modules' keys/values
        for c in self.kv_cache:
            c.length = last
        positions = None if position_ids is None else np.asarray(getattr(position_ids, "data", position_ids))[:, -1]
        mask = None if attention_mask is None else np.asarray(getattr(attention_mask, "data", attention_mask))
        fused = self.step(ids[:, -1], positions=positions, attention_mask=mask)  # (B, V); writes slot `last` again
        self.k_cache[:, :, :, last], self.v_cache[:, :, :, last] = saved
        return logits, logits_match(fused, logits)

    def step(self, tokens, positions=None, attention_mask=None) -> np.ndarray:
        """One new token per row. tokens: (B,) ids; positions: (B,) RoPE positions (default:
        the cache length, as for unpadded rows); attention_mask: (B, length + 1) with 1 for
        positions a row may attend to (left padding = 0; default all 1). Returns (B, V)."""
        B, start = self.batch_size, self.length
        cfg = self.model.args
        tokens = _int_vector(tokens, B, "tokens")
        check_token_ids(tokens, cfg.vocab_size, "FusedDecoder.step")
        if start >= cfg.max_seq_len:
            raise ValueError(f"FusedDecoder.step: the cache is full ({start} = max_seq_len positions)")
        positions = np.full(B, start, np.int64) if positions is None else _int_vector(positions, B, "positions")
        if positions.min() < 0 or positions.max() >= cfg.max_seq_len:
            raise IndexError(f"FusedDecoder.step: positions must be in [0, {cfg.max_seq_len}), got {positions.tolist()}")
        if attention_mask is None:
            valid = np.ones((B, start + 1), dtype=bool)
        else:
            valid = np.asarray(getattr(attention_mask, "data", attention_mask))
            if valid.shape != (B, start + 1):
                raise ValueError(f"FusedDecoder.step: attention_mask must have shape (batch, cached + 1) = {(B, start + 1)}, got {valid.shape}")
            valid = np.ascontiguousarray(valid, dtype=bool)
            if not valid[:, -1].all():
                raise ValueError("FusedDecoder.step: the new token itself must be unmasked (attention_mask[:, -1] == 1)")
        w = self.weights
        weights = (w["emb"], w["attention_norm"], w["wq"], w["wk"], w["wv"], w["wo"], w["ffn_norm"], w["w1"], w["w2"],
                   w["w3"], w["norm"], w["output"], w["cos"], w["sin"])
        threads = numba.get_num_threads() if kernels.get_kernels() == "numba" else 1
        out_shape = (B, w["output"].shape[0])  # (B, V)
        if threads > 1 and self.weight_bytes >= TEAM_MIN_BYTES and not _spin.backing_off():  # every thread on every row
            logits = np.empty(out_shape, w["output"].dtype)
            a = self.model.args
            bufs = _decode.step_buffers(B, a.dim, w["wq"].shape[1], w["wk"].shape[1], w["w1"].shape[1], a.n_heads, start + 1,
                                        w["output"])
            counters = np.zeros(_decode.counters_size(w["wq"].shape[0]), np.int64)

            caller, by_caller = threading.get_ident(), [0]

            def member(first, step):  # each thread joins the same step; a late one finds its phases done
                by_caller[0] += threading.get_ident() == caller
                _decode.decode_team(tokens, positions, start, valid, *weights, self.k_cache, self.v_cache, self.eps, 0,
                                    logits, bufs, counters, threads)

            kernels.run_items(member, threads)
            # No worker joined before this thread had run the whole step alone: it was not on a core (other
            # jobs), or the pool was busy with another thread's call. Either way a team would wait for it.
            if by_caller[0] == threads:
                _spin.back_off()
        elif threads > 1 and B >= SPLIT_MIN_ROWS:  # the rows in ranges, one per thread, each writing its own cache rows
            logits = np.empty(out_shape, w["output"].dtype)
            shares = min(threads, B // (SPLIT_MIN_ROWS // 2))  # each of at least SPLIT_MIN_ROWS / 2 rows

            def share(first, step):
                lo, hi = _even_edge(first, step, B), _even_edge(first + 1, step, B)
                logits[lo:hi] = kernels.llama_decode_step(tokens[lo:hi], positions[lo:hi], start, valid[lo:hi],
                                                          *weights, self.k_cache, self.v_cache, self.eps, lo)

            kernels.run_items(share, shares)
        else:
            logits = kernels.llama_decode_step(tokens, positions, start, valid, *weights, self.k_cache, self.v_cache,
                                               self.eps, 0)  # (B, V); keys/values written at slot `start`
        for c in self.kv_cache:
            c.length = start + 1
        return logits


# A batch of at least this many rows is split over the kernel threads, one range of rows each (the
# kernel releases the GIL; each share writes its own rows of the cache). Measured at 2 threads
# (benchmarks/generate.py, tokens/s split vs not): tiny 8 / 16 / 32 rows 1.32x vs 1.24x PyTorch,
# 15.5k vs 12.7k, 19.8k vs 13.4k tok/s; small at 8 rows 1.26x vs 0.90x; at 4 rows splitting lost
# (tiny 7.1k vs 8.4k: each share streams every weight for only 2 rows).
SPLIT_MIN_ROWS = 8

# From this many bytes of weights a step at 2+ threads runs as one team (`_decode.decode_team`):
# every thread works on every row, each phase's weight rows shared out, so each thread streams part of
# the weights from memory instead of all of them (a row split makes each thread stream all of them).
# Measured on an AMD EPYC (Zen 4) 2-core machine, 2 threads, ms per step, one call or the row split vs
# the team (`FusedDecoder.step`, alternating, benchmarks/README.md "Round 6"): small (31 MB of weights)
# batch 1 1.25 vs 0.93, 2 4.06 vs 2.22, 4 4.48 vs 2.38, 8 4.88 vs 3.09, 16 4.87-5.37 vs 4.69-5.09, 32
# 7.41-8.13 vs 7.58-8.59 (level); tiny (6 MB, which stay in cache) batch 1 0.137 vs 0.229, 8 0.42 vs
# 0.48, 32 1.34 vs 1.63: there the waits between phases cost more than the shared streaming saves.
TEAM_MIN_BYTES = 16 << 20


def _even_edge(i: int, n: int, rows: int) -> int:
    """Edge i of n row ranges, on an even row: the kernel's matrix products work on pairs of rows,
    so even ranges keep every row's arithmetic (and bits) as in one call over all rows."""
    return rows if i >= n else min(rows, (i * rows // n + 1) // 2 * 2)


# How close the kernel's logits must be to the modules' to count as the same computation. The
# two differ only by float rounding (a BLAS matmul vs the kernel's loops: ~1e-6 relative in
# float32); an edit to the model's code moves the logits by far more.
VERIFY_RTOL = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-8}


def logits_match(fused: np.ndarray, modules: np.ndarray) -> str | None:
    """None when the kernel's logits (B, V) equal the modules' up to rounding, else why not."""
    rtol = VERIFY_RTOL.get(np.dtype(modules.dtype), 1e-3)
    scale = max(1.0, float(np.abs(modules).max()))
    err = float(np.abs(fused.astype(np.float64) - modules).max())
    if err <= rtol * scale:  # False for NaN too
        return None
    # One fixed line (no numbers), so Python's warning filter shows it once, not once per call.
    return (
        "the fused decode kernel's logits differ from the model's modules by more than float rounding (the "
        "model's code was changed?): decoding runs through the modules; pass fused_decode=False to skip the kernel"
    )


def _get(module, path):
    """module.attention.wq for path "attention.wq" (None if a part is missing)."""
    for part in path.split("."):
        module = getattr(module, part, None)
    return module


def _int_vector(x, n, name):
    a = np.asarray(getattr(x, "data", x))
    if a.shape != (n,) or a.dtype.kind not in "iu":
        raise ValueError(f"FusedDecoder.step: {name} must be {n} integers (shape ({n},)), got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)

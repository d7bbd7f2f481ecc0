"""Happy LLM 4.1 "什么是 LLM": what makes a model *large*, in numbers.

==================================  ============================================================
``count_parameters(config)``        the LLaMA2 parameter count from the config alone (the
                                    formula), layer by layer; equal to the modules' count
``flops_per_token(config, T)``      training FLOPs per token: 6·N for the matrix multiplies
                                    (2 forward + 4 backward per weight), plus the attention
                                    scores 6·n_layers·T·dim (Kaplan et al. 2020, table 1)
``training_flops(N, D)``            C ≈ 6·N·D, the compute of a run over D tokens
``fit_power_law(C, L)``             L(C) = a·C^(-b), fitted by least squares in log-log space
``chinchilla_optimal(C)``           the compute-optimal N and D for a budget C when D ≈ 20·N
==================================  ============================================================

``examples/scaling.py`` trains a small grid of models on the built-in world and fits L(C).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["count_parameters", "flops_per_token", "training_flops", "fit_power_law", "chinchilla_optimal"]


def count_parameters(config, by_layer: bool = False):
    """Parameters of ``minillm.models.llama.Transformer(config)`` from the config's numbers.

    Per decoder layer: attention ``wq`` d·(h·hd), ``wk`` and ``wv`` d·(kv·hd) each (fewer with
    GQA), ``wo`` (h·hd)·d; the SwiGLU MLP 3·d·hidden (``w1``, ``w2``, ``w3``); two RMSNorm
    weights of d. Plus the embedding V·d (the output head shares it when tied, else another
    V·d) and the final norm d. ``by_layer=True`` returns the pieces as a dict.
    """
    d, L, V = config.dim, config.n_layers, config.vocab_size
    hd = config.dim // config.n_heads
    parts = {
        "tok_embeddings": V * d,
        "attention (per layer)": d * config.n_heads * hd + 2 * d * config.n_kv_heads * hd + config.n_heads * hd * d,
        "feed_forward (per layer)": 3 * d * config.ffn_hidden_dim,
        "norms (per layer)": 2 * d,
        "norm": d,
        "output": 0 if config.tie_word_embeddings else V * d,
    }
    per_layer = parts["attention (per layer)"] + parts["feed_forward (per layer)"] + parts["norms (per layer)"]
    total = parts["tok_embeddings"] + L * per_layer + parts["norm"] + parts["output"]
    if by_layer:
        return {**parts, "n_layers": L, "total": total}
    return total


def _non_embedding(config) -> int:
    return count_parameters(config) - config.vocab_size * config.dim * (1 if config.tie_word_embeddings else 2)


def flops_per_token(config, seq_len: int, include_embedding: bool = True) -> float:
    """Training FLOPs per token: 6·N (each weight: a multiply-add forward, two backward) +
    6·n_layers·seq_len·dim for the attention scores and their weighted sum (QKᵀ and AV).

    ``include_embedding=False`` counts only non-embedding weights, as Kaplan et al. do (the
    embedding lookup is not a matmul; a tied output head still is one, so it is added back).
    """
    if seq_len < 1:
        raise ValueError(f"flops_per_token: seq_len must be >= 1, got {seq_len}")
    n = count_parameters(config) if include_embedding else _non_embedding(config) + config.vocab_size * config.dim
    return 6.0 * n + 6.0 * config.n_layers * seq_len * config.dim


def training_flops(n_params: float, n_tokens: float) -> float:
    """C ≈ 6·N·D: the compute of training N parameters on D tokens."""
    if n_params <= 0 or n_tokens <= 0:
        raise ValueError(f"training_flops: N and D must be > 0, got {n_params}, {n_tokens}")
    return 6.0 * n_params * n_tokens


def fit_power_law(compute: Sequence[float], loss: Sequence[float]) -> dict:
    """Fit ``loss = a · compute^(-b)`` by least squares on ``log loss = log a - b·log compute``.
    Returns ``{"a", "b", "r2"}`` (r2: the fit's R² in log space)."""
    c, y = np.asarray(compute, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if c.shape != y.shape or c.ndim != 1 or len(c) < 2:
        raise ValueError(f"fit_power_law: need two equal 1-D arrays of >= 2 points, got {c.shape} and {y.shape}")
    if (c <= 0).any() or (y <= 0).any():
        raise ValueError("fit_power_law: compute and loss must be > 0 (they are fitted in log space)")
    X = np.stack([np.ones_like(c), np.log(c)], axis=1)  # (n, 2)
    coef, *_ = np.linalg.lstsq(X, np.log(y), rcond=None)
    pred = X @ coef
    ss_res = float(((np.log(y) - pred) ** 2).sum())
    ss_tot = float(((np.log(y) - np.log(y).mean()) ** 2).sum())
    return {"a": float(math.exp(coef[0])), "b": float(-coef[1]), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def chinchilla_optimal(compute: float, tokens_per_param: float = 20.0) -> dict:
    """Compute-optimal size for a budget C (Hoffmann et al. 2022's rule of thumb D ≈ 20·N):
    C = 6·N·D = 6·k·N² gives N = √(C / 6k), D = k·N."""
    if compute <= 0 or tokens_per_param <= 0:
        raise ValueError(f"chinchilla_optimal: compute and tokens_per_param must be > 0, got {compute}, {tokens_per_param}")
    n = math.sqrt(compute / (6.0 * tokens_per_param))
    return {"n_params": n, "n_tokens": tokens_per_param * n}

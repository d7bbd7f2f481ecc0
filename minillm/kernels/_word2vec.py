"""Numba kernels: word2vec's skip-gram / CBOW with negative sampling, the word2vec.c inner loop.

Plain sequential SGD, one example at a time (word2vec.c runs this loop in several threads
without locks, "Hogwild"; we keep one thread so runs are reproducible and equal to the
NumPy twin in ``reference_word2vec.py``, which documents the maths). ``fastmath`` is off:
the tests compare against the reference to 1e-10 in float64.
"""
import math

import numpy as np
from numba import njit

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)


@njit(cache=CACHE)
def _negative_sampling_step(h, W_out, outputs, mask, lr, g, neu1e, loss):
    """One example's update of ``W_out`` for the input vector ``h`` (D,): the true word
    ``outputs[0]`` and the negatives ``outputs[1:]`` (K+1,), weighted by ``mask`` (K+1,) and the
    learning rate ``lr``. Fills ``neu1e`` (D,) with the step for ``h`` (the caller applies it, after
    this: both gradients use the vectors from before the step) and returns ``loss`` plus this
    example's negative log-likelihood. ``g`` (K+1,) is scratch space."""
    D = h.shape[0]
    K1 = outputs.shape[0]
    for j in range(K1):  # all g_j from the vectors before this step
        o = outputs[j]
        f = 0.0
        for d in range(D):
            f += h[d] * W_out[o, d]
        p = 1.0 / (1.0 + math.exp(-f))
        y = 1.0 if j == 0 else 0.0
        g[j] = mask[j] * (y - p) * lr
        if mask[j] != 0.0:
            loss -= mask[j] * math.log(p if j == 0 else 1.0 - p)
    for d in range(D):
        neu1e[d] = 0.0
    for j in range(K1):
        o = outputs[j]
        for d in range(D):
            neu1e[d] += g[j] * W_out[o, d]
    for j in range(K1):
        o = outputs[j]
        for d in range(D):
            W_out[o, d] += g[j] * h[d]
    return loss


@njit(cache=CACHE)
def skipgram_ns_train(W_in, W_out, centers, outputs, mask, lr):
    D = W_in.shape[1]
    g = np.empty(outputs.shape[1], dtype=W_in.dtype)
    neu1e = np.empty(D, dtype=W_in.dtype)  # accumulated gradient step for the input vector
    loss = 0.0
    for i in range(centers.shape[0]):
        c = centers[i]
        loss = _negative_sampling_step(W_in[c], W_out, outputs[i], mask[i], lr[i], g, neu1e, loss)
        for d in range(D):
            W_in[c, d] += neu1e[d]
    return loss


@njit(cache=CACHE)
def cbow_ns_train(W_in, W_out, contexts, outputs, mask, lr):
    D = W_in.shape[1]
    g = np.empty(outputs.shape[1], dtype=W_in.dtype)
    neu1 = np.empty(D, dtype=W_in.dtype)  # mean of the context vectors
    neu1e = np.empty(D, dtype=W_in.dtype)
    loss = 0.0
    for i in range(contexts.shape[0]):
        n = 0
        for d in range(D):
            neu1[d] = 0.0
        for c in range(contexts.shape[1]):
            w = contexts[i, c]
            if w >= 0:
                n += 1
                for d in range(D):
                    neu1[d] += W_in[w, d]
        for d in range(D):
            neu1[d] /= n
        loss = _negative_sampling_step(neu1, W_out, outputs[i], mask[i], lr[i], g, neu1e, loss)
        for c in range(contexts.shape[1]):
            w = contexts[i, c]
            if w >= 0:
                for d in range(D):
                    W_in[w, d] += neu1e[d] / n
    return loss

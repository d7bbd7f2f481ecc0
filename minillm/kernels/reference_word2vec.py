"""Plain NumPy twin of the word2vec kernels in ``_word2vec.py`` (Happy LLM 1.4.3).

One SGD step per training example, exactly as ``_word2vec.py`` does it, so the two can be
compared element by element. ``outputs[i, 0]`` is the positive word, ``outputs[i, 1:]``
the negative samples; ``mask[i, j] = 0`` skips a slot (a negative equal to the positive).

For an input vector v (the centre word's, or the mean of the context words' for CBOW) and
output vectors u_j with labels y_0 = 1, y_j = 0, the loss and its gradients are

    L = -Σ_j mask_j · log σ(s_j · u_j·v),   s_j = +1 for j = 0 else -1
    g_j = mask_j · (y_j - σ(u_j·v))          (word2vec.c's "g", times the learning rate there)
    dL/du_j = -g_j · v,    dL/dv = -Σ_j g_j · u_j

All gradients use the vectors *before* the step (word2vec.c updates u_j inside its loop,
which differs only when a negative repeats within one example).
"""
import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def skipgram_ns_train(W_in, W_out, centers, outputs, mask, lr):
    """In-place SGD over skip-gram examples; returns the summed loss."""
    loss = 0.0
    for i in range(len(centers)):
        v = W_in[centers[i]].copy()  # (D,)
        u = W_out[outputs[i]].copy()  # (1+K, D)
        score = u @ v  # (1+K,)
        y = np.zeros(len(score))
        y[0] = 1.0
        p = _sigmoid(score)
        g = mask[i] * (y - p)  # (1+K,)
        loss -= float(np.sum(mask[i] * np.log(np.where(y > 0, p, 1.0 - p))))
        np.add.at(W_out, outputs[i], lr[i] * g[:, None] * v[None, :])  # repeated rows add up
        W_in[centers[i]] += lr[i] * (g @ u)
    return loss


def cbow_ns_train(W_in, W_out, contexts, outputs, mask, lr):
    """In-place SGD over CBOW examples (context ids padded with -1); returns the summed loss."""
    loss = 0.0
    for i in range(len(contexts)):
        ctx = contexts[i][contexts[i] >= 0]
        v = W_in[ctx].mean(0)  # (D,) the mean of the context vectors
        u = W_out[outputs[i]].copy()
        score = u @ v
        y = np.zeros(len(score))
        y[0] = 1.0
        p = _sigmoid(score)
        g = mask[i] * (y - p)
        loss -= float(np.sum(mask[i] * np.log(np.where(y > 0, p, 1.0 - p))))
        np.add.at(W_out, outputs[i], lr[i] * g[:, None] * v[None, :])
        np.add.at(W_in, ctx, (lr[i] / len(ctx)) * (g @ u))  # d mean / d each context vector = 1/n
    return loss

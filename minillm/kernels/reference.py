"""Plain NumPy reference kernels: the version a learner reads.

Every function here has a Numba twin (see `_softmax.py`, `_attention.py`, ...)
that is tested equal to it.  They work on raw `np.ndarray`s (no autograd):
the ops in `minillm/ops` call them through `minillm.kernels`, which picks this
module or the Numba one (`MINILLM_KERNELS=numpy|numba`, `set_kernels`).

Conventions: computation stays in the input dtype (float32 in, float32 out);
"last axis" means the feature axis; shape comments read `# (in) -> (out)`.
"""
import math

import numpy as np


# --------------------------------------------------------------------------- matmul
def matmul(a, b, trans_a=False, trans_b=False):
    """a @ b with np.matmul semantics (batch dims broadcast); trans_* transposes the last two axes."""
    if trans_a:
        a = a.swapaxes(-1, -2)  # (..., K, M) -> (..., M, K)
    if trans_b:
        b = b.swapaxes(-1, -2)  # (..., N, K) -> (..., K, N)
    return np.matmul(a, b)  # (..., M, K) @ (..., K, N) -> (..., M, N)


# -------------------------------------------------------------------------- softmax
def softmax_forward(x):
    """softmax over the last axis, shifted by the row max so exp never overflows."""
    m = x.max(axis=-1, keepdims=True)  # (..., C) -> (..., 1)
    e = np.exp(x - m)  # (..., C), every value in (0, 1]
    return e / e.sum(axis=-1, keepdims=True)  # (..., C)


def softmax_backward(y, gy):
    """dL/dx_i = y_i * (gy_i - sum_j gy_j y_j)   (y = softmax output)."""
    dot = (gy * y).sum(axis=-1, keepdims=True)  # (..., C) -> (..., 1)
    return y * (gy - dot)  # (..., C)


def log_softmax_forward(x):
    """log softmax = (x - max) - log(sum(exp(x - max)))."""
    z = x - x.max(axis=-1, keepdims=True)  # (..., C)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))  # (..., C)


def log_softmax_backward(y, gy):
    """dL/dx = gy - softmax(x) * sum(gy)   (y = log-softmax output, so softmax = exp(y))."""
    return gy - np.exp(y) * gy.sum(axis=-1, keepdims=True)  # (..., C)


# ------------------------------------------------------------------- cross-entropy
def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    """Per-row cross-entropy of `logits` (N, V) against class ids `target` (N,).

    loss_n = (1 - eps) * (lse_n - x_{n,t}) + eps * mean_j(lse_n - x_{n,j})   (PyTorch's label smoothing)
    Rows whose target == ignore_index get loss 0.  Returns (losses (N,), lse (N,)),
    lse = log-sum-exp of each row, which the backward reuses.
    """
    N, V = logits.shape
    eps = logits.dtype.type(label_smoothing)
    m = logits.max(axis=1, keepdims=True)  # (N, V) -> (N, 1)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))  # (N,)
    valid = target != ignore_index  # (N,) bool
    t = np.where(valid, target, 0)  # (N,) safe index for ignored rows
    nll = lse - logits[np.arange(N), t]  # (N,)   -log p_target
    smooth = lse - logits.mean(axis=1)  # (N,)   mean_j(-log p_j)
    loss = (1 - eps) * nll + eps * smooth  # (N,)
    return np.where(valid, loss, 0).astype(logits.dtype), lse


def cross_entropy_backward(logits, target, lse, grad_losses, ignore_index, label_smoothing):
    """d loss_n / d logits_n = softmax(logits_n) - (1 - eps) * onehot(t_n) - eps / V, times grad_losses_n."""
    N, V = logits.shape
    eps = logits.dtype.type(label_smoothing)
    valid = target != ignore_index  # (N,)
    t = np.where(valid, target, 0)  # (N,)
    g = np.exp(logits - lse[:, None]) - eps / V  # (N, V)   softmax, recomputed from lse
    g[np.arange(N), t] -= 1 - eps  # subtract the (smoothed) one-hot target
    return g * np.where(valid, grad_losses, 0)[:, None]  # (N, V), ignored rows -> 0


# ------------------------------------------------------------------------- RMSNorm
def rmsnorm_forward(x, weight, eps):
    """y = x / sqrt(mean(x^2) + eps) * weight.  Returns (y (..., C), rstd (...))."""
    ms = (x * x).mean(axis=-1, keepdims=True)  # (..., C) -> (..., 1)
    rstd = 1 / np.sqrt(ms + x.dtype.type(eps))  # (..., 1)
    y = x * rstd * weight  # (..., C) * (..., 1) * (C,) -> (..., C)
    return y, rstd[..., 0]  # rstd: (..., 1) -> (...)


def rmsnorm_backward(x, weight, rstd, gy):
    """With xhat = x * rstd:  gweight = sum_rows(gy * xhat),
    gx = rstd * (g - xhat * mean(g * xhat)),  g = gy * weight."""
    C = x.shape[-1]
    r = rstd[..., None]  # (...) -> (..., 1)
    xhat = x * r  # (..., C)
    gweight = (gy * xhat).reshape(-1, C).sum(axis=0)  # (..., C) -> (N, C) -> (C,)
    g = gy * weight  # (..., C)
    gx = r * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))  # (..., C)
    return gx, gweight


def layernorm_forward(x, weight, bias, eps):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, biased var (PyTorch's LayerNorm).
    Returns (y (..., C), mean (...), rstd (...))."""
    mean = x.mean(axis=-1, keepdims=True)  # (..., C) -> (..., 1)
    xc = x - mean  # (..., C)
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1)
    rstd = 1 / np.sqrt(var + x.dtype.type(eps))  # (..., 1)
    y = xc * rstd * weight + bias  # (..., C) * (C,) + (C,) -> (..., C)
    return y, mean[..., 0], rstd[..., 0]  # (..., 1) -> (...)


def layernorm_backward(x, weight, mean, rstd, gy):
    """With xhat = (x - mean) * rstd and g = gy * weight:  gweight = sum_rows(gy * xhat),
    gbias = sum_rows(gy),  gx = rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    C = x.shape[-1]
    r = rstd[..., None]  # (...) -> (..., 1)
    xhat = (x - mean[..., None]) * r  # (..., C)
    gweight = (gy * xhat).reshape(-1, C).sum(axis=0)  # (..., C) -> (N, C) -> (C,)
    gbias = gy.reshape(-1, C).sum(axis=0)  # (C,)
    g = gy * weight  # (..., C)
    gx = r * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))  # (..., C)
    return gx, gweight, gbias


# ---------------------------------------------------------------------------- RoPE
def rope_forward(x, cos, sin):
    """Rotary embedding, the book's interleaved-pair convention: the pair
    (x[..., 2i], x[..., 2i+1]) at position t is rotated by angle theta_{t,i}:
        y0 = x0 cos - x1 sin,   y1 = x0 sin + x1 cos.
    x: (B, T, H, D); cos, sin: (T, D // 2)."""
    x0 = x[..., 0::2]  # (B, T, H, D) -> (B, T, H, D/2)  even dims
    x1 = x[..., 1::2]  # (B, T, H, D) -> (B, T, H, D/2)  odd dims
    c = cos[None, :, None, :]  # (T, D/2) -> (1, T, 1, D/2)
    s = sin[None, :, None, :]  # (T, D/2) -> (1, T, 1, D/2)
    y = np.empty_like(x)  # (B, T, H, D)
    y[..., 0::2] = x0 * c - x1 * s
    y[..., 1::2] = x0 * s + x1 * c
    return y


def rope_backward(gy, cos, sin):
    """A rotation's gradient is the rotation by the opposite angle (its transpose)."""
    return rope_forward(gy, cos, -sin)


# ------------------------------------------------------------------ sigmoid, SwiGLU, erf
def sigmoid(a):
    """1 / (1 + exp(-a)), the book's and PyTorch's formula: accurate even for very negative a,
    where the result is tiny (about e^a). A helper, not a kernel: ops.sigmoid / silu use it, and
    the Numba kernels write the same formula inline."""
    with np.errstate(over="ignore"):  # exp(-a) = inf for very negative a gives sigmoid 0, as it should
        return 1 / (1 + np.exp(-a))


def swiglu_forward(a, b):
    """y = silu(a) * b,  silu(a) = a * sigmoid(a)."""
    return a * sigmoid(a) * b


def swiglu_backward(a, b, gy):
    """ga = gy * b * sig * (1 + a * (1 - sig)),   gb = gy * silu(a)."""
    sig = sigmoid(a)
    ga = gy * b * sig * (1 + a * (1 - sig))
    gb = gy * a * sig
    return ga, gb


def erf(x):
    """The error function, elementwise in x's dtype: erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt
    (exact GELU needs it). NumPy has none; Python's math.erf is exact but takes one number at a
    time, so this loops in Python (the Numba twin is the same loop, compiled)."""
    flat = x.reshape(-1)  # (...) -> (n,)
    return np.array([math.erf(v) for v in flat], dtype=x.dtype).reshape(x.shape)  # (n,) -> (...)


# ----------------------------------------------------------------------- embedding
def embedding_backward(ids, gout, num_embeddings):
    """The embedding lookup copies rows, so its gradient scatter-adds rows back;
    an id that appears twice collects both gradients."""
    gweight = np.zeros((num_embeddings, gout.shape[1]), dtype=gout.dtype)  # (num_embeddings, C)
    np.add.at(gweight, ids, gout)  # gweight[ids[n]] += gout[n]  (unbuffered, repeats accumulate)
    return gweight


# --------------------------------------------------------------------------- AdamW
def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW update in place, exactly PyTorch's formula (`step` counts from 1)."""
    param *= 1 - lr * weight_decay  # decoupled weight decay
    exp_avg *= beta1
    exp_avg += (1 - beta1) * grad  # m = beta1 m + (1 - beta1) g
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad  # v = beta2 v + (1 - beta2) g^2
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    denom = np.sqrt(exp_avg_sq) / math.sqrt(bias_correction2) + eps  # sqrt(v_hat) + eps
    param -= step_size * exp_avg / denom  # param -= lr * m_hat / (sqrt(v_hat) + eps)


# ----------------------------------------------------------------------- attention
def bool_mask_to_additive(mask, dtype=np.float32):
    """Boolean mask (True = attend, PyTorch's convention) -> additive mask (0 / -inf)."""
    return np.where(mask, 0, -np.inf).astype(dtype)


def _attention_scores(q, k, mask, is_causal, scale):
    """Scaled scores with the masks applied: (B, H, Tq, Tk).
    Grouped-query attention without copying K: the H query heads are viewed as
    Hkv groups of G = H // Hkv heads that all read the same kv head."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    G = H // Hkv
    qg = q.reshape(B, Hkv, G, Tq, D)  # (B, H, Tq, D) -> (B, Hkv, G, Tq, D)
    kT = k[:, :, None].swapaxes(-1, -2)  # (B, Hkv, Tk, D) -> (B, Hkv, 1, D, Tk)  (a view)
    s = (qg @ kT) * q.dtype.type(scale)  # (B, Hkv, G, Tq, Tk)
    s = s.reshape(B, H, Tq, Tk)  # (B, Hkv, G, Tq, Tk) -> (B, H, Tq, Tk)
    if mask is not None:
        s = s + mask  # additive mask, broadcast to (B, H, Tq, Tk)
    if is_causal:
        # bottom-right aligned: query i sits at absolute position i + (Tk - Tq) (KV-cache decode)
        i = np.arange(Tq)[:, None]  # (Tq, 1)
        j = np.arange(Tk)[None, :]  # (1, Tk)
        s = np.where(j <= i + (Tk - Tq), s, -np.inf)  # (B, H, Tq, Tk)
    return s


def attention_forward(q, k, v, mask, is_causal, scale):
    """softmax(q k^T * scale + mask) v.  q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D).
    Returns (out (B, H, Tq, D), lse (B, H, Tq)).  A row whose keys are all masked
    gets out = 0 and lse = -inf (instead of NaN)."""
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    s = _attention_scores(q, k, mask, is_causal, scale)  # (B, H, Tq, Tk)
    m = s.max(axis=-1, keepdims=True)  # (B, H, Tq, 1)
    m = np.where(np.isfinite(m), m, 0)  # fully masked row: shift by 0, not by -inf
    e = np.exp(s - m)  # (B, H, Tq, Tk)
    l = e.sum(axis=-1, keepdims=True)  # (B, H, Tq, 1)
    p = e / np.where(l > 0, l, 1)  # (B, H, Tq, Tk), all-zero rows stay 0
    with np.errstate(divide="ignore"):
        lse = (m + np.log(l))[..., 0]  # (B, H, Tq), -inf for fully masked rows
    pg = p.reshape(B, Hkv, G, Tq, -1)  # (B, H, Tq, Tk) -> (B, Hkv, G, Tq, Tk)
    out = pg @ v[:, :, None]  # (B, Hkv, G, Tq, Tk) @ (B, Hkv, 1, Tk, D) -> (B, Hkv, G, Tq, D)
    return out.reshape(B, H, Tq, D), lse  # -> (B, H, Tq, D)


def attention_backward(q, k, v, mask, is_causal, scale, out, lse, gout):
    """Gradients of attention_forward.  P is recomputed from the saved lse:
    P = exp(S - lse); dV = P^T dO; dP = dO V^T; dS = P * (dP - rowsum(dO * O));
    dQ = dS K * scale; dK = dS^T Q * scale.  Heads sharing a kv head sum into it."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    G = H // Hkv
    s = _attention_scores(q, k, mask, is_causal, scale)  # (B, H, Tq, Tk)
    live = np.isfinite(lse)[..., None]  # (B, H, Tq, 1) rows with at least one visible key
    p = np.where(live, np.exp(s - np.where(live, lse[..., None], 0)), 0)  # (B, H, Tq, Tk)
    pg = p.reshape(B, Hkv, G, Tq, Tk)  # (B, H, Tq, Tk) -> (B, Hkv, G, Tq, Tk)
    gog = gout.reshape(B, Hkv, G, Tq, D)  # (B, H, Tq, D) -> (B, Hkv, G, Tq, D)
    gv = (pg.swapaxes(-1, -2) @ gog).sum(axis=2)  # (B, Hkv, G, Tk, D) -> (B, Hkv, Tk, D)
    dp = gog @ v[:, :, None].swapaxes(-1, -2)  # (B, Hkv, G, Tq, D) @ (B, Hkv, 1, D, Tk) -> (B, Hkv, G, Tq, Tk)
    delta = (gout * out).sum(axis=-1).reshape(B, Hkv, G, Tq, 1)  # (B, H, Tq, D) -> (B, Hkv, G, Tq, 1)
    ds = pg * (dp - delta) * q.dtype.type(scale)  # (B, Hkv, G, Tq, Tk)
    gq = (ds @ k[:, :, None]).reshape(B, H, Tq, D)  # (B, Hkv, G, Tq, D) -> (B, H, Tq, D)
    qg = q.reshape(B, Hkv, G, Tq, D)  # (B, H, Tq, D) -> (B, Hkv, G, Tq, D)
    gk = (ds.swapaxes(-1, -2) @ qg).sum(axis=2)  # (B, Hkv, G, Tk, D) -> (B, Hkv, Tk, D)
    return gq, gk, gv


# ------------------------------------------------------------- LLaMA2 decode step
def llama_decode_step(tokens, positions, cache_pos, key_valid, emb, attention_norm, wq, wk, wv, wo,
                      ffn_norm, w1, w2, w3, norm, output, cos, sin, k_cache, v_cache, eps, cache_row):
    """One new token per row through the whole LLaMA2 model (inference only, no graph).

    The same arithmetic as ``Transformer.forward`` on a (B, 1) input with a KV cache,
    written as one function over raw arrays so a decode step costs one call instead of
    ~100 autograd ops. Weights are stacked over the L layers (``minillm.generation.fused``
    packs them):

    tokens, positions: (B,) int64 -- the new token ids and their RoPE positions
    cache_pos: int -- the cache slot the new keys/values go to (same for every row)
    key_valid: (B, >= cache_pos + 1) bool -- which cached slots each row may attend to
    emb, output: (V, dim); attention_norm, ffn_norm: (L, dim); norm: (dim,)
    wq: (L, H*D, dim); wk, wv: (L, Hkv*D, dim); wo: (L, dim, H*D)
    w1, w3: (L, hidden, dim); w2: (L, dim, hidden); cos, sin: (max_seq_len, D/2)
    k_cache, v_cache: (L, B_all, Hkv, S, D), written at slot cache_pos; this call's rows are
        cache_row .. cache_row + B - 1 (a thread's share of a batch: ``generation/fused.py``)
    Returns logits (B, V).
    """
    B = tokens.shape[0]
    L, Hkv, D = k_cache.shape[0], k_cache.shape[2], k_cache.shape[4]
    H = wq.shape[1] // D
    G = H // Hkv  # query heads per kv head
    P = cache_pos + 1  # keys visible after this step
    dt = emb.dtype.type

    def rms(x, w):
        return x * (1 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + dt(eps))) * w  # (B, dim)

    c, s = cos[positions][:, None, :], sin[positions][:, None, :]  # each row's angles: (B, D/2) -> (B, 1, D/2)

    def rope(x):  # x: (B, heads, D), interleaved pairs (2i, 2i+1) as in the book
        y = np.empty_like(x)
        y[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
        y[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
        return y

    key_mask = np.where(key_valid[:, :P], dt(0), dt(-np.inf))[:, None, None, :]  # (B, 1, 1, P)
    h = emb[tokens]  # (B,) -> (B, dim)
    for layer in range(L):
        x = rms(h, attention_norm[layer])  # (B, dim)
        q = rope((x @ wq[layer].T).reshape(B, H, D))  # (B, dim) -> (B, H, D)
        k = rope((x @ wk[layer].T).reshape(B, Hkv, D))  # (B, dim) -> (B, Hkv, D)
        v = (x @ wv[layer].T).reshape(B, Hkv, D)  # (B, dim) -> (B, Hkv, D)
        rows = slice(cache_row, cache_row + B)
        k_cache[layer, rows, :, cache_pos] = k  # write this step's keys and values in place
        v_cache[layer, rows, :, cache_pos] = v
        keys, values = k_cache[layer, rows, :, :P], v_cache[layer, rows, :, :P]  # (B, Hkv, P, D)
        qg = q.reshape(B, Hkv, G, D)  # (B, H, D) -> (B, Hkv, G, D): G heads share a kv head
        scores = qg @ keys.swapaxes(-1, -2) * dt(1 / math.sqrt(D)) + key_mask  # (B, Hkv, G, P)
        p = np.exp(scores - scores.max(axis=-1, keepdims=True))  # the new token is always visible
        p /= p.sum(axis=-1, keepdims=True)  # (B, Hkv, G, P)
        att = (p @ values).reshape(B, H * D)  # (B, Hkv, G, P) @ (B, Hkv, P, D) -> (B, H*D)
        h = h + att @ wo[layer].T  # (B, H*D) -> (B, dim), residual
        x = rms(h, ffn_norm[layer])  # (B, dim)
        gate = x @ w1[layer].T  # (B, dim) -> (B, hidden)
        h = h + (gate * sigmoid(gate) * (x @ w3[layer].T)) @ w2[layer].T  # SwiGLU MLP, residual
    return rms(h, norm) @ output.T  # (B, dim) -> (B, V)


# ------------------------------------------------------------------ NF4 weights (nn/quant.py)
def nf4_dequantize(packed, scales, code, blocksize):
    """Blockwise 4-bit codes -> float values, flat: value j = code[nibble j] · scales[j // blocksize].

    packed: (n/2,) uint8, two codes per byte (high nibble first); scales: (n / blocksize,)
    float32; code: the 16 values (float32). Returns (n,) float32.
    """
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2], codes[1::2] = packed >> 4, packed & 0x0F  # unpack two codes per byte
    return (code[codes].reshape(-1, blocksize) * scales[:, None]).reshape(-1)  # (n,)


def nf4_linear(x, packed, scales, code, blocksize, out_features):
    """y = x · Ŵᵀ with Ŵ (out, in) the NF4 weight: x (N, in) float32 -> (N, out) float32."""
    n = x.shape[1] * out_features
    w = nf4_dequantize(packed, scales, code, blocksize)[:n].reshape(out_features, x.shape[1])  # (out, in)
    return x @ w.T  # (N, in) @ (in, out) -> (N, out)

"""Array-level kernels behind the autograd ops, with a switchable backend.

    from minillm import kernels
    kernels.set_kernels("numpy")   # every op runs the plain NumPy reference (reference.py)
    kernels.set_kernels("numba")   # the default: Numba kernels (_softmax.py, _attention.py, ...)

The initial backend comes from the environment variable MINILLM_KERNELS
(default "numba").  NUMBA_DISABLE_JIT=1 still works: the Numba kernels then run
as plain Python (slowly), which is handy in a debugger.

Each function here forwards to `reference.<name>` or to the Numba module's
`<name>`, which have identical signatures; see docs/kernels.md for speeds.
"""
import os

import numba
import numpy as np

# Numba's default OpenMP threading layer keeps its threads spinning after each parallel
# kernel; those spinning threads then fight OpenBLAS's threads for the same 2 cores during
# the matmuls that follow, making a training step 2-4x slower (benchmarks/train_step.py,
# measured here). The "workqueue" layer does not spin. Set NUMBA_THREADING_LAYER to override.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from . import reference  # noqa: E402
from ._attention import attention_backward as _nb_attention_backward
from ._decode import llama_decode_step as _nb_llama_decode_step
from ._attention import attention_forward as _nb_attention_forward
from ._elementwise import embedding_backward as _nb_embedding_backward
from ._elementwise import rope_backward as _nb_rope_backward
from ._elementwise import rope_forward as _nb_rope_forward
from ._elementwise import swiglu_backward as _nb_swiglu_backward
from ._elementwise import swiglu_forward as _nb_swiglu_forward
from ._matmul import matmul_numba
from ._norms import rmsnorm_backward as _nb_rmsnorm_backward
from ._norms import rmsnorm_forward as _nb_rmsnorm_forward
from ._optim import adamw_step as _nb_adamw_step
from ._softmax import cross_entropy_backward as _nb_cross_entropy_backward
from ._softmax import cross_entropy_forward as _nb_cross_entropy_forward
from ._softmax import log_softmax_backward as _nb_log_softmax_backward
from ._softmax import log_softmax_forward as _nb_log_softmax_forward
from ._softmax import softmax_backward as _nb_softmax_backward
from ._softmax import softmax_forward as _nb_softmax_forward

bool_mask_to_additive = reference.bool_mask_to_additive

BACKENDS = ("numba", "numpy")
_use_numba = True  # read on every call: a module global is the cheapest check


def set_kernels(name):
    """Select the kernel backend for every op: "numba" (default) or "numpy" (reference)."""
    global _use_numba
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; valid names: {', '.join(BACKENDS)}")
    _use_numba = name == "numba"


def get_kernels():
    """The current backend name, "numba" or "numpy"."""
    return "numba" if _use_numba else "numpy"


set_kernels(os.environ.get("MINILLM_KERNELS", "numba").strip().lower() or "numba")


# ------------------------------------------------------------------------ matmul
# Which implementation each shape class uses on the numba backend, measured by
# benchmarks/kernels.py (docs/kernels.md): OpenBLAS (np.matmul) won every class
# on the 2-core Zen 3 -- 2.3-4x over the Numba kernel -- so all say "blas".
# The Numba kernel stays available as `matmul_numba` (the teaching kernel).
MATMUL_DISPATCH = {
    "tiny": "blas",  # M*N*K < 32**3: per-call overhead dominates
    "batched": "blas",  # leading batch dims, e.g. attention scores (B*H, T, D) @ (B*H, D, T)
    "linear": "blas",  # 2-D or broadcast weight, e.g. (B*T, dim) @ (dim, hidden)
    "large": "blas",  # M, N, K >= 512
}


def matmul_shape_class(a_shape, b_shape, trans_a=False, trans_b=False):
    M = a_shape[-1] if trans_a else a_shape[-2]
    K = a_shape[-2] if trans_a else a_shape[-1]
    N = b_shape[-2] if trans_b else b_shape[-1]
    if M * N * K < 32**3:
        return "tiny"
    if min(M, N, K) >= 512:
        return "large"
    if len(a_shape) > 2 and len(b_shape) > 2:
        return "batched"
    return "linear"


_ALL_BLAS = all(v == "blas" for v in MATMUL_DISPATCH.values())


def matmul(a, b, trans_a=False, trans_b=False):
    """a @ b (np.matmul semantics, batch broadcasting); trans_* transposes the last two axes of a / b."""
    if _use_numba and not _ALL_BLAS and a.ndim >= 2 and b.ndim >= 2:
        if MATMUL_DISPATCH[matmul_shape_class(a.shape, b.shape, trans_a, trans_b)] == "numba":
            return matmul_numba(a, b, trans_a, trans_b)
    return reference.matmul(a, b, trans_a, trans_b)


# --------------------------------------------------------------- dispatchers
# Launching a parallel Numba kernel costs tens of microseconds (the worker threads must wake
# up), more than the whole NumPy reference needs for a small array; decoding one token at a
# time calls every kernel on a (1, 1, dim) input. So inputs below SMALL_INPUT elements run
# on the reference even on the "numba" backend (measured with benchmarks/generate.py: tiny-model
# greedy decoding went from ~300 to ~1000 tokens/s). Tests set it to 0 so Numba is always exercised.
SMALL_INPUT = 8192


def _fast(x) -> bool:
    return _use_numba and x.size >= SMALL_INPUT


def softmax_forward(x):
    return (_nb_softmax_forward if _fast(x) else reference.softmax_forward)(x)


def softmax_backward(y, gy):
    return (_nb_softmax_backward if _fast(y) else reference.softmax_backward)(y, gy)


def log_softmax_forward(x):
    return (_nb_log_softmax_forward if _fast(x) else reference.log_softmax_forward)(x)


def log_softmax_backward(y, gy):
    return (_nb_log_softmax_backward if _fast(y) else reference.log_softmax_backward)(y, gy)


def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    f = _nb_cross_entropy_forward if _fast(logits) else reference.cross_entropy_forward
    return f(logits, target, ignore_index, label_smoothing)


def cross_entropy_backward(logits, target, lse, grad_losses, ignore_index, label_smoothing):
    f = _nb_cross_entropy_backward if _fast(logits) else reference.cross_entropy_backward
    return f(logits, target, lse, grad_losses, ignore_index, label_smoothing)


def rmsnorm_forward(x, weight, eps):
    return (_nb_rmsnorm_forward if _fast(x) else reference.rmsnorm_forward)(x, weight, eps)


def rmsnorm_backward(x, weight, rstd, gy):
    return (_nb_rmsnorm_backward if _fast(x) else reference.rmsnorm_backward)(x, weight, rstd, gy)


def rope_forward(x, cos, sin):
    return (_nb_rope_forward if _fast(x) else reference.rope_forward)(x, cos, sin)


def rope_backward(gy, cos, sin):
    return (_nb_rope_backward if _fast(gy) else reference.rope_backward)(gy, cos, sin)


def swiglu_forward(a, b):
    return (_nb_swiglu_forward if _fast(a) else reference.swiglu_forward)(a, b)


def swiglu_backward(a, b, gy):
    return (_nb_swiglu_backward if _fast(a) else reference.swiglu_backward)(a, b, gy)


def attention_forward(q, k, v, mask, is_causal, scale):
    f = _nb_attention_forward if _fast(q) else reference.attention_forward
    return f(q, k, v, mask, is_causal, scale)


def attention_backward(q, k, v, mask, is_causal, scale, out, lse, gout):
    f = _nb_attention_backward if _fast(q) else reference.attention_backward
    return f(q, k, v, mask, is_causal, scale, out, lse, gout)


def embedding_backward(ids, gout, num_embeddings):
    return (_nb_embedding_backward if _fast(gout) else reference.embedding_backward)(ids, gout, num_embeddings)


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    f = _nb_adamw_step if _fast(param) else reference.adamw_step
    f(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)


def llama_decode_step(tokens, positions, cache_pos, key_valid, emb, attention_norm, wq, wk, wv, wo,
                      ffn_norm, w1, w2, w3, norm, output, cos, sin, k_cache, v_cache, eps):
    """One decode step of the whole LLaMA2 model (see reference.llama_decode_step). No SMALL_INPUT
    cut-off: this kernel exists precisely to make one-token steps a single call."""
    f = _nb_llama_decode_step if _use_numba else reference.llama_decode_step
    return f(tokens, positions, cache_pos, key_valid, emb, attention_norm, wq, wk, wv, wo,
             ffn_norm, w1, w2, w3, norm, output, cos, sin, k_cache, v_cache, eps)


__all__ = [
    "BACKENDS", "MATMUL_DISPATCH", "adamw_step", "attention_backward", "attention_forward",
    "bool_mask_to_additive", "cross_entropy_backward", "cross_entropy_forward", "embedding_backward",
    "get_kernels", "llama_decode_step", "log_softmax_backward", "log_softmax_forward", "matmul", "matmul_numba",
    "matmul_shape_class", "reference", "rmsnorm_backward", "rmsnorm_forward", "rope_backward",
    "rope_forward", "set_kernels", "softmax_backward", "softmax_forward", "swiglu_backward",
    "swiglu_forward",
]

"""Numba kernel: AdamW update in place, one pass over the four arrays."""
import math

import numpy as np
from numba import njit

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)
from ._threads import run_items_above
from . import reference


# Serial below PARALLEL_MIN elements, as the norms (_norms.py); above, spans of SPAN elements
# on the thread pool (`_threads.run_items`, a share starts in ~5-10 us; a `prange` launch cost
# 30-110 us, which is why round 2 kept every tiny / small tensor serial).  AdamW streams four
# arrays through memory once per tensor.  Elementwise: the same result either way.
PARALLEL_MIN = 131_072
SPAN = 16_384


# error_model="numpy": a division by zero gives inf as in NumPy (the reference) instead of a Python
# check on every element, which, with a range(i0, i1) loop's negative-index checks, kept the loop
# from vectorising. Views from 0 and this: 3.6x faster (7.7M elements, one thread, AMD Zen 4: 25.0 ->
# 7.0 ms), the same bits (IEEE sqrt and division either way; no fastmath).
@njit(cache=CACHE, error_model="numpy")
def adamw_span(p, g, m, v, decay, beta1, one_m_beta1, beta2, one_m_beta2, step_size, bc2_sqrt, eps, i0, i1):
    p, g, m, v = p[i0:i1], g[i0:i1], m[i0:i1], v[i0:i1]
    for i in range(i1 - i0):
        p[i] *= decay
        m[i] = m[i] * beta1 + one_m_beta1 * g[i]
        v[i] = v[i] * beta2 + one_m_beta2 * g[i] * g[i]
        p[i] -= step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)


@njit(cache=CACHE, nogil=True)
def adamw_items(p, g, m, v, decay, beta1, one_m_beta1, beta2, one_m_beta2, step_size, bc2_sqrt, eps, span, first, step):
    """Spans of `span` elements first, first + step, ... (one share of `run_items`)."""
    n = p.shape[0]
    for blk in range(first, (n + span - 1) // span, step):
        i0 = blk * span
        adamw_span(p, g, m, v, decay, beta1, one_m_beta1, beta2, one_m_beta2, step_size, bc2_sqrt, eps, i0, min(i0 + span, n))


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    arrays = (param, exp_avg, exp_avg_sq)
    if not all(a.flags.c_contiguous for a in arrays):  # in-place needs flat views
        return reference.adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)
    t = param.dtype.type
    args = (
        param.reshape(-1), np.ascontiguousarray(grad, dtype=param.dtype).reshape(-1),
        exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
        t(1 - lr * weight_decay), t(beta1), t(1 - beta1), t(beta2), t(1 - beta2),
        t(lr / (1 - beta1**step)), t(math.sqrt(1 - beta2**step)), t(eps),
    )
    run_items_above(PARALLEL_MIN, param.size, adamw_items, (param.size + SPAN - 1) // SPAN, *args, SPAN)

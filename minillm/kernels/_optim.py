"""Numba kernel: AdamW update in place, one pass over the four arrays."""
import math

import numpy as np
from numba import njit, prange

from ._cache import CACHE  # cache=True, or False where no folder is writable (_cache.py)
from . import reference


# Serial below PARALLEL_MIN elements, as the norms (_norms.py): AdamW streams four arrays
# through memory once, and a parallel launch costs 30-110 us here, more than one tiny-model
# parameter takes serially (the tiny / small models' tensors are all below 1.2M elements, and
# AdamW runs once per tensor: 29 launches a step).  A serial-only run never compiles the
# parallel driver (benchmarks/compile_cost.py).  Elementwise: the same result either way.
PARALLEL_MIN = 3_000_000
SPAN = 65536


@njit(cache=CACHE)
def adamw_span(p, g, m, v, decay, beta1, one_m_beta1, beta2, one_m_beta2, step_size, bc2_sqrt, eps, i0, i1):
    for i in range(i0, i1):
        p[i] *= decay
        m[i] = m[i] * beta1 + one_m_beta1 * g[i]
        v[i] = v[i] * beta2 + one_m_beta2 * g[i] * g[i]
        p[i] -= step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)


@njit(cache=CACHE, parallel=True)
def adamw_kernel(p, g, m, v, decay, beta1, one_m_beta1, beta2, one_m_beta2, step_size, bc2_sqrt, eps):
    n = p.shape[0]
    for blk in prange((n + SPAN - 1) // SPAN):
        i0 = np.int64(blk) * SPAN  # int64: prange's index is uint64 inside the parallel region
        adamw_span(p, g, m, v, decay, beta1, one_m_beta1, beta2, one_m_beta2, step_size, bc2_sqrt, eps, i0, min(i0 + SPAN, n))


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
    if param.size >= PARALLEL_MIN:
        adamw_kernel(*args)
    else:
        adamw_span(*args, 0, param.size)

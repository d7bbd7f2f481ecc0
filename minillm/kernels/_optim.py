"""Numba kernel: AdamW update in place, one pass over the four arrays."""
import math

import numpy as np
from numba import njit, prange

from . import reference


@njit(cache=True, parallel=True)
def adamw_kernel(p, g, m, v, decay, beta1, one_m_beta1, beta2, one_m_beta2, step_size, bc2_sqrt, eps):
    for i in prange(p.shape[0]):
        p[i] *= decay
        m[i] = m[i] * beta1 + one_m_beta1 * g[i]
        v[i] = v[i] * beta2 + one_m_beta2 * g[i] * g[i]
        p[i] -= step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    arrays = (param, exp_avg, exp_avg_sq)
    if not all(a.flags.c_contiguous for a in arrays):  # in-place needs flat views
        return reference.adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)
    t = param.dtype.type
    adamw_kernel(
        param.reshape(-1), np.ascontiguousarray(grad, dtype=param.dtype).reshape(-1),
        exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
        t(1 - lr * weight_decay), t(beta1), t(1 - beta1), t(beta2), t(1 - beta2),
        t(lr / (1 - beta1**step)), t(math.sqrt(1 - beta2**step)), t(eps),
    )

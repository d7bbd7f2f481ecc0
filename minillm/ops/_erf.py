"""The error function for exact GELU. NumPy has no ``erf``; ``math.erf`` is exact but scalar,
so we loop over it in a small Numba kernel (a plain Python loop when NUMBA_DISABLE_JIT=1)."""
import math

import numpy as np
from numba import njit


@njit(cache=True)
def _erf_flat(x, out):
    for i in range(x.size):
        out[i] = math.erf(x[i])


def erf(x: np.ndarray) -> np.ndarray:
    """Elementwise erf with the input's dtype. x: any shape."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    _erf_flat(flat, out)
    return out.reshape(x.shape)

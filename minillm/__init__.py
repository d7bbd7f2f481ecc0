"""minillm: the Happy LLM curriculum from scratch on a laptop CPU (NumPy + Numba).

    import minillm as mi
    import minillm.nn as nn
    import minillm.nn.functional as F

Names follow PyTorch (``mi.tensor``, ``mi.no_grad``, ``x.view``, ``F.cross_entropy``) so
the book's code reads the same here.

Importing minillm changes nothing process-wide except picking Numba's threading layer
(``kernels/__init__.py``). ``mi.tune_malloc()`` is the opt-in malloc setting for training
(``_runtime.py``), which the CLI, the examples and ``Trainer`` turn on.
"""
__version__ = "0.1.0"

from ._runtime import tune_malloc  # noqa: E402
from . import kernels  # noqa: E402  (before the ops, which dispatch through it)
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: E402
from .kernels import get_kernels, set_kernels  # noqa: E402
from .random import get_rng_state, manual_seed, set_rng_state  # noqa: E402
from .tensor import (  # noqa: E402
    Tensor, bool_, double, float16, float32, float64, get_default_dtype, int8, int16, int32, int64, long,
    set_default_dtype, uint8,
)
from .ops import (  # noqa: E402
    abs, amax, amin, arange, argmax, argmin, cat, chunk, clamp, clone, empty, exp, eye, flatten, from_numpy,
    full, full_like, gather, index_select, linspace, log, log_softmax, logsumexp, masked_fill, matmul, max,
    maximum, mean, min, minimum, ones, ones_like, permute, rand, randint, randn, randperm, relu, reshape,
    rsqrt, sigmoid, softmax, split, sqrt, squeeze, stack, std, sum, tanh, tensor, transpose, tril, triu,
    unsqueeze, var, where, zeros, zeros_like,
)
from . import nn  # noqa: E402
from . import optim  # noqa: E402

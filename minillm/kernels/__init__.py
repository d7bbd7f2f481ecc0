"""Array-level kernels behind the autograd ops, with one switchable backend.

    import minillm as mi
    mi.set_kernels("numpy")   # every kernel runs its plain NumPy twin (reference.py)
    mi.set_kernels("numba")   # the default: the Numba kernels (_softmax.py, _attention.py, ...)

This is the one switch for the whole library: the ops, the optimizers, the fused decode step
and the BPE tokenizer's kernels all follow it. Its initial value comes from the environment
variable MINILLM_KERNELS ("numba" or "numpy", read once at import). NUMBA_DISABLE_JIT=1 still
works: the Numba kernels then run as plain Python (slowly), which is handy in a debugger.

Every kernel below is a pair of functions with the same name and signature, one in
`reference.py` and one in a Numba module, tested equal to each other. Which one runs:

    backend "numpy"  ->  reference.<name>
    backend "numba"  ->  the Numba twin, except that an input smaller than SMALL_INPUT
                         elements runs on reference.<name> too (waking Numba's threads costs
                         more than the whole NumPy call); kernels with `size_arg=None` have
                         no such cut-off (serial kernels, or ones whose point is one call).
                         float16 inputs (fp16 mixed precision, train/amp.py) always take the
                         reference: Numba cannot compile float16 arithmetic.

`matmul` is np.matmul (OpenBLAS) on both backends: BLAS beat the blocked Numba kernel on every
shape measured, 2-15x (docs/kernels.md); that kernel stays as `matmul_numba`, the readable
blocked/packed GEMM. On "numba", `_matmul.matmul` splits the GEMM's rows over the kernel thread
pool with OpenBLAS single-threaded in each share (one pool for every kernel; why: _matmul.py).
"""
import functools
import os
import sys
import warnings

import numba
import numpy as np

from . import _attention, _decode, _elementwise, _norms, _optim, _quant, _softmax, reference
from . import _matmul
from ._matmul import matmul_numba  # noqa: F401  (the teaching GEMM; not dispatched to, see above)
from ._threads import run_items  # noqa: F401  (the kernel thread pool, for callers that split their own work: generation/fused.py)

BACKENDS = ("numba", "numpy")
_use_numba = True  # read on every call: a module global is the cheapest check

# Launching a parallel Numba kernel costs tens of microseconds (the worker threads must wake
# up), more than the whole NumPy reference needs for a small array; decoding one token at a
# time calls every kernel on a (1, 1, dim) input. So on the "numba" backend inputs below
# SMALL_INPUT elements run on the reference (measured with benchmarks/generate.py: tiny-model
# greedy decoding through the modules went from ~300 to ~1000 tokens/s).
SMALL_INPUT = 8192


def set_kernels(name):
    """Select the kernel backend for every op: "numba" (default) or "numpy" (reference)."""
    global _use_numba
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; valid names: {', '.join(BACKENDS)}")
    _use_numba = name == "numba"


def get_kernels():
    """The current backend name, "numba" or "numpy"."""
    return "numba" if _use_numba else "numpy"


def _dispatch(numba_fn, size_arg=0):
    """The public kernel of `numba_fn`'s name: reference.<name> or the Numba twin, chosen on
    every call (by the backend, and by the size of argument `size_arg` unless it is None).
    Both are looked up at call time, so a reference function patched in a notebook runs."""
    name, numba_module = numba_fn.__name__, sys.modules[numba_fn.__module__]

    if size_arg is None:
        def kernel(*args, **kwargs):
            return getattr(numba_module if _use_numba else reference, name)(*args, **kwargs)
    else:
        def kernel(*args):
            a = args[size_arg]
            if _use_numba and a.size >= SMALL_INPUT and a.dtype != np.float16:  # Numba has no float16 (mixed precision)
                return getattr(numba_module, name)(*args)
            return getattr(reference, name)(*args)

    kernel = functools.wraps(getattr(reference, name))(kernel)  # name, docstring, signature
    kernel.numba_module, kernel.size_arg = numba_module, size_arg  # for tests and curious readers
    return kernel


# ------------------------------------------------------------------ every kernel there is
matmul = _dispatch(_matmul.matmul, size_arg=None)  # np.matmul either way; "numba" splits it over the kernel threads
softmax_forward = _dispatch(_softmax.softmax_forward)
softmax_backward = _dispatch(_softmax.softmax_backward)
log_softmax_forward = _dispatch(_softmax.log_softmax_forward)
log_softmax_backward = _dispatch(_softmax.log_softmax_backward)
cross_entropy_forward = _dispatch(_softmax.cross_entropy_forward)
cross_entropy_backward = _dispatch(_softmax.cross_entropy_backward)
rmsnorm_forward = _dispatch(_norms.rmsnorm_forward)
rmsnorm_backward = _dispatch(_norms.rmsnorm_backward)
layernorm_forward = _dispatch(_norms.layernorm_forward)
layernorm_backward = _dispatch(_norms.layernorm_backward)
rope_forward = _dispatch(_elementwise.rope_forward)
rope_backward = _dispatch(_elementwise.rope_backward)
swiglu_forward = _dispatch(_elementwise.swiglu_forward)
swiglu_backward = _dispatch(_elementwise.swiglu_backward)
erf = _dispatch(_elementwise.erf, size_arg=None)  # serial: no threads to wake
embedding_backward = _dispatch(_elementwise.embedding_backward, size_arg=1)  # gout (N, C), not ids (N,)
attention_forward = _dispatch(_attention.attention_forward)
attention_backward = _dispatch(_attention.attention_backward)
adamw_step = _dispatch(_optim.adamw_step)
llama_decode_step = _dispatch(_decode.llama_decode_step, size_arg=None)  # its point: one call per token
nf4_dequantize = _dispatch(_quant.nf4_dequantize)  # packed codes (n/2,); _quant.nf4_linear (fused) is measured, not dispatched


set_kernels(os.environ.get("MINILLM_KERNELS", "numba").strip().lower() or "numba")


# ------------------------------------------------------------- Numba's threading layer
def _choose_threading_layer():
    """Numba's default OpenMP threading layer keeps its threads spinning after each parallel
    kernel; they then fight OpenBLAS's threads for the same cores in the matmuls that follow,
    making a training step 1.6-4x slower (benchmarks/train_step.py). The "workqueue" layer
    does not spin, so we pick it -- unless the user chose a layer (NUMBA_THREADING_LAYER or
    numba.config.THREADING_LAYER), or Numba already started one, which can no longer change:
    then we say so once, with the fix."""
    if "NUMBA_THREADING_LAYER" in os.environ or numba.config.THREADING_LAYER != "default":
        return
    try:
        running = numba.threading_layer()  # raises ValueError until the first parallel launch
    except ValueError:
        numba.config.THREADING_LAYER = "workqueue"
        return
    if running != "workqueue":
        warnings.warn(
            f"Numba's threading layer was started ({running!r}) before minillm was imported "
            "(numba.set_num_threads or a parallel Numba function ran first), so minillm cannot "
            f"select the non-spinning 'workqueue' layer: {running!r} threads spin and starve "
            "OpenBLAS, and a training step runs about 1.6x slower. Fix: import minillm before "
            "calling numba.set_num_threads, or set NUMBA_THREADING_LAYER=workqueue in the "
            f"environment (NUMBA_THREADING_LAYER={running} keeps this layer and silences this warning).",
            RuntimeWarning,
            stacklevel=_first_frame_outside_minillm(),
        )


def _first_frame_outside_minillm():
    """warnings.warn's stacklevel that points at the user's `import minillm` line (warnings
    itself skips importlib's frames, so they are not counted)."""
    level, frame = 1, sys._getframe(1)  # level 1: the function that calls warnings.warn
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith("importlib"):
            if name != "minillm" and not name.startswith("minillm."):
                return level
            level += 1
        frame = frame.f_back
    return 1


_choose_threading_layer()

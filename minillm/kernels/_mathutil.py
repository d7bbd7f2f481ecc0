"""Small helpers shared by the Numba kernels.

`fast_exp(x)`: for float32 a branch-free polynomial exp that LLVM can vectorise
(8 lanes on AVX2); Numba's own `math.exp` is a scalar libm call unless the
optional SVML runtime is installed.  For float64 it is plain `math.exp`, so the
float64 kernels keep full precision (the tests compare them to 1e-10).

Accuracy of the float32 path: max relative error ~1e-7 (1-2 ulp) on the whole
finite range; exp(x) = 0 for x < -87.34 (including -inf), inf above 88.72.
It is Cephes' `expf`: x = n*ln2 + r, |r| <= ln2/2, exp(r) by a degree-7
polynomial, 2**n built directly in the exponent bits.
"""
import math

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, lower_builtin, overload, register_jitable, type_callable


def fast_exp(x):
    """exp(x) in x's precision. (Pure-Python body runs only with NUMBA_DISABLE_JIT=1.)"""
    with np.errstate(over="ignore"):
        return np.exp(x)


def typed(x, value):
    """`value` as a scalar of x's dtype (keeps float32 kernels from drifting to float64)."""
    return x.dtype.type(value)


@intrinsic
def _int32_bits_as_float32(typingctx, i):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return sig, codegen


@register_jitable
def _expf32(x):
    lo = np.float32(-87.33654)
    hi = np.float32(88.72283)
    xc = min(max(x, lo), hi)
    n = np.float32(math.floor(xc * np.float32(1.44269504) + np.float32(0.5)))  # round(x / ln2)
    r = xc - n * np.float32(0.693359375)  # Cody-Waite: ln2 split in two parts
    r = r + n * np.float32(2.12194440e-4)
    z = r * r
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * z + r + np.float32(1.0)
    two_n = _int32_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))  # 2**n
    return np.float32(0.0) if x < lo else p * two_n


@overload(fast_exp)
def _fast_exp_overload(x):
    if x == types.float32:
        return lambda x: _expf32(x)
    return lambda x: math.exp(x)


# `typed` is written for the cold start (benchmarks/README.md, "Cold start"): Numba compiles an
# @overload's implementation once per signature *and per set of compile flags of its caller*
# (fastmath, error_model, nogil, ...), ~20 ms each; as an @overload `typed` compiled 8 times in a
# --quick run. Its typing and its one LLVM cast are now given directly (`type_callable` /
# `lower_builtin`, which Numba inlines at every call): nothing is compiled. (`fast_exp` returning
# `_expf32` itself instead of the lambda measured no better: the lambda layer costs 4 small
# compilations, but without it `_expf32` is compiled once per caller flag set, 4 instead of 3.)
@type_callable(typed)
def _typed_typer(context):
    def typer(x, value):
        if isinstance(x, types.Array) and isinstance(value, (types.Number, types.Boolean)):
            return x.dtype(x, value)

    return typer


@lower_builtin(typed, types.Array, types.Number)
@lower_builtin(typed, types.Array, types.Boolean)
def _typed_lower(context, builder, sig, args):
    return context.cast(builder, args[1], sig.args[1], sig.return_type)  # what x.dtype.type(value) compiles to


def prefetch(a, i, j):
    """Ask the CPU to start loading the cache line of a[i, j] (a 2-D array), without waiting for it.
    A hint only: nothing is read or written, and results do not change. (A no-op in plain Python.)

    Why: the hardware prefetcher follows one long sequential read well, but not several short ones
    read side by side, such as the four weight rows of one `_decode._matvec` block (benchmarks/README.md,
    "Round 8"). Like `typed`, typed and lowered directly, so nothing is compiled for it."""


@type_callable(prefetch)
def _prefetch_typer(context):
    def typer(a, i, j):
        if isinstance(a, types.Array) and a.ndim == 2 and isinstance(i, types.Integer) and isinstance(j, types.Integer):
            return types.none(a, i, j)

    return typer


@lower_builtin(prefetch, types.Array, types.Integer, types.Integer)
def _prefetch_lower(context, builder, sig, args):
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    index = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:])]
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, index)
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
    # (address, 0 = for reading, 3 = keep in every cache level, 1 = data cache)
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
    return context.get_dummy_value()

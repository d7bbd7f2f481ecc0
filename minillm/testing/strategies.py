"""Hypothesis strategies for op tests: small shapes, broadcastable pairs, non-contiguous
arrays, bounded finite floats and safe input domains per op.

Everything is small on purpose: gradcheck evaluates the op twice per input element.

>>> from hypothesis import given
>>> @given(arrays(shapes()))
... def test_exp(x): ...
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = [
    "shapes", "broadcastable_shapes", "floats", "arrays", "noncontiguous_arrays", "array_pair",
    "DOMAINS",
]

# Input domains per op family (low, high, min distance from a kink/singularity at 0).
DOMAINS = {
    "any": (-3.0, 3.0, 0.0),
    "positive": (0.1, 3.0, 0.0),  # log, sqrt, rsqrt, pow base
    "nonzero": (-3.0, 3.0, 0.1),  # divisors; abs/relu kinks
}


def shapes(min_dims: int = 0, max_dims: int = 4, min_side: int = 1, max_side: int = 4):
    """Shapes with up to ``max_dims`` dims, each 1..``max_side`` long."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(min_dims: int = 0, max_dims: int = 3, max_side: int = 3):
    """A pair of shapes that broadcast together (dims of size 1, missing leading dims)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=2, min_dims=min_dims, max_dims=max_dims, max_side=max_side
    ).map(lambda r: r.input_shapes)


def floats(domain: str = "any"):
    lo, hi, gap = DOMAINS[domain]
    f = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    if gap:
        f = f.filter(lambda v: abs(v) >= gap)
    return f


def arrays(shape, domain: str = "any", dtype=np.float64):
    """A float array of ``shape`` (a shape or a strategy of shapes) with values in ``domain``."""
    lo, hi, gap = DOMAINS[domain]
    shape_st = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))

    @st.composite
    def build(draw):
        shp = draw(shape_st)
        seed = draw(st.integers(0, 2**31 - 1))
        rng = np.random.default_rng(seed)
        x = rng.uniform(lo, hi, size=shp)
        if gap:  # push values out of (-gap, gap), keeping their sign
            x = np.where(np.abs(x) < gap, np.copysign(gap, x) + np.sign(x + 1e-12) * gap, x)
        return x.astype(dtype)

    return build()


def noncontiguous_arrays(shape, domain: str = "any", dtype=np.float64):
    """Like ``arrays`` but returned as a non-contiguous view (transposed or strided) of a bigger array."""
    shape_st = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))

    @st.composite
    def build(draw):
        shp = draw(shape_st)
        kind = draw(st.sampled_from(["reverse_permute", "stride"]))
        if kind == "reverse_permute" or not shp:
            base = draw(arrays(tuple(reversed(shp)), domain, dtype))
            return base.transpose()  # (..reversed) -> shp, a permuted view
        big = draw(arrays(tuple(2 * s for s in shp), domain, dtype))
        return big[tuple(slice(None, None, 2) for _ in shp)]  # every other element: strided view

    return build()


def array_pair(domain_a: str = "any", domain_b: str = "any", max_dims: int = 3):
    """Two arrays with mutually broadcastable shapes."""

    @st.composite
    def build(draw):
        sa, sb = draw(broadcastable_shapes(max_dims=max_dims))
        return draw(arrays(sa, domain_a)), draw(arrays(sb, domain_b))

    return build()

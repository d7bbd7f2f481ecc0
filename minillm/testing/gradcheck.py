"""Gradient checking by central finite differences, in float64, over every input element.

For a function f of tensors x_1..x_n we reduce its output to a scalar with fixed random
weights w (L = Σ f(x)·w, so every output element matters), then compare

    analytic:  dL/dx[i]   from backward()
    numeric:   (L(x[i] + eps) - L(x[i] - eps)) / (2·eps)

for every element i of every input that requires grad.

``directions=k`` is the cheap variant for whole models, whose layers each have their own
element-wise check: per input, k random unit directions v, comparing the analytic directional
derivative Σ grad·v with the numeric one, (L(x + εv) − L(x − εv)) / 2ε refined by Richardson
extrapolation (the way JAX's ``check_grads`` tests along random tangents). That is 4k forward
passes per input instead of 2 per element; a wrong gradient almost surely changes Σ grad·v, and
a mismatch falls back to the element-wise check of that input, which names the element.
"""
from __future__ import annotations

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor


class GradcheckError(AssertionError):
    pass


def _directions_agree(fn, inputs, index, analytic, weights, k, rng, atol, rtol) -> bool:
    for _ in range(k):
        v = rng.standard_normal(analytic.shape)
        v /= max(np.linalg.norm(v), 1e-300)  # unit length: the step ε means the same for every input size
        numeric = directional_grad(fn, inputs, index, v, weights=weights)
        if abs(float(np.sum(analytic * v)) - numeric) > atol + rtol * abs(numeric):
            return False
    return True


def _as_inputs(inputs):
    out = []
    for x in inputs if isinstance(inputs, (list, tuple)) else (inputs,):
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            x = Tensor(x.astype(np.float64), requires_grad=True)
        out.append(x)
    return out


def _scalar(out: Tensor, weights: np.ndarray) -> float:
    return float(np.sum(out.data.astype(np.float64) * weights))


def numerical_grad(fn, inputs, index: int, eps: float = 1e-6, weights=None) -> np.ndarray:
    """d Σ(fn(*inputs)·weights) / d inputs[index] by central differences (inputs changed in place and restored)."""
    x = inputs[index]
    with no_grad():
        if weights is None:
            weights = np.ones(fn(*inputs).shape)
        grad = np.zeros(x.shape, dtype=np.float64)
        it = np.nditer(x.data, flags=["multi_index"])
        for _ in it:
            idx = it.multi_index
            orig = x.data[idx]
            x.data[idx] = orig + eps
            plus = _scalar(fn(*inputs), weights)
            x.data[idx] = orig - eps
            minus = _scalar(fn(*inputs), weights)
            x.data[idx] = orig
            grad[idx] = (plus - minus) / (2 * eps)
    return grad


def directional_grad(fn, inputs, index: int, direction: np.ndarray, eps: float = 1e-4, weights=None) -> float:
    """d Σ(fn(*inputs)·weights) / dt of inputs[index] + t·direction at t = 0, by central differences at
    steps ε and 2ε combined by Richardson extrapolation (truncation error O(ε⁴), not O(ε²))."""
    x = inputs[index]
    orig = x.data.copy()

    def at(t):
        x.data[...] = orig + t * direction
        return _scalar(fn(*inputs), weights)

    with no_grad():
        if weights is None:
            weights = np.ones(fn(*inputs).shape)
        try:
            d1 = (at(eps) - at(-eps)) / (2 * eps)
            d2 = (at(2 * eps) - at(-2 * eps)) / (4 * eps)
        finally:
            x.data[...] = orig
    return (4 * d1 - d2) / 3


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0, name: str | None = None,
              directions: int | None = None) -> bool:
    """Check ``fn``'s backward against central differences; raise ``GradcheckError`` naming
    the input, element index, numeric and analytic values on the first mismatch.

    ``inputs``: tensors (float64, ``requires_grad=True`` for those to check) or float arrays
    (turned into float64 tensors that require grad). Non-tensor items are passed through.
    ``directions``: None checks every element; an int k checks k random directional derivatives
    per input (see the module docstring), with tolerance ``atol + rtol·|numeric|`` scaled down 100x
    because a directional derivative averages an element's error with the others'.
    Returns True when every element (or direction) matches.
    """
    inputs = _as_inputs(inputs)
    label = name or getattr(fn, "__name__", "fn")
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64")
        inputs[i].grad = None
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: {label} must return a Tensor, got {type(out).__name__}")
    weights = np.random.default_rng(seed).uniform(0.5, 1.5, size=out.shape)  # positive, so no cancellations
    if out.requires_grad:
        out.backward(Tensor(weights.astype(out.dtype)))
    if directions is not None and (isinstance(directions, bool) or not isinstance(directions, int) or directions < 1):
        raise ValueError(f"gradcheck: directions must be None or a positive int, got {directions!r}")
    rng = np.random.default_rng(seed + 1)
    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.shape) if x.grad is None else x.grad.data.astype(np.float64)
        if directions is not None and x.data.size > 2 * directions:  # else element-wise is as cheap
            if _directions_agree(fn, inputs, i, analytic, weights, directions, rng, atol / 100, rtol / 100):
                continue  # else: the element-wise check below names the element
        numeric = numerical_grad(fn, inputs, i, eps, weights)
        bad = ~np.isclose(analytic, numeric, atol=atol, rtol=rtol)
        if bad.any():
            idx = tuple(int(j) for j in np.argwhere(bad)[0])
            raise GradcheckError(
                f"gradcheck failed for {label}: input {i} (shape {x.shape}) at index {idx}: "
                f"numeric {numeric[idx]:.8g}, analytic {analytic[idx]:.8g} "
                f"({int(bad.sum())} of {bad.size} elements differ; atol={atol}, rtol={rtol})"
            )
    return True

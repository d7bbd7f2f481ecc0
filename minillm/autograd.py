"""Reverse-mode automatic differentiation (Happy LLM ch. 2 builds on it; see micrograd / DeZero).

The whole idea on one screen:

* Every differentiable op is a :class:`Function` subclass with a ``forward(ctx, *arrays)``
  that computes the result with NumPy and a ``backward(ctx, grad)`` right next to it that
  returns one gradient per input (the chain rule for that op only).
* ``Function.apply`` runs ``forward`` and, when a gradient will be needed, records the node
  on the output tensor (``out.grad_fn``). The node keeps its *inputs*; outputs keep the
  node. Nothing points back from a node to its outputs, so a graph never keeps itself
  alive through a reference cycle and memory stays flat over long training runs.
* ``backward`` sorts the graph topologically with an explicit stack (no recursion limit,
  a chain of 100,000 ops is fine), then walks it from the output to the leaves,
  summing the gradients of values used more than once, and accumulating into ``.grad``
  of leaf tensors.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

__all__ = [
    "Function",
    "Context",
    "no_grad",
    "enable_grad",
    "set_grad_enabled",
    "is_grad_enabled",
    "unbroadcast",
    "backward",
]


# --------------------------------------------------------------------------- grad mode
class _GradMode(threading.local):
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """True unless we are inside ``no_grad()``."""
    return _grad_mode.enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager / decorator that turns graph recording on or off."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.prev = None

    def __enter__(self):
        self.prev = _grad_mode.enabled
        _grad_mode.enabled = self.mode
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self.prev
        return False


class no_grad(set_grad_enabled):
    """``with mi.no_grad():``, ``@mi.no_grad()`` or ``@mi.no_grad`` — run without recording a
    graph (inference, optimizer updates). Saves the memory of every intermediate."""

    def __new__(cls, orig_func=None):
        if orig_func is None:
            return super().__new__(cls)
        return cls()(orig_func)  # used as a bare decorator: wrap the function

    def __init__(self, orig_func=None):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    def __init__(self):
        super().__init__(True)


# --------------------------------------------------------------------------- broadcasting
def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Undo NumPy broadcasting: sum ``grad`` down to ``shape``.

    If ``x`` of shape ``(3, 1)`` was broadcast to ``(2, 3, 4)`` in the forward pass, each
    element of ``x`` was used 2*4 times, so its gradient is the sum over those copies:
    sum the leading axis that was added, then the axis of size 1 (keeping it).

    >>> unbroadcast(np.ones((2, 3, 4)), (3, 1)).tolist()
    [[8.0], [8.0], [8.0]]
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    n_extra = grad.ndim - len(shape)
    if n_extra < 0:
        raise ValueError(f"unbroadcast: gradient shape {grad.shape} has fewer dims than {shape}")
    axes = tuple(range(n_extra))  # leading axes added by broadcasting
    axes += tuple(n_extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[n_extra + i] != 1)
    out = grad.sum(axis=axes, keepdims=True) if axes else grad
    if n_extra:
        out = out.reshape(out.shape[n_extra:])
    if out.shape != shape:
        raise ValueError(f"unbroadcast: cannot reduce gradient of shape {grad.shape} to {shape}")
    return out


# --------------------------------------------------------------------------- Function
class Context:
    """What a node remembers between forward and backward."""

    __slots__ = ("saved", "needs_input_grad", "inputs", "attrs", "__dict__")

    def __init__(self):
        self.saved = ()
        self.needs_input_grad = ()
        self.inputs = ()

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Function:
    """Base class of every differentiable op.

    Subclasses implement two static methods side by side::

        class Mul(Function):
            @staticmethod
            def forward(ctx, a, b):            # NumPy arrays in, NumPy array out
                ctx.save_for_backward(a, b)
                return a * b

            @staticmethod
            def backward(ctx, grad):           # one gradient per Tensor input
                a, b = ctx.saved
                return unbroadcast(grad * b, a.shape), unbroadcast(grad * a, b.shape)

    Call them with ``Mul.apply(x, y)``. Non-tensor arguments (ints, axes, flags) are passed
    through to ``forward`` unchanged and get no gradient.
    """

    def __init_subclass__(cls, **kwargs):
        # Catch a missing half when the op is defined, not at its first backward pass.
        super().__init_subclass__(**kwargs)
        for name in ("forward", "backward"):
            if not callable(getattr(cls, name, None)):
                raise TypeError(f"{cls.__name__} must define a static method {name}(ctx, ...) to be a Function")

    @classmethod
    def apply(cls, *args, **kwargs):
        from .tensor import Tensor

        tensor_inputs = [a for a in args if isinstance(a, Tensor)]
        raw_args = [a.data if isinstance(a, Tensor) else a for a in args]
        ctx = _Node(cls)
        ctx.needs_input_grad = tuple(t.requires_grad for t in tensor_inputs)
        out_data = cls.forward(ctx, *raw_args, **kwargs)
        requires_grad = _grad_mode.enabled and any(ctx.needs_input_grad)
        out = Tensor._wrap(out_data, requires_grad=requires_grad)
        if requires_grad:
            ctx.inputs = tuple(tensor_inputs)
            out.grad_fn = ctx
        return out


class _Node(Context):
    """A recorded op in the graph: the Function class, its saved arrays and its inputs."""

    __slots__ = ("fn", "freed")

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.freed = False

    def name(self) -> str:
        return f"{self.fn.__name__}Backward"

    def __repr__(self):
        return f"<{self.name()}>"


# --------------------------------------------------------------------------- the engine
def _topological_order(root_node):
    """Nodes reachable from ``root_node``, each after every node that consumes it.

    Iterative DFS with an explicit stack, so deep graphs never hit Python's recursion limit.
    """
    order, visited = [], set()
    stack = [(root_node, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for inp in node.inputs:
            if inp.grad_fn is not None and id(inp.grad_fn) not in visited:
                stack.append((inp.grad_fn, False))
    order.reverse()  # root first, leaves' producers last
    return order


def backward(tensor, gradient=None, retain_graph: bool = False):
    """Backpropagate from ``tensor`` and accumulate ``.grad`` on the leaves that need it."""
    from .tensor import Tensor

    if not tensor.requires_grad:
        raise RuntimeError(
            "backward(): this tensor does not require grad and has no grad_fn "
            "(was it computed inside no_grad(), or from tensors without requires_grad=True?)"
        )
    if gradient is None:
        if tensor.data.size != 1:
            raise RuntimeError(
                f"backward(): grad can be implicitly created only for scalar outputs, got shape "
                f"{tensor.shape}; pass gradient= of the same shape (or call .sum() first)"
            )
        grad = np.ones_like(tensor.data)
    else:
        grad = gradient.data if isinstance(gradient, Tensor) else np.asarray(gradient)
        if grad.shape != tensor.shape:
            raise ValueError(f"backward(): gradient shape {grad.shape} does not match tensor shape {tensor.shape}")
        grad = grad.astype(tensor.dtype, copy=False)

    if tensor.grad_fn is None:  # a leaf: d tensor / d tensor = 1
        tensor._accumulate_grad(grad)
        return

    grads = {id(tensor.grad_fn): grad}  # node id -> gradient w.r.t. that node's output
    for node in _topological_order(tensor.grad_fn):
        g_out = grads.pop(id(node), None)
        if g_out is None:  # no gradient flows into this node (e.g. its output was only used by argmax)
            continue
        if node.freed:
            raise RuntimeError(
                f"backward(): trying to backward through {node.name()} a second time; its saved "
                "values were freed. Pass retain_graph=True to the first backward() to keep them."
            )
        in_grads = node.fn.backward(node, g_out)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        if len(in_grads) != len(node.inputs):
            raise RuntimeError(
                f"{node.name()} returned {len(in_grads)} gradients for {len(node.inputs)} tensor inputs"
            )
        for inp, g in zip(node.inputs, in_grads):
            if g is None or not inp.requires_grad:
                continue
            if g.shape != inp.shape:  # every backward must undo its own broadcasting
                raise RuntimeError(f"{node.name()} returned a gradient of shape {g.shape} for an input of shape {inp.shape}")
            if g.dtype != inp.dtype:
                g = g.astype(inp.dtype)
            if inp.grad_fn is None:
                inp._accumulate_grad(g)
            else:
                key = id(inp.grad_fn)
                if key in grads:
                    grads[key] = grads[key] + g  # a value used twice receives both gradients
                else:
                    grads[key] = g
                if inp._retains_grad:
                    inp._accumulate_grad(g)
        if not retain_graph:
            # Free what the node holds (saved arrays and its inputs, hence their activations)
            # so memory is released now, not when the caller drops the loss tensor.
            node.saved = ()
            node.inputs = ()
            node.__dict__.clear()
            node.freed = True


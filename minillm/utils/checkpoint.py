"""Gradient checkpointing: keep a block's input, forget its activations, recompute them in backward
(``torch.utils.checkpoint``; the book's ``gradient_checkpointing=True``, Happy LLM 6.1).

Backward needs what forward computed: for a decoder layer the normed inputs, q, k, v, the
attention weights, the MLP's hidden activations -- tens of (B, T, dim)-sized arrays per layer, kept
alive from the forward pass until backward reaches that layer. At long sequence lengths they, not
the weights, fill the memory. ``checkpoint(fn, x, ...)`` trades compute for memory:

    forward:   out = fn(x) under no_grad       -> no graph, no activations; keep only x (and the RNG state)
    backward:  out = fn(x) again, with grad    -> the activations of this one block, briefly
               backward(out, grad_out)         -> grads of x (returned) and of fn's weights (accumulated)

So peak activation memory falls from "every layer's activations" to "every layer's *input* plus
one layer's activations", for one extra forward pass (~30% more compute). The randomness inside
``fn`` (dropout) is replayed exactly: the generator's state is saved before the first run and
restored for the recomputation, so both see the same masks (``tests/test_checkpoint.py``).

Limits: ``fn`` must return one Tensor; at least one Tensor argument must require grad (else
there is nothing to recompute for, and ``fn`` simply runs). Non-Tensor arguments (RoPE tables,
masks) are passed through unchanged.
"""
from __future__ import annotations

import warnings

from ..autograd import Function, backward, enable_grad, is_grad_enabled, no_grad
from ..random import get_rng_state, set_rng_state
from ..tensor import Tensor

__all__ = ["checkpoint"]


class _Checkpoint(Function):
    """The recorded node: forward runs ``fn`` without a graph; backward recomputes it with one."""

    @staticmethod
    def forward(ctx, fn, tensor_pos, preserve_rng_state, *args, **kwargs):
        ctx.function, ctx.tensor_pos, ctx.args, ctx.kwargs = fn, tensor_pos, args, kwargs  # (ctx.fn is the node's Function class)
        ctx.rng = get_rng_state() if preserve_rng_state else None
        with no_grad():
            out = fn(*_rebuild(args, tensor_pos, None), **kwargs)
        if not isinstance(out, Tensor):
            raise TypeError(f"checkpoint: the function must return one Tensor, got {type(out).__name__}")
        return out.data

    @staticmethod
    def backward(ctx, grad):
        needs = ctx.needs_input_grad
        inputs = _rebuild(ctx.args, ctx.tensor_pos, needs)  # fresh leaves: their .grad is d loss / d input
        leaves = [inputs[i] for i in ctx.tensor_pos]
        rng_now = get_rng_state()
        if ctx.rng is not None:
            set_rng_state(ctx.rng)  # the same dropout masks as the first run
        try:
            with enable_grad():
                out = ctx.function(*inputs, **ctx.kwargs)
            backward(out, grad)  # the weights inside fn are leaves: their .grad accumulates here
        finally:
            set_rng_state(rng_now)
        return tuple(leaf.grad.data if (need and leaf.grad is not None) else None for leaf, need in zip(leaves, needs))


def _rebuild(args, tensor_pos, needs):
    """The call's arguments with Tensors in their places (as fresh leaves when ``needs`` is given)."""
    out = list(args)
    for k, i in enumerate(tensor_pos):
        out[i] = Tensor(args[i], requires_grad=bool(needs[k]) if needs is not None else False)
    return out


def checkpoint(function, *args, use_reentrant=None, preserve_rng_state: bool = True, **kwargs):
    """``function(*args, **kwargs)``, saving memory by recomputing its activations in backward.

    ``use_reentrant`` is accepted for PyTorch compatibility (we implement the reentrant form:
    backward runs a second, nested backward over the recomputed block).
    """
    if not callable(function):
        raise TypeError(f"checkpoint: function must be callable, got {type(function).__name__}")
    tensor_pos = tuple(i for i, a in enumerate(args) if isinstance(a, Tensor))
    if not is_grad_enabled() or not any(args[i].requires_grad for i in tensor_pos):
        if is_grad_enabled() and not getattr(checkpoint, "_warned", False):
            checkpoint._warned = True
            warnings.warn("checkpoint: none of the Tensor inputs requires grad, so nothing is checkpointed "
                          "(the function runs normally)", stacklevel=2)
        return function(*args, **kwargs)
    raw = [a.data if isinstance(a, Tensor) else a for a in args]
    # Function.apply turns Tensor arguments into arrays; pass them as Tensors so it records them as inputs
    call = [args[i] if i in tensor_pos else raw[i] for i in range(len(args))]
    return _Checkpoint.apply(function, tensor_pos, preserve_rng_state, *call, **kwargs)

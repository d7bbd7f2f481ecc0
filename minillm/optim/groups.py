"""Which weights get weight decay (Happy LLM 4.2; nanoGPT's and llama2.c's ``configure_optimizers``).

Weight decay pulls weights towards 0. That is a sensible prior for the big matrices
(attention and MLP projections), but not for

* **biases** and **norm gains** (1-D): shrinking an RMSNorm gain towards 0 just fights
  the normalisation, and these few values do not cause over-fitting;
* **embeddings**: each row is only updated when its token appears, so decay would
  keep shrinking the rows of rare tokens between their updates.

So the parameters are split into two groups::

    decay     : >= 2-D and the name mentions none of "norm", "bias", "embed"
    no decay  : everything else (1-D, or named like a norm / bias / embedding)

    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=3e-4)

(Note for tied weights: with ``output.weight`` shared with ``tok_embeddings.weight`` the
tensor is listed once, under its first name, so it is not decayed.)
"""
from __future__ import annotations

from ..tensor import Tensor

__all__ = ["param_groups_for_weight_decay", "NO_DECAY_NAME_PARTS"]

NO_DECAY_NAME_PARTS = ("norm", "bias", "embed")


def _named_params(model_or_named_params) -> list:
    """``(name, tensor)`` pairs from a Module, a dict, or an iterable of pairs."""
    obj = model_or_named_params
    if hasattr(obj, "named_parameters"):
        pairs = obj.named_parameters()
    elif isinstance(obj, dict):
        pairs = obj.items()
    else:
        pairs = obj
    pairs = list(pairs)
    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], Tensor)):
            raise TypeError(
                "param_groups_for_weight_decay needs a model with named_parameters(), a dict name -> Tensor, "
                f"or (name, Tensor) pairs; got an item {type(item).__name__}"
            )
    return pairs


def param_groups_for_weight_decay(model_or_named_params, weight_decay: float,
                                  no_decay_name_parts=NO_DECAY_NAME_PARTS) -> list:
    """Two param groups: ``[{"params", "param_names", "weight_decay": wd}, {..., "weight_decay": 0.0}]``.

    Parameters with ``requires_grad=False`` (frozen, e.g. under LoRA) are left out. A
    tensor that appears under two names (tied weights) is listed once. Both groups are
    always returned (one may be empty) so the optimizer's layout, and hence its
    checkpoints, do not depend on the model's contents.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    decay, no_decay = ([], []), ([], [])  # (names, tensors)
    seen = set()
    for name, p in _named_params(model_or_named_params):
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        lowered = name.lower()
        if p.ndim >= 2 and not any(part in lowered for part in no_decay_name_parts):
            bucket = decay
        else:
            bucket = no_decay
        bucket[0].append(name)
        bucket[1].append(p)
    return [
        {"params": decay[1], "param_names": decay[0], "weight_decay": float(weight_decay)},
        {"params": no_decay[1], "param_names": no_decay[0], "weight_decay": 0.0},
    ]

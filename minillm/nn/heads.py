"""What every language-model head shares: the mean token cross-entropy of its logits.

Decoder-only (LLaMA, GPT), encoder-decoder (the ch.2 Transformer, T5) and masked LMs (BERT)
all train on ``F.cross_entropy`` over the flattened positions with ``ignore_index=-100``
(PyTorch's and Hugging Face's convention for "no label here": padding, prompt tokens in SFT,
unmasked tokens in MLM). ``lm_loss`` checks the labels once, the same way for every model.
"""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor
from . import functional as F

__all__ = ["lm_loss"]


def lm_loss(logits: Tensor, targets, shape: tuple, who: str, what: str = "input_ids", name: str = "targets") -> Tensor:
    """Mean cross-entropy of ``logits`` (B, T, V) against ``targets`` (B, T) int, -100 = ignored.

    ``shape`` is the shape the labels must have (that of ``what``, the model's input ids);
    ``who`` names the model in errors and ``name`` the labels' argument (``labels`` in
    Hugging Face's models).
    """
    y = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    if y.shape != tuple(shape):
        raise ValueError(f"{who}: {name} must have the shape of {what} {tuple(shape)}, got {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{who}: {name} must be integer token ids, got dtype {y.dtype}")
    return F.cross_entropy(
        logits.view(-1, logits.shape[-1]), Tensor._wrap(y.reshape(-1).astype(np.int64, copy=False)), ignore_index=-100
    )  # (B·T, V), (B·T,) -> scalar

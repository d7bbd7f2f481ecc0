"""``minillm.nn.functional`` (import as ``F``): the functional ops, PyTorch names and signatures.

>>> import minillm.nn.functional as F
>>> F.cross_entropy(logits.view(-1, vocab), targets.view(-1), ignore_index=-100)
"""
from ..ops import (  # noqa: F401
    cross_entropy,
    dropout,
    embedding,
    gelu,
    layer_norm,
    linear,
    log_softmax,
    logsigmoid,
    manual_attention,
    mse_loss,
    relu,
    rms_norm,
    rotary_embedding,
    scaled_dot_product_attention,
    sigmoid,
    silu,
    softmax,
    swiglu,
    tanh,
)

__all__ = [
    "cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "linear", "log_softmax", "logsigmoid",
    "manual_attention", "mse_loss", "relu", "rms_norm", "rotary_embedding",
    "scaled_dot_product_attention", "sigmoid", "silu", "softmax", "swiglu", "tanh",
]

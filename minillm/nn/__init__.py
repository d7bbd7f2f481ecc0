"""``minillm.nn``: ``Module`` and ``Parameter``, containers, layers, ``init`` and the functional ops.

    import minillm.nn as nn
    import minillm.nn.functional as F

    layer = nn.Linear(4, 8, bias=False)
    nn.init.normal_(layer.weight, mean=0.0, std=0.02)
"""
from . import functional  # noqa: F401
from . import init  # noqa: F401
from .attention import MultiHeadAttention
from .ffn import FeedForward
from .kv_cache import KVCache
from .layers import Dropout, Embedding, Identity, LayerNorm, Linear, RMSNorm
from .module import IncompatibleKeys, Module, ModuleDict, ModuleList, Parameter, Sequential
from .positional import LearnedPositionalEmbedding, RelativePositionBias, SinusoidalPositionalEncoding
from .rnn import LSTM, LSTMCell

__all__ = [
    "functional", "init", "Module", "Parameter", "ModuleList", "ModuleDict", "Sequential", "IncompatibleKeys",
    "Linear", "Embedding", "RMSNorm", "LayerNorm", "Dropout", "Identity", "KVCache", "MultiHeadAttention",
    "FeedForward", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding", "RelativePositionBias", "LSTMCell", "LSTM",
]

"""Differentiable ops. Each module holds a few ``Function`` classes and their public functions.

    elementwise.py  + - * / ** neg exp log sqrt rsqrt abs tanh sigmoid logsigmoid relu gelu silu clamp where ...
    reduce.py       sum mean max min amax amin var std logsumexp argmax argmin
    shape.py        reshape/view transpose permute expand squeeze unsqueeze flatten cat stack split chunk tril triu
    index.py        x[...] gather index_select (scatter-add backward)
    matmul.py       @
    softmax.py      softmax log_softmax (fused)
    loss.py         cross_entropy (fused with log-softmax) mse_loss
    layers.py       linear embedding dropout
    norm.py         rms_norm, layer_norm (both fused), layer_norm_composite (the readable version)
    rope.py         rotary_embedding (fused)
    swiglu.py       swiglu (fused)
    attention.py    scaled_dot_product_attention (fused, flash-style) and manual_attention
"""
from ._util import normalize_dim
from .attention import manual_attention, scaled_dot_product_attention
from .creation import (
    arange, empty, eye, from_numpy, full, full_like, linspace, ones, ones_like, rand, randint, randn,
    randperm, tensor, zeros, zeros_like,
)
from .elementwise import (
    abs, add, clamp, clone, compare, div, exp, gelu, log, logsigmoid, masked_fill, maximum, minimum, mul, neg, pow,
    relu, rsqrt, sigmoid, silu, sqrt, sub, tanh, to_dtype, where,
)
from .index import gather, getitem, index_select, raw_index
from .layers import dropout, embedding, linear
from .loss import cross_entropy, mse_loss
from .matmul import matmul
from .norm import layer_norm, rms_norm
from .reduce import amax, amin, argmax, argmin, logsumexp, max, mean, min, std, sum, var
from .rope import rotary_embedding
from .shape import (
    cat, chunk, contiguous, expand, flatten, permute, repeat_interleave, reshape, split, squeeze, stack,
    transpose, tril, triu, unsqueeze,
)
from .softmax import log_softmax, softmax
from .swiglu import swiglu

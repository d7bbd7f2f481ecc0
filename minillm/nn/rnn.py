"""LSTM cell and layer (Happy LLM 1.4.4, ELMo), with PyTorch's parameter names, shapes and gate order.

For input x_t and the previous state (h, c), with gates stacked in the order i, f, g, o::

    i = σ(W_ii x + b_ii + W_hi h + b_hi)        input gate
    f = σ(W_if x + b_if + W_hf h + b_hf)        forget gate
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)     candidate cell
    o = σ(W_io x + b_io + W_ho h + b_ho)        output gate
    c' = f ⊙ c + i ⊙ g,    h' = o ⊙ tanh(c')

``weight_ih`` is (4·hidden, input) and ``weight_hh`` (4·hidden, hidden) as in ``torch.nn.LSTM``,
so PyTorch weights copy over unchanged (tested). Everything is built from engine ops, so
the gradient is the engine's (gradchecked in float64).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from ..ops import chunk, sigmoid, stack, tanh
from ..tensor import Tensor, get_default_dtype
from . import functional as F
from . import init
from .module import Module, Parameter

__all__ = ["LSTMCell", "LSTM"]


def _positive(value, name, cls):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{cls}: {name} must be a positive int, got {value!r}")
    return int(value)


def _lstm_step(gates_x: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, bias_hh) -> Tuple[Tensor, Tensor]:
    """One step given the input's share of the gates, x·W_ihᵀ + b_ih: (B, 4H)."""
    gates = gates_x + F.linear(h, weight_hh, bias_hh)  # (B, 4H)
    i, f, g, o = chunk(gates, 4, dim=-1)  # 4 x (B, H)
    c = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h = sigmoid(o) * tanh(c)
    return h, c


class LSTMCell(Module):
    """One LSTM step: ``h, c = cell(x, (h, c))``; x (B, input_size), h and c (B, hidden_size).

    Without a state, h and c start at zero. Init: U(-1/√hidden, 1/√hidden) for every
    weight and bias, as PyTorch.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype=None):
        super().__init__()
        self.input_size = _positive(input_size, "input_size", "LSTMCell")
        self.hidden_size = _positive(hidden_size, "hidden_size", "LSTMCell")
        dt = np.dtype(dtype or get_default_dtype())
        H = self.hidden_size
        self.weight_ih = Parameter(np.empty((4 * H, self.input_size), dt))
        self.weight_hh = Parameter(np.empty((4 * H, H), dt))
        if bias:
            self.bias_ih = Parameter(np.empty(4 * H, dt))
            self.bias_hh = Parameter(np.empty(4 * H, dt))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:  # noqa: A002
        if input.ndim != 2 or input.shape[1] != self.input_size:
            raise ValueError(f"LSTMCell: expected input (B, {self.input_size}), got shape {input.shape}")
        if hx is None:
            z = Tensor(np.zeros((input.shape[0], self.hidden_size), dtype=input.dtype))
            hx = (z, z)
        h, c = hx
        for name, t in (("h", h), ("c", c)):
            if t.shape != (input.shape[0], self.hidden_size):
                raise ValueError(f"LSTMCell: {name} must be ({input.shape[0]}, {self.hidden_size}), got {t.shape}")
        return _lstm_step(F.linear(input, self.weight_ih, self.bias_ih), h, c, self.weight_hh, self.bias_hh)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}"


class LSTM(Module):
    """A stack of ``num_layers`` LSTM layers over a sequence, as ``torch.nn.LSTM`` (one direction).

    ``output, (h_n, c_n) = lstm(x, hx)``: x (T, B, input_size), or (B, T, input_size) with
    ``batch_first=True``; output: the last layer's h at every step, same layout with
    hidden_size features; h_n, c_n: (num_layers, B, hidden_size). Parameters per layer k:
    ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``.
    ``dropout`` is applied to each layer's output except the last, in training mode.
    ``forward(..., return_all_layers=True)`` also returns every layer's outputs (ELMo needs them).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, dtype=None):
        super().__init__()
        self.input_size = _positive(input_size, "input_size", "LSTM")
        self.hidden_size = _positive(hidden_size, "hidden_size", "LSTM")
        self.num_layers = _positive(num_layers, "num_layers", "LSTM")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LSTM: dropout must be in [0, 1), got {dropout}")
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        dt = np.dtype(dtype or get_default_dtype())
        H = self.hidden_size
        for k in range(self.num_layers):
            n_in = self.input_size if k == 0 else H
            setattr(self, f"weight_ih_l{k}", Parameter(np.empty((4 * H, n_in), dt)))
            setattr(self, f"weight_hh_l{k}", Parameter(np.empty((4 * H, H), dt)))
            if bias:
                setattr(self, f"bias_ih_l{k}", Parameter(np.empty(4 * H, dt)))
                setattr(self, f"bias_hh_l{k}", Parameter(np.empty(4 * H, dt)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _layer(self, k):
        get = lambda n: getattr(self, f"{n}_l{k}") if self.bias or n.startswith("weight") else None  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None, return_all_layers: bool = False):  # noqa: A002
        if input.ndim != 3 or input.shape[2] != self.input_size:
            raise ValueError(f"LSTM: expected input with {self.input_size} features in 3 dims, got shape {input.shape}")
        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
        T, B = x.shape[0], x.shape[1]
        L, H = self.num_layers, self.hidden_size
        if hx is not None:
            for name, t in zip(("h_0", "c_0"), hx):
                if t.shape != (L, B, H):
                    raise ValueError(f"LSTM: {name} must be ({L}, {B}, {H}), got {t.shape}")
        layers, h_n, c_n = [], [], []
        for k in range(L):
            w_ih, w_hh, b_ih, b_hh = self._layer(k)
            if hx is None:
                h = c = Tensor(np.zeros((B, H), dtype=x.dtype))
            else:
                h, c = hx[0][k], hx[1][k]
            gates_x = F.linear(x, w_ih, b_ih)  # (T, B, 4H): the input's share for all steps in one matmul
            outs = []
            for t in range(T):
                h, c = _lstm_step(gates_x[t], h, c, w_hh, b_hh)
                outs.append(h)
            x = stack(outs, dim=0)  # (T, B, H)
            layers.append(x)
            h_n.append(h)
            c_n.append(c)
            if self.dropout and self.training and k < L - 1:
                x = F.dropout(x, self.dropout, training=True)
        out = x.transpose(0, 1) if self.batch_first else x
        state = (stack(h_n, dim=0), stack(c_n, dim=0))  # (L, B, H) each
        if return_all_layers:
            return out, state, [y.transpose(0, 1) if self.batch_first else y for y in layers]
        return out, state

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first={self.batch_first}"

"""Weight-only quantization: int8 (per output channel) and NF4 (QLoRA's 4-bit NormalFloat).

Happy LLM 6.3.1 motivates parameter-efficient fine-tuning with memory; QLoRA (Dettmers et
al. 2023) takes it one step further: the frozen base weights are stored in 4 bits and only
the LoRA adapters (in float) train. This file holds the number formats and the frozen
quantized ``Linear`` layers; ``quantize_model`` swaps a model's ``Linear`` layers for them.

int8, per output channel (absmax)::

    scale_o = max_i |W[o, i]| / 127,   q[o, i] = round(W[o, i] / scale_o) ∈ [-127, 127]
    Ŵ[o, i] = q[o, i] · scale_o        error ≤ scale_o / 2 per element

NF4, blockwise (block 64)::

    each block of 64 consecutive weights (row-major W, flattened) has absmax s_b;
    code[j] = argmin_k |W[j] / s_b - NF4[k]|,  Ŵ[j] = NF4[code[j]] · s_b
    NF4 = the 16 quantiles of N(0, 1) scaled to [-1, 1], with an exact 0 (``NF4_CODE``)
    error ≤ s_b · (largest gap between neighbouring NF4 values) / 2 per element

Double quantization (QLoRA §3, optional): the float32 block scales themselves cost 32/64 =
0.5 bits per weight, so they are quantized too: the mean is subtracted and each block of
256 scales is stored in int8 with its own float32 absmax (0.127 bits per weight). QLoRA
stores these second-level values as FP8; we use int8 absmax, which is the same idea with a
format NumPy has (stated difference). Two NF4 codes are packed per byte (high nibble first).

The layers (``Linear8bit``, ``Linear4bit``; bitsandbytes calls them ``Linear8bitLt`` and
``Linear4bit``) store the codes as buffers (never trained) and, in ``forward``, dequantize
the whole weight into a float scratch array and run ``F.linear``: the gradient flows to the
input (and so to a LoRA adapter upstream or beside it), never to the frozen weight, and no
gradient buffer exists for it. The float copy lives only during the call. A fused
dequantize-in-the-matmul Numba kernel was not written; see docs/lora.md for the measured
cost of the scratch approach.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .. import kernels
from ..tensor import Tensor
from . import functional as F
from .layers import Linear
from .module import Module, Parameter

__all__ = [
    "NF4_CODE", "quantize_int8", "dequantize_int8", "quantize_nf4", "dequantize_nf4", "nf4_scales", "nf4_error_bound",
    "QuantLinear", "Linear8bit", "Linear4bit", "quantize_model", "QUANT_TYPES",
]

# The 16 NF4 values, exactly as published with QLoRA (bitsandbytes' `get_4bit_type("nf4")`,
# Dettmers et al. 2023, appendix E): 8 positive and 7 negative quantiles of N(0, 1), normalised
# to [-1, 1], plus an exact zero.
NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=np.float32)

NF4_BLOCK = 64  # weights per absmax (QLoRA)
NESTED_BLOCK = 256  # scales per second-level absmax (QLoRA's double quantization)
QUANT_TYPES = ("int8", "nf4")


def _check_weight(w, who):
    w = np.asarray(w)
    if w.dtype.kind != "f":
        raise TypeError(f"{who}: expected a float weight, got dtype {w.dtype}")
    if not np.isfinite(w).all():
        raise ValueError(f"{who}: the weight has non-finite values (inf/nan) and cannot be quantized")
    return w


# ====================================================================== int8
def quantize_int8(w: np.ndarray):
    """(out, in) float -> (q int8 (out, in), scale float32 (out,)), per-output-channel absmax."""
    w = _check_weight(w, "quantize_int8")
    if w.ndim != 2:
        raise ValueError(f"quantize_int8: expected a 2-D weight (out, in), got shape {w.shape}")
    absmax = np.abs(w).max(axis=1).astype(np.float32)  # (out,)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)  # an all-zero row keeps scale 1
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)  # (out, in)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray, dtype=np.float32) -> np.ndarray:
    return q.astype(dtype) * scale.astype(dtype)[:, None]  # (out, in)


# ====================================================================== NF4
def _nearest_nf4(x: np.ndarray) -> np.ndarray:
    """Index of the nearest NF4 value for each x in [-1, 1] (ties go to the lower index)."""
    mids = (NF4_CODE[1:] + NF4_CODE[:-1]) / 2  # the 15 decision boundaries
    return np.searchsorted(mids, x, side="left").astype(np.uint8)


def quantize_nf4(w: np.ndarray, blocksize: int = NF4_BLOCK, double_quant: bool = False) -> dict:
    """Blockwise NF4 quantization of a float array of any shape.

    Returns a dict of arrays: ``packed`` uint8 (two codes per byte), ``absmax`` (float32 per
    block, or int8 with double quantization, then also ``nested_absmax`` float32 per 256 scales
    and ``offset`` float32 (1,), the scales' mean), plus ``shape`` (int64) and ``blocksize``.
    The flattened weight is zero-padded to a whole number of blocks.
    """
    w = _check_weight(w, "quantize_nf4")
    if not isinstance(blocksize, (int, np.integer)) or blocksize <= 0 or blocksize % 2:
        raise ValueError(f"quantize_nf4: blocksize must be a positive even int, got {blocksize!r}")
    flat = w.astype(np.float32).reshape(-1)
    n_blocks = -(-flat.size // blocksize)
    padded = np.zeros(n_blocks * blocksize, dtype=np.float32)
    padded[: flat.size] = flat
    blocks = padded.reshape(n_blocks, blocksize)  # (n_blocks, 64)
    absmax = np.abs(blocks).max(axis=1)  # (n_blocks,)
    safe = np.where(absmax > 0, absmax, 1.0).astype(np.float32)
    codes = _nearest_nf4(blocks / safe[:, None]).reshape(-1)  # (n_blocks·64,) in 0..15
    packed = (codes[0::2] << 4) | codes[1::2]  # high nibble = even index
    out = {"packed": packed.astype(np.uint8), "shape": np.array(w.shape, dtype=np.int64),
           "blocksize": np.array([blocksize], dtype=np.int64)}
    if double_quant:
        offset = np.float32(absmax.mean())
        centred = absmax - offset
        n2 = -(-centred.size // NESTED_BLOCK)
        c = np.zeros(n2 * NESTED_BLOCK, dtype=np.float32)
        c[: centred.size] = centred
        c = c.reshape(n2, NESTED_BLOCK)
        nested = np.abs(c).max(axis=1) / 127.0  # (n2,)
        nested = np.where(nested > 0, nested, 1.0).astype(np.float32)
        qs = np.clip(np.rint(c / nested[:, None]), -127, 127).astype(np.int8).reshape(-1)[: absmax.size]
        out.update(absmax=qs, nested_absmax=nested, offset=np.array([offset], dtype=np.float32))
    else:
        out["absmax"] = absmax.astype(np.float32)
    return out


def nf4_scales(state: dict) -> np.ndarray:
    """The per-block absmax (float32), undoing the double quantization if there is one."""
    a = state["absmax"]
    if "nested_absmax" not in state:
        return a.astype(np.float32)
    nested = np.repeat(state["nested_absmax"], NESTED_BLOCK)[: a.size]
    return a.astype(np.float32) * nested + state["offset"][0]


def dequantize_nf4(state: dict, dtype=np.float32) -> np.ndarray:
    """The float weight back from ``quantize_nf4``'s dict (shape restored)."""
    bs = int(state["blocksize"][0])
    values = kernels.nf4_dequantize(state["packed"], nf4_scales(state), NF4_CODE, bs)  # (n_blocks·64,) code·scale
    shape = tuple(int(s) for s in state["shape"])
    return values[: int(np.prod(shape))].reshape(shape).astype(dtype, copy=False)


def nf4_error_bound(w: np.ndarray, state: dict) -> np.ndarray:
    """Per-element bound on |W - dequant(W)|: half the largest NF4 gap times the block's
    absmax, plus (with double quantization) the error of the block's stored scale."""
    bs = int(state["blocksize"][0])
    flat = np.asarray(w, dtype=np.float32).reshape(-1)
    n_blocks = -(-flat.size // bs)
    padded = np.zeros(n_blocks * bs, dtype=np.float32)
    padded[: flat.size] = flat
    true_absmax = np.abs(padded.reshape(n_blocks, bs)).max(axis=1)
    half_gap = float(np.diff(NF4_CODE).max()) / 2
    bound = true_absmax * half_gap + np.abs(nf4_scales(state) - true_absmax)  # scale error scales |code| <= 1
    return np.repeat(bound, bs)[: flat.size].reshape(np.asarray(w).shape) * (1 + 1e-5) + 1e-7


# ====================================================================== layers
class QuantLinear(Module, ABC):
    """A frozen quantized ``Linear``: y = x·Ŵᵀ + b with Ŵ = dequantize(codes).

    Subclasses store the codes as buffers and implement ``dequantize()``. The bias (if any)
    stays a float Parameter (frozen). Gradients flow to ``x`` only.
    """

    quant_type = ""

    def __init__(self, in_features: int, out_features: int, bias: Parameter | None, dtype):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.compute_dtype = np.dtype(dtype)
        self.bias = bias
        if bias is not None:
            bias.requires_grad_(False)

    @abstractmethod
    def dequantize(self) -> np.ndarray:
        """The float weight (out, in) the stored codes stand for (a scratch array, not a Parameter)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != self.compute_dtype:
            raise TypeError(f"{type(self).__name__}: input dtype {x.dtype} differs from the layer's compute dtype {self.compute_dtype}")
        w = Tensor(self.dequantize().astype(self.compute_dtype, copy=False))  # (out, in) float scratch, no grad
        return F.linear(x, w, self.bias)  # (..., in) -> (..., out)

    def weight_nbytes(self) -> int:
        """Bytes the stored weight takes (codes + scales), bias excluded."""
        return sum(b.data.nbytes for n, b in self._buffers.items() if b is not None)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, {self.quant_type}"


class Linear8bit(QuantLinear):
    """Weight-only int8 ``Linear`` (per-output-channel absmax). Buffers: ``weight`` int8
    (out, in) and ``weight_scale`` float32 (out,)."""

    quant_type = "int8"

    def __init__(self, linear: Linear):
        if type(linear) is not Linear:
            raise TypeError(f"Linear8bit: expected an nn.Linear, got {type(linear).__name__}")
        super().__init__(linear.in_features, linear.out_features, linear.bias, linear.weight.dtype)
        q, scale = quantize_int8(linear.weight.data)
        self.register_buffer("weight", Tensor(q))
        self.register_buffer("weight_scale", Tensor(scale))

    def dequantize(self) -> np.ndarray:
        return dequantize_int8(self.weight.data, self.weight_scale.data, self.compute_dtype)


class Linear4bit(QuantLinear):
    """NF4 ``Linear`` (block 64, optional double quantization). Buffers: ``weight`` uint8 (two
    codes per byte), ``weight_absmax`` (float32, or int8 with double quantization, plus
    ``weight_nested_absmax`` and ``weight_offset``), ``weight_shape``, ``weight_blocksize``."""

    quant_type = "nf4"

    def __init__(self, linear: Linear, double_quant: bool = False, blocksize: int = NF4_BLOCK):
        if type(linear) is not Linear:
            raise TypeError(f"Linear4bit: expected an nn.Linear, got {type(linear).__name__}")
        super().__init__(linear.in_features, linear.out_features, linear.bias, linear.weight.dtype)
        self.double_quant = bool(double_quant)
        state = quantize_nf4(linear.weight.data, blocksize, double_quant)
        self.register_buffer("weight", Tensor(state["packed"]))
        for key in ("absmax", "nested_absmax", "offset", "shape", "blocksize"):
            if key in state:
                self.register_buffer(f"weight_{key}", Tensor(state[key]))

    def quant_state(self) -> dict:
        return {"packed": self.weight.data, **{k[len("weight_"):]: b.data for k, b in self._buffers.items() if k != "weight"}}

    def dequantize(self) -> np.ndarray:
        return dequantize_nf4(self.quant_state(), self.compute_dtype)


def quantize_model(model: Module, quant_type: str = "nf4", double_quant: bool = False, skip=("output",)) -> Module:
    """Replace every plain ``nn.Linear`` of ``model`` (in place) by a frozen ``Linear8bit``
    (``"int8"``) or ``Linear4bit`` (``"nf4"``), except the modules whose last name component is
    in ``skip`` (default: the output head, which LLaMA ties to the embedding) and any Linear
    whose weight is shared with another module. Returns ``model``.

    Embeddings and norms stay in float (as in QLoRA). Save with ``state_dict`` (the codes are
    buffers) and load into a model quantized the same way.
    """
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quantize_model: quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")
    owners = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(pname)
    targets = [(n, m) for n, m in model.named_modules()
               if type(m) is Linear and n.rsplit(".", 1)[-1] not in skip and len(owners[id(m.weight)]) == 1]
    if not targets:
        raise ValueError(f"quantize_model: {type(model).__name__} has no nn.Linear layer to quantize (skip={skip})")
    for n, m in targets:
        q = Linear8bit(m) if quant_type == "int8" else Linear4bit(m, double_quant=double_quant)
        parent, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, q)
    return model

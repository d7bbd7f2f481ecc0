"""Adapter tuning (Houlsby et al. 2019), the first method of Happy LLM 6.3.1 (高效微调方案).

A small *bottleneck* MLP is inserted after a sub-layer's output projection, with its own
residual connection::

    h   = W0·x + b                                  the frozen projection (wo, w2, ...)
    out = h + W_up · act(W_down · h + b_down) + b_up        W_down (m, d), W_up (d, m), m ≪ d

Houlsby puts one adapter after the multi-head attention's output projection and one after
the feed-forward network's, *before* each is added to the residual stream. In minillm's
LLaMA those projections are ``attention.wo`` and ``feed_forward.w2``, so an adapter wraps
exactly these two ``Linear`` layers per block (the default ``target_modules``).

``W_up`` and ``b_up`` start at **zero**, so the adapter adds nothing at step 0 and the
adapted model computes exactly the pretrained one (tested), as LoRA's B = 0 does. Unlike
LoRA the adapter is nonlinear, so it cannot be merged into W0: every forward pays for two
thin matmuls (the "inference latency" the book names as adapters' drawback).

Trainable numbers per adapted layer with d outputs and bottleneck m: 2·d·m + m + d
(``bottleneck_param_formula``).

Parameter names: the wrapped layer keeps its own ``weight``/``bias`` (frozen, unchanged
names, as ``LoRALinear`` does) and adds ``adapter_down.{weight,bias}`` and
``adapter_up.{weight,bias}``.

Config names. ``peft`` has no Houlsby adapter; the ``adapters`` library (formerly
adapter-transformers) calls it a bottleneck adapter (``BnConfig`` / ``DoubleSeqBnConfig``
with ``reduction_factor`` and ``non_linearity``). ``BottleneckConfig`` takes the
bottleneck size directly (``bottleneck_dim``) or as ``reduction_factor`` (m = d / factor),
plus peft's ``target_modules`` / ``inference_mode`` / ``task_type``.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from ..tensor import Tensor
from . import functional as F
from . import init
from .layers import Linear
from .lora import LoRALinear, _as_target_list, _target_str, find_target_modules
from .module import Module

__all__ = ["BottleneckConfig", "AdapterLinear", "inject_bottleneck_adapters", "adapter_layers", "bottleneck_param_formula"]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "swish": F.silu, "tanh": F.tanh}


@dataclass
class BottleneckConfig:
    """Houlsby adapters: where, how wide, which activation.

    bottleneck_dim    m, the adapter's hidden width (None: d // reduction_factor)
    reduction_factor  used when bottleneck_dim is None: m = max(1, d // reduction_factor)
    non_linearity     "relu" (default), "gelu", "silu"/"swish" or "tanh"
    target_modules    the Linear layers whose outputs get an adapter (LLaMA: the attention's
                      and the FFN's output projections, Houlsby's two places per block);
                      matched as ``LoraConfig.target_modules`` is
    init_weights      True: W_up, b_up = 0 (the model starts unchanged); False: random W_up (tests)
    inference_mode    True: adapters frozen too
    task_type         accepted for peft compatibility; not used
    """

    bottleneck_dim: Optional[int] = None
    reduction_factor: int = 16
    non_linearity: str = "relu"
    target_modules: Union[Sequence[str], str] = field(default_factory=lambda: ["wo", "w2"])
    init_weights: bool = True
    inference_mode: bool = False
    task_type: str = "CAUSAL_LM"

    def __post_init__(self):
        for name in ("bottleneck_dim", "reduction_factor"):
            v = getattr(self, name)
            if name == "bottleneck_dim" and v is None:
                continue
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"BottleneckConfig.{name} must be a positive int, got {v!r}")
        if self.non_linearity not in _ACTIVATIONS:
            raise ValueError(f"BottleneckConfig.non_linearity must be one of {sorted(_ACTIVATIONS)}, got {self.non_linearity!r}")
        if not isinstance(self.init_weights, bool):
            raise ValueError(f"BottleneckConfig.init_weights must be True or False, got {self.init_weights!r}")
        self.target_modules = _as_target_list(self.target_modules, "target_modules")
        if not self.target_modules:
            raise ValueError("BottleneckConfig.target_modules is empty; name at least one Linear layer, e.g. ['wo', 'w2']")

    def bottleneck_for(self, d: int) -> int:
        return int(self.bottleneck_dim) if self.bottleneck_dim is not None else max(1, int(d) // int(self.reduction_factor))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["target_modules"] = [_target_str(t) for t in self.target_modules]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BottleneckConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class AdapterLinear(Module):
    """A frozen ``Linear`` followed by a trainable bottleneck adapter with a residual::

        h = x·W0ᵀ + b;   out = h + up(act(down(h)))          (..., in) -> (..., out)

    ``base_layer``'s ``weight``/``bias`` are shared (not copied) and frozen, and keep their
    names. ``adapter_down``: Linear(out, m); ``adapter_up``: Linear(m, out), zero-initialised.
    """

    def __init__(self, base_layer: Linear, bottleneck_dim: int, non_linearity: str = "relu", init_weights: bool = True):
        super().__init__()
        if type(base_layer) is not Linear:
            raise TypeError(f"AdapterLinear: expected a plain nn.Linear to wrap, got {type(base_layer).__name__}")
        if not isinstance(bottleneck_dim, (int, np.integer)) or isinstance(bottleneck_dim, bool) or bottleneck_dim <= 0:
            raise ValueError(f"AdapterLinear: bottleneck_dim must be a positive int, got {bottleneck_dim!r}")
        if non_linearity not in _ACTIVATIONS:
            raise ValueError(f"AdapterLinear: non_linearity must be one of {sorted(_ACTIVATIONS)}, got {non_linearity!r}")
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.bottleneck_dim = int(bottleneck_dim)
        self.non_linearity = non_linearity
        self.disabled = False  # True inside PeftModel.disable_adapter(): behave like the base layer
        object.__setattr__(self, "_base_layer", base_layer)  # kept (unregistered) for unload()
        self.weight = base_layer.weight  # (out, in), shared and frozen
        self.bias = base_layer.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        dtype = self.weight.dtype
        self.adapter_down = Linear(self.out_features, self.bottleneck_dim, bias=True, dtype=dtype)  # (m, out)
        self.adapter_up = Linear(self.bottleneck_dim, self.out_features, bias=True, dtype=dtype)  # (out, m)
        init.zeros_(self.adapter_down.bias)
        if init_weights:
            init.zeros_(self.adapter_up.weight)  # the adapter starts as the identity: the model is unchanged
        init.zeros_(self.adapter_up.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = F.linear(x, self.weight, self.bias)  # (..., in) -> (..., out), frozen
        if self.disabled:
            return h
        a = _ACTIVATIONS[self.non_linearity](self.adapter_down(h))  # (..., out) -> (..., m)
        return h + self.adapter_up(a)  # (..., m) -> (..., out), plus the adapter's own residual

    def get_base_layer(self) -> Linear:
        return self._base_layer

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bottleneck={self.bottleneck_dim}, act={self.non_linearity}"


def adapter_layers(model: Module) -> Iterator[tuple]:
    """(name, AdapterLinear) for every adapted layer of ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, AdapterLinear):
            yield name, m


def bottleneck_param_formula(out_features: Sequence[int], bottleneck_dims: Sequence[int]) -> int:
    """Σ (2·d·m + m + d) over the adapted layers (d outputs, bottleneck m): down W (m, d) + b (m),
    up W (d, m) + b (d)."""
    return sum(2 * int(d) * int(m) + int(m) + int(d) for d, m in zip(out_features, bottleneck_dims))


def inject_bottleneck_adapters(config: BottleneckConfig, model: Module, target_names: Sequence[str] | None = None) -> list:
    """Freeze ``model`` and wrap each target ``nn.Linear`` in an ``AdapterLinear``, in place.

    Returns the names of the adapter parameters (``...wo.adapter_down.weight``, ...), the ones
    that train and are saved. Refused before any change: a target that is not a plain Linear
    or already adapted, and a name the model lacks.
    """
    names = list(find_target_modules(model, config.target_modules)) if target_names is None else list(target_names)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"PeftModel: {type(model).__name__} has no module(s) named {missing}")
    for n in names:
        if isinstance(modules[n], (AdapterLinear, LoRALinear)):
            raise ValueError(f"PeftModel: {n!r} already has an adapter (one adapter per model)")
        if type(modules[n]) is not Linear:
            raise TypeError(f"PeftModel: target {n!r} is a {type(modules[n]).__name__}; only nn.Linear layers can get a "
                            "bottleneck adapter (e.g. target_modules=['wo', 'w2'])")
    for p in model.parameters():
        p.requires_grad_(False)
    for n in names:
        parent_name, _, child = n.rpartition(".")
        base = modules[n]
        setattr(model.get_submodule(parent_name), child,
                AdapterLinear(base, config.bottleneck_for(base.out_features), config.non_linearity, config.init_weights))
    if config.inference_mode:
        model.requires_grad_(False)
    return [n for n, _ in model.named_parameters() if ".adapter_down." in n or ".adapter_up." in n]

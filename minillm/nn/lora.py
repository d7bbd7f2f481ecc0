"""LoRA from scratch: the layer, its configuration and its injection (Happy LLM 6.3.1-6.3.4).

Where each part of the book's section 6.3 lives:

======================================  ==================================================
6.3.1 高效微调方案 (adapters, prefixes)  why: train a few new weights, freeze the rest
6.3.2 LoRA 微调                          ``LoRALinear``: the update ΔW is low-rank, ΔW = B·A
6.3.3 LoRA 微调的原理                     ``LoRALinear.forward`` (h = W0·x + B·A·x · α/r);
                                         ``lora_param_formula`` (Θ = 2·L·d·r)
6.3.4 LoRA 的代码实现                     ``LoraConfig.target_modules`` matching
                                         (``find_target_modules``), layer replacement and
                                         freezing (``inject_adapter_in_model``)
6.3.5 使用 peft 实现 LoRA 微调            ``minillm/peft/``: ``get_peft_model``, ``PeftModel``
                                         (``print_trainable_parameters``, ``save_pretrained``,
                                         ``from_pretrained``, ``merge_and_unload``)
======================================  ==================================================

This file is a layer like any other in ``nn`` (it knows nothing about files); the
``peft``-style wrapper with adapter files lives one level up in ``minillm/peft/``, as
``peft`` sits on top of ``torch``.

The idea (6.3.3). A pretrained weight W0 (out × in) is frozen. Its fine-tuning update is
learned as the product of two thin matrices, B (out × r) and A (r × in), with r ≪ in, out::

    h = W0·x + ΔW·x = W0·x + B·A·x · scaling,        scaling = lora_alpha / r

A starts random (Kaiming-uniform, as in ``peft``; the book says Gaussian, which is
``init_lora_weights="gaussian"``) and B starts at **zero**, so at step 0 the model is
exactly the pretrained one. Only A and B are trained: r·(in + out) numbers instead of
in·out. After training, B·A·scaling can be added into W0 once (``merge``): the model is
then a plain model again, with no extra cost at inference.

Usage, as in the book's 6.3.5 (see ``minillm/peft/``)::

    from minillm.peft import LoraConfig, get_peft_model, PeftModel

    config = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["wq", "wv"])
    model = get_peft_model(model, config)        # inject_adapter_in_model + a PeftModel around it

Parameter names. A ``LoRALinear`` keeps the frozen base weight under the base layer's own
name (``layers.0.attention.wq.weight``, as the book's ``Linear(nn.Linear, LoraLayer)`` does)
and adds ``layers.0.attention.wq.lora_A.weight`` (r, in) and ``...wq.lora_B.weight``
(out, r). A ``PeftModel`` shares its base model's modules, so ``state_dict()`` names are the
base model's names plus the LoRA ones, and ``merge_and_unload()`` gives back the very same
names as before injection. Adapter files store only the adapter tensors, under those names.

Deliberate differences from ``peft``: one adapter per model (no adapter names); only
``Linear`` layers can be targets; a target that matches nothing is an error (not just
"no target matched at all"); LoRA on a weight shared with another module (the tied
embedding / output head) is refused, since merging would change both.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, Sequence, Union

import numpy as np

from .. import autograd
from ..tensor import Tensor
from . import functional as F
from . import init
from .layers import Dropout, Identity, Linear
from .module import Module
from .quant import QuantLinear

__all__ = [
    "LoRALinear", "LoraConfig", "find_target_modules", "inject_adapter_in_model", "lora_layers",
    "lora_param_formula", "book_lora_param_count", "LLAMA_ATTENTION_TARGETS", "LLAMA_ALL_LINEAR_TARGETS",
]

# Target lists for minillm's LLaMA (minillm/models/llama.py). The book (6.3.3) adapts the
# attention projections; Hu et al. found W_q and W_v together the best small choice.
LLAMA_ATTENTION_TARGETS = ["wq", "wk", "wv", "wo"]
LLAMA_ALL_LINEAR_TARGETS = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]

_BIAS_MODES = ("none", "all", "lora_only")


# ====================================================================== 6.3.2-6.3.4 the LoRA layer
class LoRALinear(Module):
    """A ``Linear`` with a trainable low-rank side path (6.3.3, 6.3.4)::

        y = x·W0ᵀ + b  +  dropout(x)·Aᵀ·Bᵀ · scaling          scaling = lora_alpha / r
            --------      ----------------------------
            frozen        trainable: A = lora_A.weight (r, in), B = lora_B.weight (out, r)

    ``base_layer`` is the ``nn.Linear`` being adapted. Its ``weight`` and ``bias``
    Parameters are *shared* (not copied) and frozen (``requires_grad=False``); they stay
    registered as this module's ``weight`` / ``bias``, so their names do not change.

    ``init_lora_weights``: ``True`` (A Kaiming-uniform, B zeros: the output starts equal to
    the base layer's), ``"gaussian"`` (A ~ N(0, 1/r²), B zeros; the book's wording), or
    ``False`` (B random too, so the adapter is not a no-op: for tests only).

    ``merge()`` adds B·A·scaling into W0 (then forward is a single matmul), ``unmerge()``
    subtracts it again. Both are done in the weight's dtype, so a round trip gives back W0
    up to rounding (~1e-7 relative in float32).
    """

    def __init__(self, base_layer: Linear, r: int = 8, lora_alpha: float = 32, lora_dropout: float = 0.0,
                 init_lora_weights: Union[bool, str] = True):
        super().__init__()
        if isinstance(base_layer, LoRALinear):
            raise TypeError("LoRALinear: this layer already has a LoRA adapter (one adapter per layer)")
        self.quantized = isinstance(base_layer, QuantLinear)  # QLoRA: a frozen int8/NF4 base
        if not isinstance(base_layer, Linear) and not self.quantized:
            raise TypeError(f"LoRALinear: expected an nn.Linear (or a quantized Linear8bit/Linear4bit) to wrap, got {type(base_layer).__name__}")
        extra = sorted(set(base_layer._parameters) - {"weight", "bias"}) + sorted(base_layer._modules)
        if not self.quantized:
            extra += sorted(base_layer._buffers)
        if extra:
            raise TypeError(f"LoRALinear: {type(base_layer).__name__} has members besides weight/bias ({extra}); only plain Linear layers can be wrapped")
        _check_lora_hparams(r, lora_alpha, lora_dropout, init_lora_weights, "LoRALinear")
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.r = int(r)
        self.lora_alpha = lora_alpha
        self.scaling = float(lora_alpha) / self.r  # α/r: changing r keeps the update's size comparable
        self.merged = False  # True after merge(): W0 then already holds B·A·scaling
        self.disabled = False  # True inside PeftModel.disable_adapter(): behave like the base layer

        # The frozen pretrained weight (the book: self.weight.requires_grad = False).
        object.__setattr__(self, "_base_layer", base_layer)  # kept (unregistered) for unload()
        if self.quantized:
            # QLoRA: the codes and scales stay the base layer's buffers, under their own names
            # (wq.weight is then the packed uint8 codes); forward dequantizes them, no gradient.
            object.__setattr__(self, "_buffers", base_layer._buffers)
            self.bias = base_layer.bias
            dtype = base_layer.compute_dtype
        else:
            self.weight = base_layer.weight  # (out, in), shared with base_layer
            self.bias = base_layer.bias  # (out,) or None, shared
            self.weight.requires_grad_(False)
            dtype = self.weight.dtype
        if self.bias is not None:
            self.bias.requires_grad_(False)

        self.lora_dropout = Dropout(lora_dropout) if lora_dropout > 0 else Identity()
        self.lora_A = Linear(self.in_features, self.r, bias=False, dtype=dtype)  # weight (r, in)
        self.lora_B = Linear(self.r, self.out_features, bias=False, dtype=dtype)  # weight (out, r)
        self.reset_lora_parameters(init_lora_weights)

    def reset_lora_parameters(self, init_lora_weights: Union[bool, str] = True) -> None:
        """A random, B = 0 (so B·A = 0 and the layer starts as the base layer)."""
        if init_lora_weights == "gaussian":
            init.normal_(self.lora_A.weight, std=1.0 / self.r)
        else:
            init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # nn.Linear's default = U(-1/√in, 1/√in)
        if init_lora_weights is False:
            init.kaiming_uniform_(self.lora_B.weight, a=math.sqrt(5))  # not a no-op: tests only
        else:
            init.zeros_(self.lora_B.weight)

    # ------------------------------------------------------------------ forward (6.3.3)
    def forward(self, x: Tensor) -> Tensor:
        if self.quantized:
            result = self._base_layer(x)  # (..., in) -> (..., out): dequantized W0·x + b, frozen
        else:
            result = F.linear(x, self.weight, self.bias)  # (..., in) -> (..., out): W0·x + b, frozen
        if self.disabled or self.merged:
            return result  # merged: W0 already includes B·A·scaling
        h = self.lora_dropout(x)  # (..., in)
        h = self.lora_A(h)  # (..., in) -> (..., r): project down to the rank-r subspace
        h = self.lora_B(h)  # (..., r) -> (..., out): and back up
        return result + h * self.scaling  # (..., out)

    # ------------------------------------------------------------------ merging (6.3.2, advantage 3)
    def delta_weight(self) -> np.ndarray:
        """ΔW = B·A·scaling as an array shaped like the base weight (out, in)."""
        b, a = self.lora_B.weight.data, self.lora_A.weight.data
        return (b @ a) * b.dtype.type(self.scaling)  # (out, r) @ (r, in) -> (out, in)

    def merge(self) -> None:
        """W0 <- W0 + B·A·scaling, in place. No-op if already merged."""
        if self.merged:
            return
        if self.quantized:
            raise RuntimeError("LoRALinear.merge: the base weight is quantized (QLoRA); adding B·A to it would need "
                               "re-quantization. Keep the adapter separate, or load a float base to merge into")
        with autograd.no_grad():
            self.weight.data += self.delta_weight()
        self.merged = True

    def unmerge(self) -> None:
        """W0 <- W0 - B·A·scaling, in place (undo ``merge``). No-op if not merged."""
        if not self.merged:
            return
        with autograd.no_grad():
            self.weight.data -= self.delta_weight()
        self.merged = False

    def __call__(self, *args, **kwargs):
        if self.merged and self.training and autograd.is_grad_enabled() and self.lora_A.weight.requires_grad:
            raise RuntimeError(
                "LoRALinear: training forward on a merged layer; A and B would get no gradient. "
                "Call unmerge() (PeftModel.unmerge_adapter()) before training, or use eval() / no_grad()"
            )
        return super().__call__(*args, **kwargs)

    def get_base_layer(self) -> Linear:
        """The ``nn.Linear`` this layer wraps (same weight and bias Parameters): put back by unloading."""
        return self._base_layer

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"r={self.r}, lora_alpha={self.lora_alpha}, scaling={self.scaling:g}, merged={self.merged}")


def _check_lora_hparams(r, lora_alpha, lora_dropout, init_lora_weights, where):
    if not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"{where}: r must be a positive int, got {r!r}")
    if not isinstance(lora_alpha, numbers.Real) or isinstance(lora_alpha, bool) or lora_alpha <= 0:
        raise ValueError(f"{where}: lora_alpha must be a positive number, got {lora_alpha!r}")
    if not isinstance(lora_dropout, numbers.Real) or not 0.0 <= lora_dropout < 1.0:
        raise ValueError(f"{where}: lora_dropout must be in [0, 1), got {lora_dropout!r}")
    if init_lora_weights not in (True, False, "gaussian"):
        raise ValueError(f"{where}: init_lora_weights must be True, False or 'gaussian', got {init_lora_weights!r}")


# ====================================================================== 6.3.5 the configuration
Target = Union[str, re.Pattern]


@dataclass
class LoraConfig:
    """What to adapt and how (the fields and defaults of the book's 6.3.5 example).

    r               rank of B·A (the book: 4, 8 or 16)
    lora_alpha      scaling = lora_alpha / r
    lora_dropout    dropout on the LoRA path's input (training only)
    target_modules  which Linear layers get an adapter; each item is
                    * a plain name such as ``"wq"`` or ``"attention.wq"``: matches modules whose
                      dotted name equals it or ends with ``"." + it``
                      (``"wq"`` matches ``layers.0.attention.wq``, ``layers.1.attention.wq``, ...);
                    * a string with regex characters, or an ``re.Pattern``: ``re.fullmatch``
                      against the full dotted name (the book's 6.3.4), e.g.
                      ``r"layers\\.[01]\\.attention\\.w[qv]"``.
                    A single string is treated like a one-item list.
    bias            ``"none"`` (all biases frozen), ``"all"`` (every bias trains), or
                    ``"lora_only"`` (biases of adapted layers train); trained biases are saved
                    with the adapter (merging does not undo them: they change the base model)
    modules_to_save names (same matching) of extra modules trained in full and saved with
                    the adapter, e.g. ``["norm"]``
    init_lora_weights  see ``LoRALinear``
    inference_mode  True: adapters frozen too (``PeftModel.from_pretrained`` default)
    task_type       accepted for peft compatibility ("CAUSAL_LM"); not used
    """

    r: int = 8
    lora_alpha: float = 32
    lora_dropout: float = 0.1
    target_modules: Union[Sequence[Target], Target] = field(default_factory=lambda: ["wq", "wv"])
    bias: str = "none"
    modules_to_save: Union[Sequence[Target], None] = None
    init_lora_weights: Union[bool, str] = True
    inference_mode: bool = False
    task_type: str = "CAUSAL_LM"

    def __post_init__(self):
        _check_lora_hparams(self.r, self.lora_alpha, self.lora_dropout, self.init_lora_weights, "LoraConfig")
        self.target_modules = _as_target_list(self.target_modules, "target_modules")
        if not self.target_modules:
            raise ValueError("LoraConfig.target_modules is empty; name at least one Linear layer, e.g. ['wq', 'wv']")
        if self.modules_to_save is not None:
            self.modules_to_save = _as_target_list(self.modules_to_save, "modules_to_save")
        if self.bias not in _BIAS_MODES:
            raise ValueError(f"LoraConfig.bias must be one of {_BIAS_MODES}, got {self.bias!r}")

    def to_dict(self) -> dict:
        """JSON-able dict (``re.Pattern`` items become their pattern strings)."""
        d = dataclasses.asdict(self)
        d["target_modules"] = [_target_str(t) for t in self.target_modules]
        if self.modules_to_save is not None:
            d["modules_to_save"] = [_target_str(t) for t in self.modules_to_save]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LoraConfig":
        """Build from a dict; keys that are not fields (file metadata, peft extras) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _as_target_list(value, name) -> list:
    if isinstance(value, (str, re.Pattern)):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"LoraConfig.{name} must be a str, an re.Pattern or a list of them, got {type(value).__name__}") from None
    for t in items:
        if not isinstance(t, (str, re.Pattern)) or (isinstance(t, str) and not t):
            raise TypeError(f"LoraConfig.{name}: every item must be a non-empty str or an re.Pattern, got {t!r}")
        if isinstance(t, str) and not _PLAIN_NAME.fullmatch(t):
            try:
                re.compile(t)
            except re.error as e:
                raise ValueError(f"LoraConfig.{name}: {t!r} is not a valid regular expression ({e})") from None
    return items


def _target_str(t) -> str:
    return t.pattern if isinstance(t, re.Pattern) else t


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.]+")  # no regex characters besides '.': a (suffix of a) dotted name


def _matches(target, name: str) -> bool:
    """Does module ``name`` (e.g. ``"layers.0.attention.wq"``) match ``target``? (6.3.4 (2))"""
    if isinstance(target, re.Pattern):
        return target.fullmatch(name) is not None
    if _PLAIN_NAME.fullmatch(target):
        return name == target or name.endswith("." + target)
    return re.fullmatch(target, name) is not None


def find_target_modules(model: Module, targets) -> "OrderedDict[str, Module]":
    """name -> module for every module of ``model`` matched by ``targets`` (any type).

    Raises ``ValueError`` naming each target that matched nothing, and listing the names
    of the model's Linear layers one could use instead.
    """
    targets = _as_target_list(targets, "target_modules")
    found, hits = OrderedDict(), {id(t): 0 for t in targets}
    for name, module in model.named_modules():
        if not name:
            continue  # the model itself is never a target
        for t in targets:
            if _matches(t, name):
                found[name] = module
                hits[id(t)] += 1
    missing = [_target_str(t) for t in targets if hits[id(t)] == 0]
    if missing:
        linear = [n for n, m in model.named_modules() if isinstance(m, Linear)]
        last = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise ValueError(
            f"target_modules {missing} matched no module of {type(model).__name__}. "
            f"Its Linear layers are named (last component) {last}"
            + (f", e.g. {linear[0]!r}" if linear else " (it has none)")
        )
    return found


# ====================================================================== the book's parameter count (6.3.3)
def lora_param_formula(shapes, r: int) -> int:
    """Trainable numbers added by LoRA: Σ r·(d_in + d_out) over the adapted matrices.

    ``shapes``: (d_out, d_in) of each adapted weight. With every matrix d×d this is the
    book's Θ = 2 · L_LoRA · d_model · r (see ``book_lora_param_count``).
    """
    return sum(int(r) * (int(d_in) + int(d_out)) for d_out, d_in in shapes)


def book_lora_param_count(n_matrices: int, d_model: int, r: int) -> int:
    """6.3.3: Θ = 2 × L_LoRA × d_model × r (every adapted matrix d_model × d_model)."""
    return 2 * n_matrices * d_model * r


# ====================================================================== 6.3.4 injection
def lora_layers(model: Module) -> Iterator[tuple]:
    """(name, LoRALinear) for every adapted layer of ``model``, in module order."""
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            yield name, m


def inject_adapter_in_model(peft_config: LoraConfig, model: Module, target_names: Sequence[str] | None = None) -> list:
    """Add LoRA to ``model`` in place (6.3.4 (1)-(3)); returns the names of the parameters
    the adapter trains and saves.

    (1) find the targets: ``target_names`` if given (the exact layers an adapter file was
    saved with), else every module ``peft_config.target_modules`` matches
    (``find_target_modules``); (3) freeze every parameter; (2) replace each target
    ``nn.Linear`` by a ``LoRALinear`` (A and B trainable). Then the extras of the config
    train too: biases (``bias="all"`` / ``"lora_only"``) and ``modules_to_save``. With
    ``inference_mode`` the adapters are frozen as well.

    The returned names are ``state_dict`` names: ``...wq.lora_A.weight``, ``...wq.lora_B.weight``
    for every adapted layer, then the extras. Refused (nothing changed): a name the model
    does not have, a target that is not a plain ``Linear`` or already has an adapter, and a
    weight shared by two modules (the tied embedding / output head), which merging would
    change in both places.
    """
    cfg = peft_config
    names = list(find_target_modules(model, cfg.target_modules)) if target_names is None else list(target_names)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"PeftModel: {type(model).__name__} has no module(s) named {missing}")
    for n in names:
        m = modules[n]
        if isinstance(m, LoRALinear):
            raise ValueError(f"PeftModel: {n!r} already has a LoRA adapter (one adapter per model)")
        if not isinstance(m, (Linear, QuantLinear)):
            raise TypeError(
                f"PeftModel: target {n!r} is a {type(m).__name__}; only nn.Linear layers can get LoRA. "
                "Make target_modules more specific (e.g. 'wq' rather than 'attention')"
            )
    owners = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(pname)
    for n in names:
        if isinstance(modules[n], QuantLinear):
            continue  # its codes are buffers, never shared (quantize_model skips tied weights)
        shared = owners[id(modules[n].weight)]
        if len(shared) > 1:
            raise ValueError(
                f"PeftModel: {n}.weight is shared by {shared} (tied weights); LoRA on a tied weight is not "
                "supported because merging would change every user of it. Leave it out of target_modules"
            )

    # (3) freeze everything; then (2) replace each target by a LoRALinear (A, B trainable).
    for p in model.parameters():
        p.requires_grad_(False)
    for n in names:
        parent_name, _, child = n.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(modules[n], cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.init_lora_weights))

    # Optional extras that train in full and are saved with the adapter.
    extra = []
    if cfg.bias == "all":
        extra += [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] == "bias"]
    elif cfg.bias == "lora_only":
        extra += [f"{n}.bias" for n in names if modules[n].bias is not None]
    if cfg.modules_to_save:
        for mname, m in find_target_modules(model, cfg.modules_to_save).items():
            extra += [f"{mname}.{pn}" for pn, _ in m.named_parameters()]
    extra = list(dict.fromkeys(extra))
    for pname in extra:
        model.get_parameter(pname).requires_grad_(True)
    if cfg.inference_mode:
        model.requires_grad_(False)
    lora = [n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    return lora + [n for n in extra if n not in lora]

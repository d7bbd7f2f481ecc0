"""LoRA from scratch, and a small ``peft``-style API around it (Happy LLM 6.3).

Where each part of the book's section 6.3 lives:

======================================  ==================================================
6.3.1 高效微调方案 (adapters, prefixes)  why: train a few new weights, freeze the rest
6.3.2 LoRA 微调                          ``LoRALinear``: the update ΔW is low-rank, ΔW = B·A
6.3.3 LoRA 微调的原理                     ``LoRALinear.forward`` (h = W0·x + B·A·x · α/r);
                                         ``lora_param_formula`` (Θ = 2·L·d·r)
6.3.4 LoRA 的代码实现                     ``LoraConfig.target_modules`` matching, layer
                                         replacement and freezing in ``get_peft_model``
6.3.5 使用 peft 实现 LoRA 微调            ``LoraConfig``, ``get_peft_model``, ``PeftModel``
                                         (``print_trainable_parameters``, ``save_pretrained``,
                                         ``from_pretrained``, ``merge_and_unload``)
======================================  ==================================================

The idea (6.3.3). A pretrained weight W0 (out × in) is frozen. Its fine-tuning update is
learned as the product of two thin matrices, B (out × r) and A (r × in), with r ≪ in, out::

    h = W0·x + ΔW·x = W0·x + B·A·x · scaling,        scaling = lora_alpha / r

A starts random (Kaiming-uniform, as in ``peft``; the book says Gaussian, which is
``init_lora_weights="gaussian"``) and B starts at **zero**, so at step 0 the model is
exactly the pretrained one. Only A and B are trained: r·(in + out) numbers instead of
in·out. After training, B·A·scaling can be added into W0 once (``merge``): the model is
then a plain model again, with no extra cost at inference.

Usage, as in the book's 6.3.5 (``import`` lines aside, the same code as with ``peft``)::

    from minillm.nn.lora import LoraConfig, get_peft_model, PeftModel

    config = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["wq", "wv"])
    model = get_peft_model(model, config)        # modifies `model` in place, returns a PeftModel
    model.print_trainable_parameters()           # trainable params: ... || all params: ... || trainable%: ...
    ... train: model(input_ids, targets=labels).loss.backward(); optimizer.step() ...
    model.save_pretrained("out/lora")            # adapter_model.safetensors + adapter_config.json (small)

    base = Transformer(config)  ...load the pretrained weights...
    model = PeftModel.from_pretrained(base, "out/lora")   # the same adapted model again
    plain = model.merge_and_unload()             # a plain Transformer with W = W0 + B·A·α/r

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

import contextlib
import dataclasses
import json
import math
import numbers
import os
import re
import warnings
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

__all__ = [
    "LoRALinear", "LoraConfig", "PeftModel", "get_peft_model", "find_target_modules", "lora_param_formula",
    "book_lora_param_count", "LLAMA_ATTENTION_TARGETS", "LLAMA_ALL_LINEAR_TARGETS",
    "ADAPTER_WEIGHTS_NAME", "ADAPTER_CONFIG_NAME",
]

# The file names peft uses, so an adapter directory looks familiar.
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"

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
        if not isinstance(base_layer, Linear):
            raise TypeError(f"LoRALinear: expected an nn.Linear to wrap, got {type(base_layer).__name__}")
        extra = sorted(set(base_layer._parameters) - {"weight", "bias"}) + sorted(base_layer._buffers) + sorted(base_layer._modules)
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
        self.weight = base_layer.weight  # (out, in), shared with base_layer
        self.bias = base_layer.bias  # (out,) or None, shared
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

        dtype = self.weight.dtype
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


# ====================================================================== 6.3.4 injection + 6.3.5 PeftModel
def get_peft_model(model: Module, peft_config: LoraConfig) -> "PeftModel":
    """Add LoRA adapters to ``model`` (6.3.4): find the target layers, replace each by a
    ``LoRALinear``, freeze everything except the adapters. ``model`` is modified **in place**
    (as ``peft``'s ``inject_adapter_in_model``); the returned ``PeftModel`` wraps it.
    """
    if not isinstance(peft_config, LoraConfig):
        raise TypeError(f"get_peft_model: expected a LoraConfig, got {type(peft_config).__name__}")
    if isinstance(model, PeftModel):
        raise ValueError("get_peft_model: this model is already a PeftModel (one adapter per model)")
    if not isinstance(model, Module):
        raise TypeError(f"get_peft_model: expected an nn.Module, got {type(model).__name__}")
    names = list(find_target_modules(model, peft_config.target_modules))
    return PeftModel(model, peft_config, _target_names=names)


class PeftModel(Module):
    """A model with LoRA adapters (the object ``get_peft_model`` returns).

    It *shares* the base model's parameters, buffers and sub-modules (the same dicts, not
    copies), so every name is the base model's name (``layers.0.attention.wq.weight``) and
    optimizers, ``state_dict()`` and checkpoints see the same keys with or without LoRA.
    ``forward`` and any attribute the wrapper lacks (``args``, ``generate``, ...) go to the
    base model, so ``peft_model(input_ids, targets=...)`` returns ``.logits`` / ``.loss``.
    """

    def __init__(self, model: Module, peft_config: LoraConfig, _target_names: Sequence[str] | None = None):
        super().__init__()
        if _target_names is None:
            _target_names = list(find_target_modules(model, peft_config.target_modules))
        # Share the base model's registries: one tree, seen through two objects.
        for registry in ("_parameters", "_buffers", "_non_persistent_buffers", "_modules"):
            object.__setattr__(self, registry, model.__dict__[registry])
        object.__setattr__(self, "base_model", model)  # not registered: it *is* this tree
        object.__setattr__(self, "training", model.training)
        self.peft_config = peft_config
        self._unloaded = False
        # Remember each parameter's requires_grad so unload() can restore it.
        self._requires_grad_before = {id(p): p.requires_grad for p in model.parameters()}
        self._inject(list(_target_names))

    # ------------------------------------------------------------------ injection (6.3.4 (1)-(3))
    def _inject(self, names: list) -> None:
        cfg, model = self.peft_config, self.base_model
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"PeftModel: {type(model).__name__} has no module(s) named {missing}")
        for n in names:
            m = modules[n]
            if isinstance(m, LoRALinear):
                raise ValueError(f"PeftModel: {n!r} already has a LoRA adapter (one adapter per model)")
            if not isinstance(m, Linear):
                raise TypeError(
                    f"PeftModel: target {n!r} is a {type(m).__name__}; only nn.Linear layers can get LoRA. "
                    "Make target_modules more specific (e.g. 'wq' rather than 'attention')"
                )
        # A weight used under two names (the tied embedding / output head) would be changed in
        # both places by merge(): refuse.
        owners = {}
        for pname, p in model.named_parameters(remove_duplicate=False):
            owners.setdefault(id(p), []).append(pname)
        for n in names:
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
        self._target_names = names

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
        lora = [n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
        self._adapter_names = lora + [n for n in extra if n not in lora]
        if cfg.inference_mode:
            self.requires_grad_(False)

    # ------------------------------------------------------------------ plumbing
    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("base_model")
            if base is None:
                raise
            return getattr(base, name)  # config, generate, new_kv_cache, ...

    def forward(self, *args, **kwargs):
        self._check_usable("forward")
        return self.base_model(*args, **kwargs)

    def train(self, mode: bool = True) -> "PeftModel":
        self.base_model.train(mode)  # the base model's own flag too (it is not in our tree)
        object.__setattr__(self, "training", mode)
        return self

    def extra_repr(self):
        return f"base_model={type(self.base_model).__name__}, r={self.peft_config.r}, lora_alpha={self.peft_config.lora_alpha}"

    def _check_usable(self, what):
        if self._unloaded:
            raise RuntimeError(f"PeftModel.{what}: the adapters were removed by merge_and_unload()/unload(); use the returned base model")

    def lora_layers(self) -> Iterator[tuple]:
        """(name, LoRALinear) for every adapted layer."""
        for name, m in self.named_modules():
            if isinstance(m, LoRALinear):
                yield name, m

    @property
    def targeted_module_names(self) -> list:
        return list(self._target_names)

    # ------------------------------------------------------------------ counting (6.3.3)
    def get_nb_trainable_parameters(self) -> tuple:
        """(trainable, total) numbers; a tied weight counts once."""
        return self.num_parameters(trainable_only=True), self.num_parameters()

    def print_trainable_parameters(self) -> None:
        """``trainable params: 4,096 || all params: 110,592 || trainable%: 3.7037`` (peft's format)."""
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    def expected_lora_parameters(self) -> int:
        """Σ r·(d_in + d_out) over the adapted layers (``lora_param_formula``)."""
        return lora_param_formula([m.weight.shape for _, m in self.lora_layers()], self.peft_config.r)

    # ------------------------------------------------------------------ merging
    def merge_adapter(self) -> None:
        """Fold B·A·scaling into every adapted weight (forward becomes the plain model's)."""
        self._check_usable("merge_adapter")
        for _, m in self.lora_layers():
            m.merge()

    def unmerge_adapter(self) -> None:
        self._check_usable("unmerge_adapter")
        for _, m in self.lora_layers():
            m.unmerge()

    @contextlib.contextmanager
    def disable_adapter(self):
        """``with model.disable_adapter(): ...`` runs the base model (adapters bypassed)."""
        self._check_usable("disable_adapter")
        layers = [m for _, m in self.lora_layers()]
        if any(m.merged for m in layers):
            raise RuntimeError("PeftModel.disable_adapter: the adapters are merged into the weights; unmerge_adapter() first")
        for m in layers:
            m.disabled = True
        try:
            yield
        finally:
            for m in layers:
                m.disabled = False

    def merge_and_unload(self) -> Module:
        """Merge the adapters into the weights and put the original ``Linear`` layers back.

        Returns the base model: a plain model (same class, same parameter names as before
        ``get_peft_model``) that can be saved as a normal checkpoint or exported. Each
        parameter's ``requires_grad`` is restored. This ``PeftModel`` is unusable afterwards.
        """
        return self._unload(merge=True)

    def unload(self) -> Module:
        """Remove the adapters without merging: the base model as it was before injection."""
        return self._unload(merge=False)

    def _unload(self, merge: bool) -> Module:
        self._check_usable("merge_and_unload" if merge else "unload")
        model = self.base_model
        for name, m in list(self.lora_layers()):
            if merge:
                m.merge()
            elif m.merged:
                m.unmerge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, m._base_layer)  # weight/bias: the same Parameters
        for p in model.parameters():
            p.requires_grad_(self._requires_grad_before.get(id(p), True))
        self._unloaded = True
        return model

    # ------------------------------------------------------------------ adapter files
    def adapter_state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Only what the adapter adds or trains: lora_A / lora_B weights (+ trained biases,
        ``modules_to_save``), by their names in the model. Arrays are copies."""
        self._check_usable("adapter_state_dict")
        return OrderedDict((n, np.array(self.base_model.get_parameter(n).data, copy=True)) for n in self._adapter_names)

    def save_pretrained(self, save_directory: str) -> None:
        """Write ``adapter_model.safetensors`` (the adapter tensors) and ``adapter_config.json``
        (the LoraConfig, the adapted layers' names and the base model's config, if it has one).

        The base weights are not saved: an adapter is a few KB to MB, loaded on top of the
        pretrained model with ``PeftModel.from_pretrained``.
        """
        from safetensors.numpy import save_file

        self._check_usable("save_pretrained")
        if any(m.merged for _, m in self.lora_layers()):
            warnings.warn("PeftModel.save_pretrained: adapters are merged; saving A and B (the base weights are not saved)")
        os.makedirs(save_directory, exist_ok=True)
        tensors = {n: np.ascontiguousarray(a) for n, a in self.adapter_state_dict().items()}
        meta = {
            "peft_type": "LORA",
            "library": "minillm",
            **self.peft_config.to_dict(),
            "targeted_module_names": self._target_names,
            "adapter_tensor_names": list(tensors),
            "base_model_class": type(self.base_model).__name__,
            "base_model_config": _model_config_dict(self.base_model),
        }
        _atomic_write(os.path.join(save_directory, ADAPTER_WEIGHTS_NAME), lambda tmp: save_file(tensors, tmp, metadata={"format": "np"}))
        _atomic_write(os.path.join(save_directory, ADAPTER_CONFIG_NAME),
                      lambda tmp: _write_text(tmp, json.dumps(meta, indent=2, ensure_ascii=False) + "\n"))

    @classmethod
    def from_pretrained(cls, model: Module, model_id: str, is_trainable: bool = False) -> "PeftModel":
        """Re-create a saved adapter on ``model`` (the pretrained base model, weights loaded).

        The same layers as at saving time get adapters, then the saved A and B are loaded.
        ``is_trainable=False`` (peft's default) freezes the adapters and puts the model in
        eval mode; pass True to continue training.
        """
        meta = _read_adapter_config(model_id)
        config = LoraConfig.from_dict(meta)
        config.inference_mode = not is_trainable
        saved_cfg = meta.get("base_model_config")
        ours = _model_config_dict(model)
        if saved_cfg and ours and saved_cfg != ours:
            diff = sorted(k for k in set(saved_cfg) | set(ours) if saved_cfg.get(k) != ours.get(k))
            warnings.warn(f"PeftModel.from_pretrained: the base model's config differs from the adapter's in {diff}")
        names = meta.get("targeted_module_names")
        peft = cls(model, config, _target_names=names)  # names=None: match target_modules again
        peft._load_adapter_weights(model_id)
        if not is_trainable:
            peft.eval()
        return peft

    def load_adapter(self, model_id: str) -> None:
        """Load saved adapter weights into this model's adapters (same layers, same r)."""
        self._check_usable("load_adapter")
        meta = _read_adapter_config(model_id)
        if int(meta.get("r", -1)) != self.peft_config.r or float(meta.get("lora_alpha", -1)) != float(self.peft_config.lora_alpha):
            raise ValueError(
                f"PeftModel.load_adapter: {model_id} has r={meta.get('r')}, lora_alpha={meta.get('lora_alpha')}; "
                f"this model has r={self.peft_config.r}, lora_alpha={self.peft_config.lora_alpha}"
            )
        names = meta.get("targeted_module_names")
        if names is not None and list(names) != self._target_names:
            raise ValueError(
                f"PeftModel.load_adapter: {model_id} adapts {sorted(set(names) ^ set(self._target_names))} "
                "differently from this model"
            )
        self._load_adapter_weights(model_id)

    def _load_adapter_weights(self, model_id: str) -> None:
        from safetensors.numpy import load_file

        path = os.path.join(model_id, ADAPTER_WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"PeftModel: no {ADAPTER_WEIGHTS_NAME} in {model_id!r}")
        tensors = load_file(path)
        expected = set(self._adapter_names)
        missing = sorted(expected - set(tensors))
        unexpected = sorted(set(tensors) - expected)
        if missing or unexpected:
            raise KeyError(f"PeftModel: adapter file {path} does not fit this model: missing {missing}, unexpected {unexpected}")
        wrong = []
        for n, a in tensors.items():
            shape = self.base_model.get_parameter(n).shape
            if a.shape != shape:
                wrong.append(f"{n}: file has {a.shape}, model has {shape}")
        if wrong:
            raise ValueError(f"PeftModel: adapter file {path} does not fit this model (size mismatch): " + "; ".join(wrong))
        if any(m.merged for _, m in self.lora_layers()):
            raise RuntimeError("PeftModel: unmerge_adapter() before loading new adapter weights")
        self.base_model.load_state_dict(tensors, strict=False)


# ---------------------------------------------------------------------- small helpers
def _model_config_dict(model):
    cfg = getattr(model, "args", None)
    if cfg is None:
        cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return None


def _read_adapter_config(model_id: str) -> dict:
    path = os.path.join(model_id, ADAPTER_CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PeftModel: no {ADAPTER_CONFIG_NAME} in {model_id!r} (expected a directory written by save_pretrained)")
    from ..io.jsonfile import read_json_object  # here: minillm.io imports the models, which import nn

    meta = read_json_object(path)
    if meta.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"PeftModel: {path} is a {meta.get('peft_type')} adapter; only LORA is supported")
    return meta


def _write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _atomic_write(path: str, write) -> None:
    """Write to a temp file, then rename: a crash never leaves a half-written file."""
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)

"""A small ``peft``: LoRA and bottleneck adapters as a model wrapper with adapter files (Happy LLM 6.3.1, 6.3.5).

``PeftModel`` serves the methods that change layers *in place*: LoRA (``LoraConfig``, 6.3.2-6.3.5)
and Houlsby's bottleneck adapters (``BottleneckConfig``, 6.3.1). The methods that add virtual
tokens instead (prefix, prompt and P-tuning) live in ``minillm/peft/prompt.py``;
``get_peft_model`` picks the right one from the config's class.

The book fine-tunes with Hugging Face's ``peft`` library; this is the same API on top of
``minillm.nn.lora`` (the layer, the config, the injection), the way ``peft`` sits on top of
``torch``. It sits above ``nn`` and ``io`` in the layer diagram because it writes files.

Usage, as in the book's 6.3.5 (``import`` lines aside, the same code as with ``peft``)::

    from minillm.peft import LoraConfig, get_peft_model, PeftModel

    config = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["wq", "wv"])
    model = get_peft_model(model, config)        # modifies `model` in place, returns a PeftModel
    model.print_trainable_parameters()           # trainable params: ... || all params: ... || trainable%: ...
    ... train: model(input_ids, targets=labels).loss.backward(); optimizer.step() ...
    model.save_pretrained("out/lora")            # adapter_model.safetensors + adapter_config.json (small)

    base = Transformer(config)  ...load the pretrained weights...
    model = PeftModel.from_pretrained(base, "out/lora")   # the same adapted model again
    plain = model.merge_and_unload()             # a plain Transformer with W = W0 + B·A·α/r

An adapter directory holds two files, with ``peft``'s names so it looks familiar:
``adapter_model.safetensors`` (only the adapter tensors, by their ``state_dict`` names) and
``adapter_config.json`` (the ``LoraConfig``, the adapted layers' names, and the base model's
class and config, to warn when an adapter is loaded on a different model).
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections import OrderedDict
from typing import Iterator, Sequence

import numpy as np

from .._files import atomic_write
from ..io.checkpoint import model_config_dict
from ..io.guards import check_float_sources
from ..io.jsonfile import read_json_object
from ..io.safetensors import load_safetensors, save_safetensors
from ..nn.lora import (
    LLAMA_ALL_LINEAR_TARGETS, LLAMA_ATTENTION_TARGETS, LoraConfig, LoRALinear, book_lora_param_count,
    find_target_modules, inject_adapter_in_model, lora_layers, lora_param_formula,
)
from ..nn.adapter import AdapterLinear, BottleneckConfig, bottleneck_param_formula, inject_bottleneck_adapters
from ..nn.module import Module

__all__ = [
    "PeftModel", "get_peft_model", "ADAPTER_WEIGHTS_NAME", "ADAPTER_CONFIG_NAME",
    # the layer-level names, re-exported so `from minillm.peft import ...` is all a user needs
    "LoraConfig", "LoRALinear", "find_target_modules", "inject_adapter_in_model", "lora_param_formula",
    "book_lora_param_count", "LLAMA_ATTENTION_TARGETS", "LLAMA_ALL_LINEAR_TARGETS",
]

# The file names peft uses, so an adapter directory looks familiar.
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"


def get_peft_model(model: Module, peft_config) -> Module:
    """Add a parameter-efficient method to ``model``; everything else is frozen.

    * ``LoraConfig`` (6.3.4): the target layers become ``LoRALinear``; ``model`` is modified
      **in place** (as ``peft``'s ``inject_adapter_in_model``); returns a ``PeftModel``.
    * ``BottleneckConfig`` (6.3.1, Houlsby adapters): the target layers become
      ``AdapterLinear``, in place; returns a ``PeftModel``.
    * ``PrefixTuningConfig``, ``PromptTuningConfig``, ``PromptEncoderConfig`` (6.3.1, prefix /
      prompt / P-tuning): ``model`` is not changed, only frozen; returns a
      ``PeftModelForCausalLM`` that adds the virtual tokens (``minillm/peft/prompt.py``).
    """
    from .prompt import PROMPT_CONFIGS, PeftModelForCausalLM

    if isinstance(model, (PeftModel, PeftModelForCausalLM)):
        raise ValueError("get_peft_model: this model is already a PeftModel (one adapter per model)")
    if not isinstance(model, Module):
        raise TypeError(f"get_peft_model: expected an nn.Module, got {type(model).__name__}")
    if isinstance(peft_config, PROMPT_CONFIGS):
        return PeftModelForCausalLM(model, peft_config)
    if not isinstance(peft_config, (LoraConfig, BottleneckConfig)):
        raise TypeError(f"get_peft_model: expected a LoraConfig, BottleneckConfig, PrefixTuningConfig, PromptTuningConfig "
                        f"or PromptEncoderConfig, got {type(peft_config).__name__}")
    names = list(find_target_modules(model, peft_config.target_modules))
    return PeftModel(model, peft_config, _target_names=names)


# peft_type in adapter_config.json -> the config class of an in-place method
IN_PLACE_CONFIGS = {"LORA": LoraConfig, "BOTTLENECK": BottleneckConfig}


def peft_type_of(config) -> str:
    return "LORA" if isinstance(config, LoraConfig) else "BOTTLENECK"


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
        self._target_names = list(_target_names)
        if isinstance(peft_config, LoraConfig):
            self._adapter_names = inject_adapter_in_model(peft_config, model, self._target_names)  # 6.3.4
        else:
            self._adapter_names = inject_bottleneck_adapters(peft_config, model, self._target_names)  # 6.3.1

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

    @contextlib.contextmanager
    def mode(self, training: bool):
        """``Module.mode`` for the wrapper: the base model (not in this tree) is set and restored too."""
        was = self.training
        with self.base_model.mode(training):
            object.__setattr__(self, "training", training)
            try:
                yield self
            finally:
                object.__setattr__(self, "training", was)

    def extra_repr(self):
        c = self.peft_config
        if isinstance(c, LoraConfig):
            return f"base_model={type(self.base_model).__name__}, r={c.r}, lora_alpha={c.lora_alpha}"
        return f"base_model={type(self.base_model).__name__}, bottleneck adapters on {len(self._target_names)} layers"

    def _check_usable(self, what):
        if self._unloaded:
            raise RuntimeError(f"PeftModel.{what}: the adapters were removed by merge_and_unload()/unload(); use the returned base model")

    def lora_layers(self) -> Iterator[tuple]:
        """(name, LoRALinear) for every adapted layer."""
        return lora_layers(self)

    def tuner_layers(self) -> Iterator[tuple]:
        """(name, layer) for every layer this adapter replaced (LoRALinear or AdapterLinear)."""
        for name, m in self.base_model.named_modules():
            if isinstance(m, (LoRALinear, AdapterLinear)):
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
        return lora_param_formula([(m.out_features, m.in_features) for _, m in self.lora_layers()], self.peft_config.r)

    def expected_trainable_parameters(self) -> int:
        """The formula for this method: LoRA Σ r·(d_in + d_out); bottleneck adapters
        Σ (2·d·m + m + d) (``bottleneck_param_formula``). Extras (biases, modules_to_save) aside."""
        if isinstance(self.peft_config, LoraConfig):
            return self.expected_lora_parameters()
        layers = [m for _, m in self.tuner_layers()]
        return bottleneck_param_formula([m.out_features for m in layers], [m.bottleneck_dim for m in layers])

    # ------------------------------------------------------------------ merging
    def _check_mergeable(self, what):
        if not isinstance(self.peft_config, LoraConfig):
            raise RuntimeError(f"PeftModel.{what}: bottleneck adapters are nonlinear (ReLU between down and up) "
                               "and cannot be folded into the weights; use unload() to remove them")

    def merge_adapter(self) -> None:
        """Fold B·A·scaling into every adapted weight (forward becomes the plain model's)."""
        self._check_usable("merge_adapter")
        self._check_mergeable("merge_adapter")
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
        layers = [m for _, m in self.tuner_layers()]
        if any(getattr(m, "merged", False) for m in layers):
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
        self._check_mergeable("merge_and_unload")
        return self._unload(merge=True)

    def unload(self) -> Module:
        """Remove the adapters without merging: the base model as it was before injection."""
        return self._unload(merge=False)

    def _unload(self, merge: bool) -> Module:
        self._check_usable("merge_and_unload" if merge else "unload")
        model = self.base_model
        for name, m in list(self.tuner_layers()):
            if merge:
                m.merge()
            elif getattr(m, "merged", False):
                m.unmerge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, m.get_base_layer())  # weight/bias: the same Parameters
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
        pretrained model with ``PeftModel.from_pretrained``. Both files are written atomically.
        """
        self._check_usable("save_pretrained")
        if any(m.merged for _, m in self.lora_layers()):
            warnings.warn("PeftModel.save_pretrained: adapters are merged; saving A and B (the base weights are not saved)")
        os.makedirs(save_directory, exist_ok=True)
        tensors = self.adapter_state_dict()
        meta = {
            "peft_type": peft_type_of(self.peft_config),
            "library": "minillm",
            **self.peft_config.to_dict(),
            "targeted_module_names": self._target_names,
            "adapter_tensor_names": list(tensors),
            "base_model_class": type(self.base_model).__name__,
            "base_model_config": model_config_dict(self.base_model),
        }
        save_safetensors(tensors, os.path.join(save_directory, ADAPTER_WEIGHTS_NAME), metadata={"format": "np"})
        atomic_write(os.path.join(save_directory, ADAPTER_CONFIG_NAME), json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def from_pretrained(cls, model: Module, model_id: str, is_trainable: bool = False) -> "PeftModel":
        """Re-create a saved adapter on ``model`` (the pretrained base model, weights loaded).

        The same layers as at saving time get adapters, then the saved A and B are loaded.
        ``is_trainable=False`` (peft's default) freezes the adapters and puts the model in
        eval mode; pass True to continue training.
        """
        # Everything that can be checked without touching `model` is checked first; the rest
        # (the adapter tensors against the injected layers) runs after injection, and any failure
        # there removes the adapters again: `model` is left exactly as it was.
        if isinstance(model, PeftModel) or any(isinstance(m, (LoRALinear, AdapterLinear)) for _, m in model.named_modules()):
            raise ValueError("PeftModel.from_pretrained: the model already has LoRA layers (one adapter per model); "
                             "load the adapter on a plain base model")
        meta = _read_adapter_config(model_id, allow_prompt=True)
        from .prompt import PROMPT_CONFIG_BY_TYPE, PeftModelForCausalLM

        if meta.get("peft_type") in PROMPT_CONFIG_BY_TYPE:
            return PeftModelForCausalLM.from_pretrained(model, model_id, is_trainable=is_trainable)
        try:
            config = IN_PLACE_CONFIGS[meta.get("peft_type", "LORA")].from_dict(meta)
        except (TypeError, ValueError) as e:
            raise ValueError(f"PeftModel: {os.path.join(model_id, ADAPTER_CONFIG_NAME)}: {e}") from None
        config.inference_mode = not is_trainable
        saved_cfg = meta.get("base_model_config")
        ours = model_config_dict(model)
        if saved_cfg and ours and saved_cfg != ours:
            diff = sorted(k for k in set(saved_cfg) | set(ours) if saved_cfg.get(k) != ours.get(k))
            warnings.warn(f"PeftModel.from_pretrained: the base model's config differs from the adapter's in {diff}")
        names = meta.get("targeted_module_names")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError(f"PeftModel: {os.path.join(model_id, ADAPTER_CONFIG_NAME)}: targeted_module_names must be "
                             f"a list of module names, got {names!r}")
        tensors = _read_adapter_weights(model_id)  # a damaged file fails here, before any change
        was_training = model.training
        peft = cls(model, config, _target_names=names)  # names=None: match target_modules again
        try:
            peft._load_adapter_weights(model_id, tensors)
        except BaseException:
            peft.unload()  # the original Linear layers and every requires_grad flag come back
            model.train(was_training)
            raise
        if not is_trainable:
            peft.eval()
        return peft

    def load_adapter(self, model_id: str) -> None:
        """Load saved adapter weights into this model's adapters (same layers, same r)."""
        self._check_usable("load_adapter")
        meta = _read_adapter_config(model_id)
        if meta.get("peft_type", "LORA") != peft_type_of(self.peft_config):
            raise ValueError(f"PeftModel.load_adapter: {model_id} holds a {meta.get('peft_type')} adapter, "
                             f"this model has {peft_type_of(self.peft_config)}")
        if isinstance(self.peft_config, LoraConfig) and int(meta.get("r", -1)) != self.peft_config.r or float(meta.get("lora_alpha", -1)) != float(self.peft_config.lora_alpha):
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
        self._load_adapter_weights(model_id, _read_adapter_weights(model_id))

    def _load_adapter_weights(self, model_id: str, tensors: dict) -> None:
        """Check ``tensors`` (names, shapes, float dtypes) against this model's adapters, then load them."""
        path = os.path.join(model_id, ADAPTER_WEIGHTS_NAME)
        expected = set(self._adapter_names)
        missing = sorted(expected - set(tensors))
        unexpected = sorted(set(tensors) - expected)
        if missing or unexpected:
            raise ValueError(f"PeftModel: adapter file {path} does not fit this model: missing {missing}, unexpected {unexpected}")
        wrong = []
        for n, a in tensors.items():
            shape = self.base_model.get_parameter(n).shape
            if a.shape != shape:
                wrong.append(f"{n}: file has {a.shape}, model has {shape}")
        if wrong:
            raise ValueError(f"PeftModel: adapter file {path} does not fit this model (size mismatch): " + "; ".join(wrong))
        if any(m.merged for _, m in self.lora_layers()):
            raise RuntimeError("PeftModel: unmerge_adapter() before loading new adapter weights")
        check_float_sources(tensors, self.base_model, path)
        self.base_model.load_state_dict(tensors, strict=False)


def _read_adapter_weights(model_id: str) -> dict:
    path = os.path.join(model_id, ADAPTER_WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PeftModel: no {ADAPTER_WEIGHTS_NAME} in {model_id!r}")
    return load_safetensors(path)


def _read_adapter_config(model_id: str, allow_prompt: bool = False) -> dict:
    path = os.path.join(model_id, ADAPTER_CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PeftModel: no {ADAPTER_CONFIG_NAME} in {model_id!r} (expected a directory written by save_pretrained)")
    meta = read_json_object(path)
    from .prompt import PROMPT_CONFIG_BY_TYPE

    known = set(IN_PLACE_CONFIGS) | (set(PROMPT_CONFIG_BY_TYPE) if allow_prompt else set())
    if meta.get("peft_type", "LORA") not in known:
        raise ValueError(f"PeftModel: {path} is a {meta.get('peft_type')} adapter; expected one of {sorted(known)}")
    return meta

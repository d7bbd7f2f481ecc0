"""``Module`` and ``Parameter``: how a model keeps track of its weights (Happy LLM 5.1).

Every layer of the book's LLaMA2 is an ``nn.Module``. Assigning attributes is all it takes
to build a model, exactly as in PyTorch::

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Linear(4, 8)            # a sub-module: registered under "w1"
            self.scale = nn.Parameter(mi.ones(8))  # a parameter: registered under "scale"

        def forward(self, x):
            return self.w1(x) * self.scale

``Module.__setattr__`` sorts what you assign into three dicts (``_parameters``,
``_buffers``, ``_modules``); ``named_parameters()`` then walks the tree and names each
weight by its path (``layers.0.attention.wq.weight``), which is also the key it gets in
``state_dict()`` and on disk. A parameter shared by two modules (the tied embedding and
output head of LLaMA) is listed once by ``parameters()``, as in PyTorch.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict, namedtuple
from typing import Callable, Iterator

import numpy as np

from ..tensor import Tensor

__all__ = ["Parameter", "Module", "ModuleList", "ModuleDict", "Sequential", "IncompatibleKeys"]


class Parameter(Tensor):
    """A tensor that is a model weight: ``requires_grad=True`` by default, and registered by
    ``Module`` when assigned as an attribute. ``Parameter(t)`` shares ``t``'s array."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = np.empty(0, dtype=np.float32)
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model. Subclasses call ``super().__init__()`` first,
    assign their parameters / sub-modules as attributes, and define ``forward``."""

    training: bool

    def __init__(self):
        # object.__setattr__ skips our own __setattr__ (which needs these dicts to exist)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ calling
    # Why a module without forward() cannot be called (a container overrides this hint).
    _no_forward_hint = "define forward(self, ...) in the subclass"

    def __call__(self, *args, **kwargs):
        forward = getattr(type(self), "forward", None)
        if forward is None:
            raise TypeError(f"{type(self).__name__} has no forward(); {self._no_forward_hint}")
        return forward(self, *args, **kwargs)

    # ------------------------------------------------------------------ registration
    def _check_init(self, what):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call (call super().__init__() first)")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._check_init("parameters")
        _check_name(name, self)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' as parameter '{name}' (nn.Parameter or None expected)")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A tensor that belongs to the module but is not trained (e.g. RoPE's cos/sin table).
        Persistent buffers are saved in ``state_dict()``; non-persistent ones are not."""
        self._check_init("buffers")
        _check_name(name, self)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' as buffer '{name}' (Tensor or None expected)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        self._check_init("child modules")
        _check_name(name, self)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        d = self.__dict__
        if isinstance(value, Parameter):
            self._check_init("parameters")
            _discard(name, d, d["_buffers"], d["_modules"])
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            self._check_init("child modules")
            _discard(name, d, d["_parameters"], d["_buffers"])
            d["_modules"][name] = value
        elif "_parameters" in d and name in d["_parameters"]:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' (nn.Parameter or None expected)")
            d["_parameters"][name] = None
        elif "_modules" in d and name in d["_modules"]:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' (nn.Module or None expected)")
            d["_modules"][name] = None
        elif "_buffers" in d and name in d["_buffers"]:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' (Tensor or None expected)")
            d["_buffers"][name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the three registries, else fail loudly.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(registry, {}):
                del self.__dict__[registry][name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    # ------------------------------------------------------------------ walking the tree
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """Every module in the tree (this one first, named ``""``), depth first."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            yield from m.named_modules(memo, prefix + ("." if prefix else "") + name, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def _named_members(self, registry, prefix, recurse, remove_duplicate):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mod_prefix, mod in mods:
            for name, t in getattr(mod, registry).items():
                if t is None:
                    continue
                if remove_duplicate:
                    if id(t) in seen:
                        continue
                    seen.add(id(t))
                yield mod_prefix + ("." if mod_prefix else "") + name, t

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """(name, Parameter) pairs; a shared (tied) parameter is listed once, under its first name."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> "Module":
        """``model.get_submodule("layers.0.attention")``."""
        mod = self
        for part in target.split(".") if target else []:
            if part not in mod._modules or mod._modules[part] is None:
                raise AttributeError(f"{type(mod).__name__} has no submodule '{part}' (while resolving '{target}')")
            mod = mod._modules[part]
        return mod

    def get_parameter(self, target: str) -> Parameter:
        """``model.get_parameter("layers.0.attention.wq.weight")``."""
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in mod._parameters or mod._parameters[name] is None:
            raise AttributeError(f"{type(mod).__name__} has no parameter '{name}' (while resolving '{target}')")
        return mod._parameters[name]

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        """Call ``fn`` on every sub-module (children first) and then on this module."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout active) for this module and all sub-modules."""
        if not isinstance(mode, bool):
            raise ValueError(f"train(): mode must be a bool, got {mode!r}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode: ``train(False)`` (dropout off)."""
        return self.train(False)

    @contextlib.contextmanager
    def mode(self, training: bool):
        """Set train/eval mode inside a ``with`` block and restore every sub-module's own mode
        after it, also on errors::

            with model.mode(training=False):   # dropout off while generating or evaluating
                ...
        """
        if not isinstance(training, bool):
            raise ValueError(f"mode(): training must be a bool, got {training!r}")
        saved = [(m, m.training) for m in self.modules()]
        self.train(training)
        try:
            yield self
        finally:
            for m, was in saved:
                object.__setattr__(m, "training", was)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the accumulated gradients (``p.grad = None``, or zeros with ``set_to_none=False``)."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.data[...] = 0

    def num_parameters(self, trainable_only: bool = False) -> int:
        """How many numbers the model learns (a tied weight counts once)."""
        return sum(p.data.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def to(self, dtype) -> "Module":
        """Convert every floating point parameter and buffer to ``dtype`` in place (e.g.
        ``model.to(mi.float64)`` for a gradient check). Tied parameters stay tied."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"Module.to(): expected a floating point dtype, got {dtype}")
        for t in list(self.parameters()) + list(self.buffers()):
            if t.data.dtype.kind == "f" and t.data.dtype != dtype:
                t.data = t.data.astype(dtype)
                if t.grad is not None:
                    t.grad.data = t.grad.data.astype(dtype)
        return self

    def float(self) -> "Module":
        return self.to(np.float32)

    def double(self) -> "Module":
        return self.to(np.float64)

    # ------------------------------------------------------------------ state dict
    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> "OrderedDict[str, Tensor]":
        """Every parameter and persistent buffer by its dotted name. The tensors share memory
        with the model (detached unless ``keep_vars``), as in PyTorch. A tied weight appears
        under each of its names."""
        out = OrderedDict()
        for mod_prefix, mod in self.named_modules(prefix=prefix):
            dot = mod_prefix + ("." if mod_prefix else "")
            for name, p in mod._parameters.items():
                if p is not None:
                    out[dot + name] = p if keep_vars else p.detach()
            for name, b in mod._buffers.items():
                if b is not None and name not in mod._non_persistent_buffers:
                    out[dot + name] = b if keep_vars else b.detach()
        return out

    def _state_targets(self):
        """name -> tensor for everything ``state_dict`` would list (shared tensors under every name)."""
        targets = OrderedDict()
        for mod_prefix, mod in self.named_modules(remove_duplicate=False):
            dot = mod_prefix + ("." if mod_prefix else "")
            for name, p in mod._parameters.items():
                if p is not None:
                    targets[dot + name] = p
            for name, b in mod._buffers.items():
                if b is not None and name not in mod._non_persistent_buffers:
                    targets[dot + name] = b
        return targets

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays from ``state_dict`` (name -> Tensor or ndarray) into this model, in place.

        A shape mismatch always raises ``RuntimeError`` naming the key and both shapes. With
        ``strict=True`` (the default) missing or unexpected keys raise ``RuntimeError`` naming
        them all; with ``strict=False`` they are returned. A tied weight is satisfied by any
        one of its names (a file may store ``tok_embeddings.weight`` and omit ``output.weight``).
        Values are cast to the parameter's dtype.
        """
        targets = self._state_targets()
        unexpected = [k for k in state_dict if k not in targets]
        mismatched = []
        for key, t in targets.items():
            if key in state_dict:
                src = state_dict[key]
                src = src.data if isinstance(src, Tensor) else np.asarray(src)
                if src.shape != t.data.shape:
                    mismatched.append(f"{key}: checkpoint has shape {src.shape}, model has {t.data.shape}")
        if mismatched:
            raise RuntimeError(f"load_state_dict for {type(self).__name__}: size mismatch for " + "; ".join(mismatched))
        loaded_ids = set()
        for key, t in targets.items():
            if key in state_dict:
                src = state_dict[key]
                src = src.data if isinstance(src, Tensor) else np.asarray(src)
                if src.dtype.kind not in "fiub":
                    raise TypeError(f"load_state_dict: {key} has unsupported dtype {src.dtype}")
                if src is not t.data:
                    t.data[...] = src  # in place: optimizers and tied modules keep the same array
                loaded_ids.add(id(t))
        missing = [k for k, t in targets.items() if k not in state_dict and id(t) not in loaded_ids]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing keys: " + ", ".join(missing))
            if unexpected:
                parts.append("unexpected keys: " + ", ".join(unexpected))
            raise RuntimeError(f"load_state_dict(strict=True) for {type(self).__name__}: " + "; ".join(parts))
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """One line of settings shown in the repr, e.g. ``in_features=4, out_features=8``."""
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"


def _check_name(name, module):
    if not isinstance(name, str) or not name or "." in name:
        raise KeyError(f"{type(module).__name__}: attribute name must be a non-empty string without '.', got {name!r}")


def _discard(name, d, *registries):
    """Forget ``name`` as a plain attribute and in the other registries (it is being re-registered)."""
    d.pop(name, None)
    for r in registries:
        r.pop(name, None)


# ---------------------------------------------------------------------- containers
class ModuleList(Module):
    """A list of modules, registered as ``"0"``, ``"1"``, ... (the book's ``self.layers``)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _index(self, idx):
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"ModuleList index {idx} out of range for length {n}")
        return str(idx % n)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[self._index(idx)]

    def __setitem__(self, idx, module):
        self.add_module(self._index(idx), module)

    def __delitem__(self, idx):
        mods = list(self._modules.values())
        del mods[idx]
        self._modules.clear()
        for i, m in enumerate(mods):
            self._modules[str(i)] = m

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules):
        return self.extend(modules)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        mods = list(self._modules.values())
        mods.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(mods):
            self.add_module(str(i), m)

    _no_forward_hint = "iterate over it (for layer in self.layers: ...)"


class ModuleDict(Module):
    """A dict of modules, registered under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        if key not in self._modules:
            raise KeyError(f"ModuleDict has no key {key!r}; keys: {list(self._modules)}")
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def pop(self, key):
        m = self[key]
        del self._modules[key]
        return m

    def update(self, modules) -> None:
        items = modules.items() if hasattr(modules, "items") else modules
        for k, m in items:
            self[k] = m

    _no_forward_hint = "call its members"


class Sequential(Module):
    """Modules applied one after the other: ``Sequential(Linear(4, 8), Linear(8, 2))(x)``."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def __getitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return Sequential(*mods[idx])
        if not -len(mods) <= idx < len(mods):
            raise IndexError(f"Sequential index {idx} out of range for length {len(mods)}")
        return mods[idx]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

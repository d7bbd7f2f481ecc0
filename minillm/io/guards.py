"""Checks every loader runs on what a file tells it, before it believes it.

A file a user downloads is data from a stranger. Three rules, one helper each:

* **Names stay inside the folder** (``resolve_inside``). A loader that follows a file name
  written in another file (a shard index's ``weight_map``) resolves it inside the directory
  the user named and refuses an absolute path, ``..``, or a symlink that leads out.
* **JSON types are strict** (``json_bool``, ``json_int``, ``json_float``). ``bool("false")`` is
  ``True`` and ``int(2.9)`` is 2: a flag must be a JSON boolean, a size an integer, a float a
  finite number; anything else is refused with the file and the field named.
* **Float parameters load only from float tensors** (``check_float_sources``). Casting an
  integer or boolean tensor into a float weight "works" and gives garbage.
"""
from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["resolve_inside", "json_bool", "json_int", "json_float", "check_float_sources", "refuse_lora_layers"]

_MISSING = object()


def resolve_inside(directory, name, source: str, what: str = "file", extra_roots=()) -> str:
    """The path of ``name`` (a relative file name read from ``source``) inside ``directory``.

    Refuses (ValueError naming ``source`` and the name): a non-string, an empty or absolute
    name, a ``..`` component, and a name whose real path (symlinks followed) is outside the
    real ``directory``. ``extra_roots`` are further real directories a symlink may lead into
    (the Hugging Face cache keeps every file of a snapshot as a symlink into ``../../blobs``:
    the index file's own real folder is allowed for its shards).
    """
    if not isinstance(name, str):
        raise ValueError(f"{source}: {what} name {name!r} is a {type(name).__name__}, expected a string")
    parts = name.replace("\\", "/").split("/")
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"{source}: {what} {name!r} is not a plain relative name inside {os.fspath(directory)!r}; refused")
    base = os.path.realpath(os.fspath(directory))
    path = os.path.join(base, name)
    real = os.path.realpath(path)
    roots = [base] + [os.path.realpath(r) for r in extra_roots]
    if not any(os.path.commonpath([real, r]) == r for r in roots):
        raise ValueError(f"{source}: {what} {name!r} leads outside {os.fspath(directory)!r} (through a symlink); refused")
    return path


def _get(d: dict, key: str, default, source: str):
    value = d.get(key, default)
    if value is _MISSING:
        raise ValueError(f"{source}: missing field {key!r}")
    return value


def json_bool(d: dict, key: str, source: str, default=_MISSING, allow_none: bool = False):
    """``d[key]`` if it is a JSON boolean (``true``/``false``), else ValueError naming the field."""
    value = _get(d, key, default, source)
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        raise ValueError(f"{source}: field {key!r} must be true or false (a JSON boolean), got {value!r}")
    return value


def json_int(d: dict, key: str, source: str, default=_MISSING, minimum=None, allow_none: bool = False):
    """``d[key]`` if it is a JSON integer (not a bool, not ``2.0``) ``>= minimum``."""
    value = _get(d, key, default, source)
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{source}: field {key!r} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{source}: field {key!r} must be >= {minimum}, got {value}")
    return value


def json_float(d: dict, key: str, source: str, default=_MISSING, positive: bool = False) -> float:
    """``float(d[key])`` if it is a finite JSON number (an int is fine, a bool or a string is not)."""
    value = _get(d, key, default, source)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{source}: field {key!r} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{source}: field {key!r} must be > 0, got {value!r}")
    return float(value)


def check_float_sources(tensors: dict, model, source: str, names: dict | None = None) -> None:
    """Refuse an integer or boolean tensor for a floating-point parameter of ``model``.

    ``tensors``: name -> array as read from ``source``; ``names`` maps a tensor name to the
    model's ``state_dict`` name when they differ (Hugging Face files). Unknown names are left
    to the loader's own missing/unexpected check.
    """
    state = model.state_dict()
    bad = []
    for key, arr in tensors.items():
        target = state.get(names.get(key, key) if names else key)
        if target is None:
            continue
        dst = target.data.dtype if hasattr(target, "data") else np.asarray(target).dtype
        src = np.asarray(arr).dtype
        if np.issubdtype(dst, np.floating) and not np.issubdtype(src, np.floating):
            bad.append(f"{key} ({src})")
    if bad:
        raise ValueError(f"{source}: tensor(s) {bad} are not floating point but the model's parameters are; "
                         "refusing to cast (the file is corrupt or not a weights file)")


def bounded_shapes(entries, max_tensors: int | None = None) -> dict:
    """``{name: shape}`` from ``entries`` (an iterable of (name, shape), usually a generator over a
    config's layers). ``max_tensors`` (the weights file's count) bounds the work: past twice that
    (plus slack, so a config one layer off still gets the precise list of missing tensors from
    ``check_header_shapes``) it stops, and a hostile ``"num_layers": 10**12`` costs no long loop."""
    limit = None if max_tensors is None else 2 * max_tensors + 64
    shapes = {}
    for name, shape in entries:
        if limit is not None and len(shapes) >= limit:
            raise ValueError(f"the config describes more than {limit} tensors but the weights hold only "
                             f"{max_tensors}: the weights do not match config.json")
        shapes[name] = tuple(int(n) for n in shape)
    return shapes


def check_header_shapes(expected: dict, shapes: dict, source: str, ignore=None) -> None:
    """Refuse weights whose header (``shapes``: name -> shape, read without loading a tensor) is
    not what the config describes (``expected``: name -> shape). Called *before* the model is
    allocated, so a config with ``"vocab_size": 10**9`` is an error message, not terabytes asked
    of the allocator. ``ignore(name)``: header names a writer may add that we drop (tied copies,
    buffers). Wrong shapes, missing and unexpected names are all listed (8 of each at most)."""
    ignore = ignore or (lambda name: False)
    wrong = [f"{n}: config gives {tuple(s)}, file has {tuple(shapes[n])}"
             for n, s in expected.items() if n in shapes and tuple(shapes[n]) != tuple(s)]
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(n for n in set(shapes) - set(expected) if not ignore(n))
    if wrong or missing or unexpected:
        shown = wrong[:8] + ([f"missing tensors {missing[:8]}"] if missing else []) + (
            [f"unexpected tensors {unexpected[:8]}"] if unexpected else [])
        raise ValueError(f"{source}: the weights do not match config.json (checked before building the model): "
                         + "; ".join(shown))


def check_weights_file(path: str, state_shapes, to_file=None, file_name=None, ignore=None) -> None:
    """Compare a safetensors file's header with the tensors a config describes, before any model
    is built or tensor read (issue 25 §5). ``state_shapes(max_tensors)`` -> ``{our name: shape}``
    (a family's ``STATE_SHAPES`` function with its config bound); ``to_file(name, shape)`` ->
    the (name, shape) the file stores it under (Hugging Face names, transposed layouts);
    ``file_name(key)`` normalises the file's own names; ``ignore``: see ``check_header_shapes``."""
    from .safetensors import read_safetensors_shapes  # guards is imported by the loaders that read files

    header = {(file_name(k) if file_name else k): s for k, (_, s) in read_safetensors_shapes(path).items()}
    try:
        ours = state_shapes(max_tensors=len(header))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    expected = dict(to_file(n, s) for n, s in ours.items()) if to_file else ours
    check_header_shapes(expected, header, path, ignore)


def refuse_lora_layers(model, where: str) -> None:
    """A model with injected LoRA layers saves names (``...lora_A.weight``) no plain loader accepts."""
    from ..nn.lora import LoRALinear  # io sits above nn

    if type(model).__name__ == "PeftModel" or any(isinstance(m, LoRALinear) for _, m in model.named_modules()):
        raise ValueError(
            f"{where}: the model has LoRA layers injected; a plain model directory cannot hold them. "
            "Call merge_and_unload() and save the returned model (a plain model with W = W0 + B·A·α/r), or "
            "save only the adapter with save_pretrained(dir)"
        )

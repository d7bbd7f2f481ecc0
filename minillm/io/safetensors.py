"""Reading and writing ``.safetensors`` files: weights as plain data.

The format is simple enough to read by hand:

    [8 bytes: N, little-endian u64][N bytes: JSON header][raw tensor bytes ...]

The header maps each tensor name to ``{"dtype": "F32", "shape": [..], "data_offsets": [start, end]}``
(offsets into the raw bytes that follow the header), plus an optional ``"__metadata__"``
dict of strings. Nothing in the file is executed when it is loaded (unlike ``torch.save`` files).

``load_safetensors`` is our own reader so that every problem names the file and the
tensor (a truncated download, a header that does not match the data) and so it can read
bfloat16 checkpoints (NumPy has no bfloat16: they become float32). Writing uses the
``safetensors`` package, the reference implementation, to a temporary file that is then
renamed (``minillm._files.atomic_path``), so a crash never leaves a half-written file behind.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from .._files import atomic_path

__all__ = ["load_safetensors", "save_safetensors", "read_safetensors_header", "read_safetensors_shapes"]

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,  # BF16 is widened below
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors_header(path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the byte offset where its data starts."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file (only {size} bytes)")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise ValueError(f"{path}: truncated or not a safetensors file: header of {n} bytes, file has {size - 8} after the length")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
    return header, 8 + n


def _int_list(value, length=None) -> bool:
    """A JSON list of non-negative ints (a JSON bool or float is not an int here)."""
    return (isinstance(value, list) and (length is None or len(value) == length)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value))


def _check_entries(path: str, header: dict, n_data: int) -> list:
    """``[(name, dtype_name, shape, start, end)]`` of the header's tensors, every field checked.

    Refused, naming the file and the tensor: a missing or non-JSON-int field (``"shape": [2.0]``,
    ``"data_offsets": [0, "8"]``), a negative dimension or offset, a byte count that does not
    match the shape, bytes beyond the end of the file, and two tensors whose bytes overlap (one
    would silently read the other's data).
    """
    entries = []
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise ValueError(f"{path}: \"__metadata__\" must be an object of strings, got {metadata!r}")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise ValueError(f"{path}: tensor '{name}' has a malformed header entry {info!r} "
                             "(expected dtype, shape and data_offsets)")
        dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {dtype_name!r} (supported: {sorted(_DTYPES)})")
        if not _int_list(shape):
            raise ValueError(f"{path}: tensor '{name}' has shape {shape!r}; expected a list of non-negative integers")
        if not _int_list(offsets, 2) or offsets[0] > offsets[1]:
            raise ValueError(f"{path}: tensor '{name}' has data_offsets {offsets!r}; expected [start, end] with "
                             "integers 0 <= start <= end")
        s, e = offsets
        itemsize = np.dtype(_DTYPES[dtype_name]).itemsize
        expected = math.prod(shape) * itemsize  # Python ints: no overflow on a hostile shape
        if e - s != expected:
            raise ValueError(
                f"{path}: tensor '{name}' of shape {tuple(shape)} ({dtype_name}) needs {expected} bytes, header gives "
                f"offsets [{s}, {e})"
            )
        if e > n_data:
            raise ValueError(f"{path}: truncated file: tensor '{name}' needs bytes [{s}, {e}) of the data section, "
                             f"which has only {n_data}")
        entries.append((name, dtype_name, tuple(shape), s, e))
    previous = None
    for entry in sorted(entries, key=lambda t: (t[3], t[4])):
        if entry[4] == entry[3]:  # an empty tensor occupies no bytes
            continue
        if previous is not None and entry[3] < previous[4]:
            raise ValueError(f"{path}: tensors '{previous[0]}' [{previous[3]}, {previous[4]}) and '{entry[0]}' "
                             f"[{entry[3]}, {entry[4]}) overlap in the data section (a corrupt or crafted file)")
        previous = entry
    return entries


def load_safetensors(path) -> dict[str, np.ndarray]:
    """name -> NumPy array (writable copies). BF16 tensors are returned as float32.

    The whole header is checked (``_check_entries``) before any tensor is built.
    """
    path = os.fspath(path)
    header, start = read_safetensors_header(path)
    size = os.path.getsize(path)
    entries = _check_entries(path, header, size - start)
    out = {}
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    if len(data) != size - start:  # the file changed under us
        raise ValueError(f"{path}: truncated while reading ({len(data)} of {size - start} data bytes)")
    for name, dtype_name, shape, s, e in entries:
        dtype = np.dtype(_DTYPES[dtype_name])
        arr = np.frombuffer(data, dtype=dtype, count=(e - s) // dtype.itemsize, offset=s).reshape(shape)
        if dtype_name == "BF16":  # bfloat16 = the top 16 bits of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.copy()
    return out


def read_safetensors_shapes(path) -> dict:
    """``name -> (dtype name, shape)`` from the header alone (no tensor data is read): lets a loader
    compare a config with the weights before it allocates anything."""
    path = os.fspath(path)
    header, start = read_safetensors_header(path)
    entries = _check_entries(path, header, os.path.getsize(path) - start)
    return {name: (dtype_name, shape) for name, dtype_name, shape, _, _ in entries}


def save_safetensors(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write name -> array (or Tensor) to ``path`` (atomically). Metadata values must be strings."""
    from safetensors.numpy import save_file

    arrays = {}
    for name, t in tensors.items():
        a = t.data if hasattr(t, "data") and not isinstance(t, np.ndarray) else np.asarray(t)
        arrays[name] = np.ascontiguousarray(a)
    with atomic_path(path) as tmp:  # the library streams into a temp file; renamed when complete
        save_file(arrays, tmp, metadata=metadata)

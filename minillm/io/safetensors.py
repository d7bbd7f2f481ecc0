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
import os

import numpy as np

from .._files import atomic_path

__all__ = ["load_safetensors", "save_safetensors", "read_safetensors_header"]

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


def load_safetensors(path) -> dict[str, np.ndarray]:
    """name -> NumPy array (writable copies). BF16 tensors are returned as float32."""
    path = os.fspath(path)
    header, start = read_safetensors_header(path)
    size = os.path.getsize(path)
    n_data = size - start
    out = {}
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (s, e) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor '{name}' has a malformed header entry {info!r}") from None
        if dtype_name not in _DTYPES:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {dtype_name}")
        dtype = np.dtype(_DTYPES[dtype_name])
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not 0 <= s <= e or e - s != expected:
            raise ValueError(
                f"{path}: tensor '{name}' of shape {shape} ({dtype_name}) needs {expected} bytes, header gives offsets [{s}, {e})"
            )
        if e > n_data:
            raise ValueError(f"{path}: truncated file: tensor '{name}' needs bytes [{s}, {e}) of the data section, which has only {n_data}")
        arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=s).reshape(shape)
        if dtype_name == "BF16":  # bfloat16 = the top 16 bits of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.copy()
    return out


def save_safetensors(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write name -> array (or Tensor) to ``path`` (atomically). Metadata values must be strings."""
    from safetensors.numpy import save_file

    arrays = {}
    for name, t in tensors.items():
        a = t.data if hasattr(t, "data") and not isinstance(t, np.ndarray) else np.asarray(t)
        arrays[name] = np.ascontiguousarray(a)
    with atomic_path(path) as tmp:  # the library streams into a temp file; renamed when complete
        save_file(arrays, tmp, metadata=metadata)

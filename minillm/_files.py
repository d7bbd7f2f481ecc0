"""Writing files so that a crash never leaves half of one: the one helper every writer uses.

``atomic_write(path, data)`` writes to a temporary file in the same directory, flushes it to
the disk (``fsync``), then renames it over ``path``. A rename within one directory is atomic,
so a reader (or the next run after a ``kill -9``) sees either the old file or the new one,
never a mixture. The directory is fsynced too, so the rename itself survives a power cut.

It sits at the bottom of the layer diagram (it imports only the standard library), so the
tokenizers, ``io``, ``data`` and ``train`` all share it.
"""
from __future__ import annotations

import os
import tempfile
from typing import Union

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(directory: Union[str, os.PathLike]) -> None:
    """Flush a directory entry (a finished rename) to disk; a no-op where the OS cannot."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:  # e.g. Windows: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Union[str, os.PathLike], data: Union[bytes, str], encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``data`` (bytes, or str encoded with ``encoding``) atomically.

    The temporary file lives next to ``path`` (a rename across file systems is not atomic)
    and is removed again if anything fails, leaving any earlier ``path`` untouched.
    """
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode(encoding)
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write({path!r}): data must be bytes or str, got {type(data).__name__}")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(directory)

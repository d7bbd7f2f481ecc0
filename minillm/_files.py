"""Writing files so that a crash never leaves half of one: the one helper every writer uses.

``atomic_write(path, data)`` writes to a temporary file in the same directory, flushes it to
the disk (``fsync``), then renames it over ``path``. A rename within one directory is atomic,
so a reader (or the next run after a ``kill -9``) sees either the old file or the new one,
never a mixture. The directory is fsynced too, so the rename itself survives a power cut.

Writers that stream (a token file written in chunks, a safetensors file written by its
library, a PNG written by matplotlib) use the same steps through ``atomic_path``::

    with atomic_path("data/train.bin") as tmp:   # tmp: a fresh name next to the target
        with open(tmp, "wb") as f:
            ...write as much as you like...
    # here data/train.bin is the complete new file; after an exception, the old one is untouched

It sits at the bottom of the layer diagram (it imports only the standard library), so the
tokenizers, ``io``, ``data``, ``train`` and ``peft`` all share it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator, Union

__all__ = ["atomic_write", "atomic_path", "fsync_file", "fsync_dir"]

PathLike = Union[str, os.PathLike]


def fsync_file(path: PathLike) -> None:
    """Flush a finished file's bytes to disk (before a rename publishes it)."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: PathLike) -> None:
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


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; when the block ends without an exception,
    fsync that file, rename it over ``path`` and fsync the directory.

    If the block raises, the temporary file is removed and any earlier ``path`` is left
    untouched. The temporary name keeps ``path``'s extension (``.tmp-XXXX-loss.png``), so
    writers that pick a format from the name (matplotlib) still work. The temporary file
    lives in the same directory because a rename across file systems is not atomic.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)  # the caller (or its library) opens the name itself
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(directory)


def atomic_write(path: PathLike, data: Union[bytes, str], encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``data`` (bytes, or str encoded with ``encoding``) atomically.

    A str is written as it is (no newline translation), so files are identical on every OS.
    """
    if isinstance(data, str):
        data = data.encode(encoding)
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write({os.fspath(path)!r}): data must be bytes or str, got {type(data).__name__}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)

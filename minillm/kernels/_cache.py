"""Where the compiled kernels are cached, including on a read-only install.

Every Numba kernel here is compiled on its first call and, with ``cache=CACHE``, saved to disk,
so only a fresh install pays the compilation (benchmarks/compile_cost.py measures it). Numba
looks for a writable place in this order: ``NUMBA_CACHE_DIR`` if set, the ``__pycache__``
folder next to the source file, then the user-wide cache (``~/.cache/numba``). When none of
them is writable (a read-only install *and* a read-only home, as in some containers), Numba
would refuse to even define a ``cache=True`` function, so ``import minillm`` would fail.

``plan()`` decides, once at import, what to do instead:

    a writable place exists             -> nothing changes (Numba's own choice)
    none, but the temp dir is writable  -> cache in <tempdir>/minillm-numba-cache-<uid>, with a warning
    nothing writable at all             -> CACHE = False: every run compiles again, with a warning

``plan`` takes the writability test as an argument, so the tests can play each case.
"""
from __future__ import annotations

import os
import tempfile
import warnings

import numba


def writable(path: str) -> bool:
    """The test Numba itself applies: create the folder and a temporary file in it."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def plan(kernels_dir: str, is_writable=writable, user_cache_dir: str | None = None, chosen: str | None = None):
    """(cache enabled, cache dir to set or None, warning or None) for kernels in ``kernels_dir``.

    ``chosen`` is NUMBA_CACHE_DIR (Numba's ``config.CACHE_DIR``), ``user_cache_dir`` Numba's
    user-wide folder."""
    if user_cache_dir is None:
        from numba.misc.appdirs import AppDirs

        user_cache_dir = AppDirs(appname="numba", appauthor=False).user_cache_dir
    candidates = ([chosen] if chosen else []) + [os.path.join(kernels_dir, "__pycache__"), user_cache_dir]
    if any(is_writable(p) for p in candidates):
        return True, None, None
    fallback = os.path.join(tempfile.gettempdir(), f"minillm-numba-cache-{os.getuid() if hasattr(os, 'getuid') else 0}")
    tried = ", ".join(candidates)
    if is_writable(fallback):
        return True, fallback, (
            f"minillm: no writable Numba cache folder ({tried}); compiled kernels are cached in {fallback} "
            "instead (set NUMBA_CACHE_DIR to choose another place)")
    return False, None, (
        f"minillm: no writable Numba cache folder ({tried}, {fallback}); kernels are compiled again in every "
        "process (set NUMBA_CACHE_DIR to a writable folder to cache them)")


def _apply() -> bool:
    enabled, cache_dir, message = plan(os.path.dirname(os.path.abspath(__file__)), chosen=numba.config.CACHE_DIR or None)
    if cache_dir is not None:
        numba.config.CACHE_DIR = cache_dir  # read by Numba's cache locator when each kernel is defined
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return enabled


CACHE = _apply()  # the `cache=` of every @njit in minillm/kernels

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

No full garbage collection while Numba compiles (`_NoFullGCWhileCompiling`): the compiler
allocates millions of objects that live through a compilation, and Python's collector, counting
them, ran 14 full collections (each walking every object in the process) during a fresh
install's first `--quick` run: ~1.1 of its ~13 CPU s of compiling (benchmarks/README.md, "Cold
start", round 5). From the start to the end of each compilation (Numba's "numba:compile" event;
not while loading from the cache) only young collections run; the user's thresholds are back
after it. MINILLM_COMPILE_GC=1 leaves the collector alone.
"""
from __future__ import annotations

import gc
import os
import tempfile
import threading
import warnings

import numba
from numba.core import event


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
    candidates = _candidates(kernels_dir, user_cache_dir, chosen)
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


def _candidates(kernels_dir: str, user_cache_dir: str | None, chosen: str | None) -> list:
    """The folders Numba tries, in its order."""
    if user_cache_dir is None:
        from numba.misc.appdirs import AppDirs

        user_cache_dir = AppDirs(appname="numba", appauthor=False).user_cache_dir
    return ([chosen] if chosen else []) + [os.path.join(kernels_dir, "__pycache__"), user_cache_dir]


def cache_folder(is_writable=writable) -> str | None:
    """The first writable folder of Numba's order for the kernels (after ``plan``'s choice was
    applied), where their compiled code is kept; None when the cache is off. Other files that
    belong with that code (``pipeline.compile_ahead``'s stamps) go there too."""
    if not CACHE:
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    return next((p for p in _candidates(here, None, numba.config.CACHE_DIR or None) if is_writable(p)), None)


def _apply() -> bool:
    enabled, cache_dir, message = plan(os.path.dirname(os.path.abspath(__file__)), chosen=numba.config.CACHE_DIR or None)
    if cache_dir is not None:
        numba.config.CACHE_DIR = cache_dir  # read by Numba's cache locator when each kernel is defined
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return enabled


CACHE = _apply()  # the `cache=` of every @njit in minillm/kernels


_NO_FULL_GC = 1_000_000  # the oldest generation's threshold while compiling: never reached in one compilation


class _NoFullGCWhileCompiling(event.Listener):
    """No full (oldest-generation) collection from the start of a compilation to its end: the
    oldest generation's threshold is raised at the start and put back at the end. Young
    collections go on, so the compiler's short-lived cycles are still freed as it goes.
    Compilations nest (a kernel compiles its callees inside its own), so only the outermost one
    switches."""

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = None

    def on_start(self, ev):
        with self._lock:
            if self._depth == 0:
                self._saved = gc.get_threshold()
                gc.set_threshold(self._saved[0], self._saved[1], _NO_FULL_GC)
            self._depth += 1

    def on_end(self, ev):
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and gc.get_threshold()[2] == _NO_FULL_GC:  # (unless the user set one meanwhile)
                gc.set_threshold(*self._saved)


NO_FULL_GC_WHILE_COMPILING = os.environ.get("MINILLM_COMPILE_GC", "0").strip() != "1"
if NO_FULL_GC_WHILE_COMPILING:
    event.register("numba:compile", _NoFullGCWhileCompiling())

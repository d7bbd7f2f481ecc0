"""Process-wide settings: `import minillm` leaves malloc alone, `mi.tune_malloc()` is the explicit
opt-in (with its way out), a Numba threading layer started before minillm is reported, and the
kernel cache falls back gracefully on a read-only install."""
import os
import subprocess
import sys
import tempfile

import pytest

# glibc serves a block with its own mmap when it is above the mmap threshold (dynamic, at most
# 32 MB by default). So a fresh 40 MB malloc raises mallinfo2().hblks (the count of mmapped
# blocks) under the default setting, and does not once tune_malloc() raised the threshold to 64 MB.
PROBE = """
import ctypes
libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def big_block_is_mmapped():
    before = libc.mallinfo2().hblks
    p = libc.malloc(40 << 20)
    mmapped = libc.mallinfo2().hblks == before + 1
    libc.free(p)
    return mmapped
"""


def run(code, **env):
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("MALLOC_") and k not in ("MINILLM_MALLOC_TUNING", "NUMBA_THREADING_LAYER")}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _has_mallinfo2():
    import ctypes

    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


needs_glibc = pytest.mark.skipif(not _has_mallinfo2(), reason="glibc >= 2.33 (mallinfo2) only")


@needs_glibc
def test_import_leaves_malloc_alone_and_tune_malloc_applies_once():
    code = PROBE + (
        "import minillm as mi\n"
        "print(big_block_is_mmapped())\n"  # import changed nothing
        "print(mi.tune_malloc())\n"
        "print(big_block_is_mmapped())\n"  # now served from the heap
        "print(mi.tune_malloc())\n"  # idempotent: already in effect
    )
    assert run(code).stdout.split() == ["True", "True", "False", "True"]


@needs_glibc
def test_tune_malloc_ways_out():
    code = PROBE + "import minillm as mi\nprint(mi.tune_malloc())\nprint(big_block_is_mmapped())\n"
    assert run(code, MINILLM_MALLOC_TUNING="0").stdout.split() == ["False", "True"]
    # glibc's own tunable wins: tune_malloc steps aside, and glibc keeps its (here 1 MB) threshold
    assert run(code, MALLOC_MMAP_THRESHOLD_="1000000").stdout.split() == ["False", "True"]


def test_import_works_with_tuning_off():
    import minillm

    out = run("import minillm; print(minillm.__version__)", MINILLM_MALLOC_TUNING="0")
    assert out.stdout.strip() == minillm.__version__


# ------------------------------------------------------------------ Numba threading layer
LAUNCH_FIRST = """
import warnings
warnings.simplefilter("always")
import numba
numba.set_num_threads(1)  # starts Numba's threading layer by its default choice
print(numba.threading_layer())
import minillm
"""


def test_threading_layer_started_before_import_warns_with_the_fix():
    out = run(LAUNCH_FIRST)
    layer = out.stdout.split()[0]
    if layer == "workqueue":
        pytest.skip("Numba's default order picked workqueue here (no OpenMP/TBB): nothing to warn about")
    assert "RuntimeWarning" in out.stderr and f"threading layer was started ({layer!r})" in out.stderr
    assert "import minillm before calling numba.set_num_threads" in out.stderr
    assert "NUMBA_THREADING_LAYER=workqueue" in out.stderr
    assert out.stderr.count("RuntimeWarning") == 1
    line = LAUNCH_FIRST.splitlines().index("import minillm") + 1
    assert f"<string>:{line}: RuntimeWarning" in out.stderr  # points at the user's import line


def test_threading_layer_chosen_by_the_user_is_kept_silently():
    out = run(LAUNCH_FIRST, NUMBA_THREADING_LAYER="workqueue")
    assert out.stdout.split() == ["workqueue"] and "RuntimeWarning" not in out.stderr
    out = run(LAUNCH_FIRST.replace("import numba\n", "import numba\nnumba.config.THREADING_LAYER = 'workqueue'\n"))
    assert out.stdout.split() == ["workqueue"] and "RuntimeWarning" not in out.stderr


def test_minillm_first_selects_workqueue_without_warning():
    code = (
        "import warnings\nwarnings.simplefilter('always')\n"
        "import minillm, numba\nnumba.set_num_threads(1)\nprint(numba.threading_layer())\n"
    )
    out = run(code)
    assert out.stdout.split() == ["workqueue"] and "RuntimeWarning" not in out.stderr


# ----------------------------------------------- the kernel cache on a read-only install
def test_kernel_cache_plan_falls_back_when_no_folder_is_writable(tmp_path):
    from minillm.kernels import _cache

    kernels_dir, user = str(tmp_path / "site-packages" / "minillm" / "kernels"), str(tmp_path / "home" / "numba")
    in_tree = os.path.join(kernels_dir, "__pycache__")
    # a writable in-tree or user-wide folder: Numba's own choice stands
    assert _cache.plan(kernels_dir, lambda p: p == user, user) == (True, None, None)
    assert _cache.plan(kernels_dir, lambda p: p == in_tree, user) == (True, None, None)
    # read-only install and home: the temp dir, named in a warning along with what was tried
    enabled, where, message = _cache.plan(kernels_dir, lambda p: p.startswith(tempfile.gettempdir()) and "minillm-numba-cache" in p, user)
    assert enabled and "minillm-numba-cache" in where and in_tree in message and user in message and where in message
    # a chosen NUMBA_CACHE_DIR that is not writable is reported too
    _, _, message = _cache.plan(kernels_dir, lambda p: False, user, chosen="/read/only/cache")
    assert "/read/only/cache" in message
    # nothing writable at all: caching is switched off (Numba would refuse cache=True), with a warning
    enabled, where, message = _cache.plan(kernels_dir, lambda p: False, user)
    assert (enabled, where) == (False, None) and "compiled again in every process" in message


def test_kernel_cache_is_on_here_and_every_kernel_module_uses_it():
    import numba

    from minillm.kernels import _attention, _cache, _softmax

    assert _cache.CACHE is True and _cache.writable(os.path.dirname(_cache.__file__))
    for fn in (_attention.attention_forward_kernel, _attention.attention_backward_kernel, _softmax.softmax_items):
        assert fn._cache.__class__.__name__ == "FunctionCache"  # cache=True took effect (NullCache otherwise)
    assert isinstance(_attention.attention_forward_kernel, numba.core.registry.CPUDispatcher)
    # every jit decorator in the package takes cache=CACHE: a literal cache=True anywhere (the
    # tokenizer kernels had it) makes `import minillm` fail on a read-only install
    import glob
    import re

    package = os.path.dirname(os.path.dirname(_cache.__file__))
    offenders = [os.path.relpath(path, package) for path in glob.glob(os.path.join(package, "**", "*.py"), recursive=True)
                 if re.search(r"jit\([^)]*cache=True", open(path, encoding="utf-8").read())]
    assert offenders == []


def test_cache_folder_is_where_numba_caches_the_kernels(monkeypatch):
    """`_cache.cache_folder()` (where pipeline.compile_ahead leaves its stamps) holds Numba's own
    cache of the kernels, whichever of Numba's places that is; None when nothing is cached."""
    from minillm.kernels import _attention, _cache

    folder = _cache.cache_folder()
    numba_path = _attention.attention_forward_kernel._cache.cache_path
    assert folder is not None and os.path.commonpath([folder, numba_path]) == folder
    assert _cache.cache_folder(is_writable=lambda p: False) is None
    monkeypatch.setattr(_cache, "CACHE", False)
    assert _cache.cache_folder() is None


# ----------------------------------------------- no full garbage collection while Numba compiles
def test_no_full_gc_while_numba_compiles():
    """While Numba compiles (its "numba:compile" event) the oldest generation's threshold is
    raised, so no full collection walks the process (1.1 of a cold --quick run's ~13 CPU s); the
    thresholds are back after it, nested compilations switch once, a threshold the user set
    meanwhile is kept, and MINILLM_COMPILE_GC=1 turns the switch off."""
    import gc

    import numba
    from numba.core import event

    from minillm.kernels import _cache

    before = gc.get_threshold()
    seen = []

    class Spy(event.Listener):  # registered after minillm's, so it sees the raised threshold
        def on_start(self, ev):
            seen.append(gc.get_threshold())

        def on_end(self, ev):
            pass

    spy = Spy()
    event.register("numba:compile", spy)
    try:
        @numba.njit
        def fresh(x):  # compiles on its first call (no cache)
            return x * 2 + 1

        assert fresh(20) == 41
    finally:
        event.unregister("numba:compile", spy)
    assert seen and seen[0][:2] == before[:2] and seen[0][2] == _cache._NO_FULL_GC
    assert gc.get_threshold() == before
    switch = _cache._NoFullGCWhileCompiling()
    switch.on_start(None)
    switch.on_start(None)  # a callee compiled inside
    switch.on_end(None)
    assert gc.get_threshold()[2] == _cache._NO_FULL_GC  # still inside the outer compilation
    switch.on_end(None)
    assert gc.get_threshold() == before
    try:
        switch.on_start(None)
        gc.set_threshold(before[0], before[1], 7)  # the user's own setting, made meanwhile
        switch.on_end(None)
        assert gc.get_threshold()[2] == 7
    finally:
        gc.set_threshold(*before)
    out = run("import minillm.kernels._cache as c\nprint(c.NO_FULL_GC_WHILE_COMPILING)\n", MINILLM_COMPILE_GC="1")
    assert out.stdout.split() == ["False"]

"""minillm._runtime: the malloc setting applied at import, and its opt-out."""
import subprocess
import sys

import pytest

from minillm import _runtime


def run(code, **env):
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_tune_malloc_applies_and_can_be_turned_off():
    code = "from minillm import _runtime; print(_runtime.tune_malloc())"
    assert run(code) == "True"
    assert run(code, MINILLM_MALLOC_TUNING="0") == "False"
    assert run(code, MALLOC_MMAP_THRESHOLD_="1000000") == "False"  # glibc's own tunable wins


def test_import_still_works_with_tuning_off():
    assert run("import minillm; print(minillm.__version__)", MINILLM_MALLOC_TUNING="0") == _version()


def _version():
    import minillm

    return minillm.__version__

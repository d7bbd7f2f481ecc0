"""Shared test setup: a small, deadline-free hypothesis profile, a kernel-backend fixture and the
SMALL_INPUT threshold each test runs at."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minillm as mi
import minillm.kernels

# No compile_ahead helpers behind the tests' backs: the examples and CLI runs of the suite (and the
# processes they start) would each rehearse in a process of its own. tests/test_compile_ahead.py
# turns it on where it tests it.
os.environ.setdefault("MINILLM_COMPILE_AHEAD", "0")

# The "numba" backend sends arrays smaller than SMALL_INPUT elements to the NumPy reference
# (faster there). The tests use small arrays, so by default every call on that backend reaches
# Numba (SMALL_INPUT = 0). The model, training and generation tests run a second time at the
# shipped threshold, the mix of kernels users actually get (numba backend only: the numpy
# backend never looks at the threshold).
SHIPPED_SMALL_INPUT = minillm.kernels.SMALL_INPUT
ALSO_AT_SHIPPED_THRESHOLD = ("test_llama", "test_train", "test_generation")  # module name prefixes


def pytest_generate_tests(metafunc):
    module = metafunc.module.__name__.rpartition(".")[2]
    if "small_input" in metafunc.fixturenames and module.startswith(ALSO_AT_SHIPPED_THRESHOLD):
        metafunc.parametrize("small_input", ["all-numba", "shipped"], indirect=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under `pytest -n N` (the README's command), hand out whole test files: their module-scoped
    fixtures (a trained model, three seeds' runs) are then built once, not once per process."""
    from xdist.scheduler import LoadFileScheduling

    return LoadFileScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Drop the (numpy backend, shipped threshold) duplicates: the threshold changes nothing there."""
    def redundant(item):
        params = getattr(getattr(item, "callspec", None), "params", {})
        return params.get("small_input") == "shipped" and (
            params.get("backend") == "numpy" or (not params.get("backend") and mi.get_kernels() == "numpy"))

    dropped = [item for item in items if redundant(item)]
    if dropped:
        items[:] = [item for item in items if not redundant(item)]
        config.hook.pytest_deselected(items=dropped)


@pytest.fixture(autouse=True)
def small_input(request):
    """kernels.SMALL_INPUT for this test: 0 (every numba-backend call reaches Numba) or, for the
    modules in ALSO_AT_SHIPPED_THRESHOLD, also the shipped value. Yields the value in effect."""
    value = SHIPPED_SMALL_INPUT if getattr(request, "param", "all-numba") == "shipped" else 0
    previous, minillm.kernels.SMALL_INPUT = minillm.kernels.SMALL_INPUT, value
    yield value
    minillm.kernels.SMALL_INPUT = previous

# "ci" is the default: modest example counts (many small tests beat few huge ones).
# The `backend` fixture only selects kernels, so sharing it across the examples of one test is safe.
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=_SUPPRESS)
settings.register_profile("thorough", max_examples=300, deadline=None, suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def one_numba_thread():
    """For test modules made of thousands of tiny forward passes (gradient checks, decoding): on
    a busy machine a parallel kernel's thread hand-off dominates them, so they use one Numba
    thread (the same kernels). Use with ``pytestmark = pytest.mark.usefixtures("one_numba_thread")``."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    """Run a test once on the NumPy reference kernels and once on the Numba kernels."""
    previous = mi.get_kernels()
    mi.set_kernels(request.param)
    yield request.param
    mi.set_kernels(previous)


@pytest.fixture(autouse=True)
def _seed():
    mi.manual_seed(0)
    np.random.seed(0)
    yield

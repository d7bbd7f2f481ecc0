"""Shared test setup: a small, deadline-free hypothesis profile and a kernel-backend fixture."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minillm as mi
import minillm.kernels

# The "numba" backend sends arrays smaller than SMALL_INPUT to the NumPy reference (faster
# there); the tests use small arrays, so make every call on that backend reach Numba.
minillm.kernels.SMALL_INPUT = 0

# "ci" is the default: modest example counts (many small tests beat few huge ones).
# The `backend` fixture only selects kernels, so sharing it across the examples of one test is safe.
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=_SUPPRESS)
settings.register_profile("thorough", max_examples=300, deadline=None, suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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

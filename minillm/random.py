"""One seeded random generator for the whole library (``mi.manual_seed``).

``randn``/``rand``, ``nn.init`` and ``dropout`` all draw from it, so ``mi.manual_seed(0)``
makes a run reproducible. Its state is a plain dict (JSON-serialisable), which is what the
trainer stores in a checkpoint to resume a run exactly.
"""
from __future__ import annotations

import copy

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the global generator (and return it), like ``torch.manual_seed``."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def default_generator() -> np.random.Generator:
    return _generator


def get_rng_state() -> dict:
    """The generator's state as a JSON-serialisable dict."""
    return copy.deepcopy(_generator.bit_generator.state)


def set_rng_state(state: dict) -> None:
    _generator.bit_generator.state = copy.deepcopy(state)

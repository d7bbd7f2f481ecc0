"""Helpers several test files share (``tests/`` is on ``sys.path`` under pytest):

* ``load_example(name)``: ``examples/<name>.py`` as a module, so a test calls its ``main(argv)`` and
  helpers in-process;
* ``scramble(model, std, vectors)``: larger random weights than the init, for tests whose outputs
  must depend on every weight (parity with a reference, decoding that differs between prompts);
* ``affine_sequences(n, seed, vocab, length)``: a learnable toy language for training-loop tests.
"""
import importlib.util
import os

import numpy as np

from minillm import nn

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def example_path(name: str) -> str:
    return os.path.join(EXAMPLES, name + ".py")


def load_example(name: str):
    """The module of ``examples/<name>.py``, freshly executed (registered nowhere: a test's changes stay its own)."""
    spec = importlib.util.spec_from_file_location(name + "_example", example_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scramble(model, std: float, vectors=None):
    """Every weight matrix (``ndim >= 2``) ~ N(0, std); the vectors (biases, norm gains) are left
    alone (``vectors=None``), ~ N(0, vectors) (a float) or ~ U(lo, hi) (a pair ``(lo, hi)``). Draws
    from minillm's seeded generator in parameter order. Returns ``model``."""
    for p in model.parameters():
        if p.ndim >= 2:
            nn.init.normal_(p, 0.0, std)
        elif isinstance(vectors, tuple):
            nn.init.uniform_(p, *vectors)
        elif vectors is not None:
            nn.init.normal_(p, 0.0, vectors)
    return model


def affine_sequences(n: int, seed: int, vocab: int, length: int) -> list:
    """``n`` (input, target) pairs of int64 arrays (length,): a random first token, then each next
    token is (token * 3 + 1) mod vocab. Learnable, so a training loss must fall."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        seq = [int(rng.integers(vocab))]
        for _ in range(length):
            seq.append((seq[-1] * 3 + 1) % vocab)
        seq = np.array(seq, dtype=np.int64)
        items.append((seq[:-1], seq[1:]))
    return items

"""Gradient checkpointing (``minillm.utils.checkpoint``; the LLaMA's ``gradient_checkpointing_enable``):
the same gradients as the un-checkpointed run, dropout replayed exactly, activations really freed."""
from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import minillm as mi
import minillm.nn.functional as F
from minillm.models.llama import ModelConfig, Transformer
from minillm.testing import gradcheck
from minillm.utils import checkpoint


def test_gradcheck_through_checkpoint_float64():
    w = mi.Tensor(np.random.default_rng(0).normal(size=(4, 3)), requires_grad=True)

    def block(x, scale):
        return (x @ w).tanh() * scale  # (2, 4) @ (4, 3) -> (2, 3)

    x = np.random.default_rng(1).normal(size=(2, 4))
    gradcheck(lambda x, w_: checkpoint(lambda a, s: (a @ w_).tanh() * s, x, 2.0), [x, w.data.copy()])


def test_checkpoint_gives_the_same_gradients_for_inputs_and_weights():
    rng = np.random.default_rng(0)
    w = mi.Tensor(rng.normal(size=(4, 4)), requires_grad=True)
    x = mi.Tensor(rng.normal(size=(3, 4)), requires_grad=True)

    def block(a):
        return F.silu(a @ w) @ w

    grads = []
    for use in (False, True):
        x.grad = w.grad = None
        y = checkpoint(block, x) if use else block(x)
        (y * y).sum().backward()
        grads.append((x.grad.data.copy(), w.grad.data.copy()))
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    np.testing.assert_array_equal(grads[0][1], grads[1][1])


def _llama(dropout, dtype="float64"):
    mi.manual_seed(0)
    cfg = ModelConfig(dim=32, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=48, max_seq_len=16, dropout=dropout)
    return Transformer(cfg).to(np.dtype(dtype))


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_llama_gradient_checkpointing_equals_plain_backward(dropout):
    """Same loss and every parameter's gradient; with dropout the recomputation replays the same masks."""
    ids = np.random.default_rng(3).integers(0, 48, size=(2, 17))
    x, y = mi.Tensor(ids[:, :-1]), mi.Tensor(ids[:, 1:])
    runs = []
    for use in (False, True):
        model = _llama(dropout)
        if use:
            model.gradient_checkpointing_enable()
        model.train()
        mi.manual_seed(7)
        loss = model(x, targets=y).loss
        loss.backward()
        after = mi.random.get_rng_state()  # checkpointing must leave the generator where plain training does
        runs.append((float(loss.item()), {n: p.grad.data.copy() for n, p in model.named_parameters()}, after))
    assert runs[0][0] == runs[1][0]
    for name, g in runs[0][1].items():
        np.testing.assert_allclose(runs[1][1][name], g, rtol=0, atol=1e-14, err_msg=name)
    assert runs[0][2] == runs[1][2]


def test_checkpointing_is_off_in_eval_and_under_no_grad():
    model = _llama(0.0)
    model.gradient_checkpointing_enable()
    ids = mi.Tensor(np.zeros((1, 4), dtype=np.int64))
    with mi.no_grad():
        out = model(ids)
    assert out.logits.grad_fn is None
    model.gradient_checkpointing_disable()
    assert model.gradient_checkpointing is False


def test_checkpoint_frees_the_activations():
    """Peak traced memory of one forward + backward at a long-ish sequence: checkpointing keeps
    each layer's input instead of its activations, so the peak falls well below the plain run's."""
    ids = np.random.default_rng(0).integers(0, 48, size=(4, 17))
    x, y = mi.Tensor(ids[:, :-1]), mi.Tensor(ids[:, 1:])
    peaks = []
    for use in (False, True):
        model = _llama(0.0, "float32")
        model.args  # noqa: B018
        if use:
            model.gradient_checkpointing_enable()
        model(x, targets=y).loss.backward()  # warm-up (kernel compilation, caches)
        model.zero_grad()
        tracemalloc.start()
        model(x, targets=y).loss.backward()
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 0.8 * peaks[0], peaks


def test_checkpoint_bad_input():
    x = mi.Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(TypeError, match="callable"):
        checkpoint("not a function", x)
    with pytest.raises(TypeError, match="must return one Tensor"):
        checkpoint(lambda a: (a, a), x)
    plain = mi.Tensor(np.ones((2, 2)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpoint._warned = False
        out = checkpoint(lambda a: a * 2, plain)
    assert out.data.tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert any("nothing is checkpointed" in str(w.message) for w in caught)

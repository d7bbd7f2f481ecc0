"""Optional: minillm.optim matches torch.optim step for step (skipped when torch is not installed)."""
import numpy as np
import pytest

import minillm as mi
from minillm import optim

torch = pytest.importorskip("torch")

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.05)),
    ("AdamW", dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
]


@pytest.mark.parametrize("name, kwargs", CASES)
def test_matches_torch_for_5_steps(backend, name, kwargs):
    rng = np.random.default_rng(0)
    shapes = [(4, 6), (6,), (2, 3, 5)]
    w0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(5)]

    ours = [mi.tensor(w.copy(), requires_grad=True) for w in w0]
    theirs = [torch.tensor(w.copy(), requires_grad=True) for w in w0]
    opt = getattr(optim, name)(ours, **kwargs)
    topt = getattr(torch.optim, name)(theirs, **kwargs)
    for step_grads in grads:
        for p, tp, g in zip(ours, theirs, step_grads):
            p.grad = mi.tensor(g)
            tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
    for p, tp in zip(ours, theirs):
        assert p.data.dtype == np.float32
        assert np.max(np.abs(p.data - tp.detach().numpy())) <= 1e-6


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(1)
    gs = [rng.standard_normal(s).astype(np.float32) * 3 for s in [(5, 5), (7,)]]
    ours = [mi.tensor(np.zeros_like(g), requires_grad=True) for g in gs]
    theirs = [torch.zeros(g.shape, requires_grad=True) for g in gs]
    for p, tp, g in zip(ours, theirs, gs):
        p.grad, tp.grad = mi.tensor(g), torch.tensor(g)
    n = optim.clip_grad_norm_(ours, 1.0)
    tn = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert abs(n - float(tn)) <= 1e-5
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), rtol=1e-6, atol=1e-7)

"""minillm.optim.lr_scheduler: values at key steps, scheduler objects, save/restore."""
import json
import math

import numpy as np
import pytest

import minillm as mi
from minillm.optim import (
    SGD, ConstantLR, LambdaLR, LinearDecay, WarmupCosine, constant_lr, cosine_with_warmup, linear_decay,
)


def test_constant_lr():
    assert constant_lr(0, 1e-3) == 1e-3 and constant_lr(10**6, 1e-3) == 1e-3
    assert constant_lr(0, 1.0, warmup_steps=4) == 0.25 and constant_lr(3, 1.0, warmup_steps=4) == 1.0


def test_cosine_with_warmup_key_steps():
    f = lambda s: cosine_with_warmup(s, max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.1)  # (0 + 1) / 10: the first update already moves
    assert f(4) == pytest.approx(0.5)
    assert f(9) == pytest.approx(1.0)  # warmup ends at max_lr
    assert f(10) == pytest.approx(1.0)  # cosine starts at max_lr
    assert f(60) == pytest.approx(0.55)  # half way: mean of max_lr and min_lr
    assert f(35) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert f(110) == pytest.approx(0.1) and f(10**5) == pytest.approx(0.1)
    lrs = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay
    assert cosine_with_warmup(0, 1.0, 0, 10) == 1.0  # no warmup
    assert cosine_with_warmup(5, 1.0, 10, 10) == 0.6  # total == warmup: no decay phase


def test_linear_decay_key_steps():
    assert [linear_decay(s, 1.0, 0, 4) for s in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert linear_decay(1, 2.0, 2, 12, min_lr=1.0) == 2.0
    assert linear_decay(7, 2.0, 2, 12, min_lr=1.0) == pytest.approx(1.5)


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match="total_steps"):
        cosine_with_warmup(0, 1.0, warmup_steps=10, total_steps=5)
    with pytest.raises(ValueError, match="warmup_steps"):
        linear_decay(0, 1.0, warmup_steps=-1, total_steps=5)


def _opt(lrs=(1.0,)):
    return SGD([{"params": [mi.tensor([0.0], requires_grad=True)], "lr": lr} for lr in lrs], lr=lrs[0])


def test_warmup_cosine_object_writes_group_lrs():
    opt = _opt((1.0, 0.5))
    sched = WarmupCosine(opt, warmup_steps=2, total_steps=6, min_lr=0.0)
    seen = []
    for _ in range(7):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expected = [cosine_with_warmup(s, 1.0, 2, 6) for s in range(7)]
    np.testing.assert_allclose([s[0] for s in seen], expected)
    np.testing.assert_allclose([s[1] for s in seen], [0.5 * e for e in expected])
    assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]


def test_scheduler_state_dict_round_trip_json():
    opt = _opt()
    sched = LinearDecay(opt, warmup_steps=3, total_steps=20, min_lr=0.1)
    for _ in range(7):
        sched.step()
    state = json.loads(json.dumps(sched.state_dict()))
    opt2 = _opt()
    sched2 = LinearDecay(opt2, warmup_steps=3, total_steps=20, min_lr=0.1)
    sched2.load_state_dict(state)
    assert sched2.last_step == 7 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    sched.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    with pytest.raises(ValueError, match="param groups"):
        WarmupCosine(_opt((1.0, 1.0)), 1, 5).load_state_dict(state)


def test_lambda_and_constant():
    opt = _opt((0.5,))
    sched = LambdaLR(opt, lambda s: 1.0 / (s + 1))
    sched.step(), sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 / 3)
    assert "lr_lambda" not in sched.state_dict()
    opt = _opt((0.5,))
    ConstantLR(opt, warmup_steps=5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)

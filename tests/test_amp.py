"""Mixed precision (``minillm.train.amp``): bf16 rounding, the GradScaler's state machine on injected
overflows, and short training runs in fp16 and bf16 that land near the float32 run."""
from __future__ import annotations

import numpy as np
import pytest

import minillm as mi
from minillm.models.llama import ModelConfig, Transformer
from minillm.optim import AdamW, clip_grad_norm_
from minillm.train.amp import GradScaler, MixedPrecision, round_to_bfloat16


def test_round_to_bfloat16_worked_examples():
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-7, -3.0, 0.0, np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(round_to_bfloat16(x), [1.0, 1 + 2**-6, 1 + 2**-7, -3.0, 0.0, np.inf, -np.inf])
    assert np.isnan(round_to_bfloat16(np.array([np.nan], np.float32)))[0]
    # 8 exponent bits: a gradient of 1e-30 survives bf16 (it would be 0 in fp16)
    assert round_to_bfloat16(np.array([1e-30], np.float32))[0] != 0 and np.float16(1e-30) == 0
    with pytest.raises(TypeError, match="float32"):
        round_to_bfloat16(np.ones(2))


def test_round_to_bfloat16_matches_torch():
    torch = pytest.importorskip("torch")
    x = (np.random.default_rng(0).normal(size=2000) * 10.0 ** np.random.default_rng(1).integers(-30, 30, 2000)).astype(np.float32)
    want = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(round_to_bfloat16(x), want)


class _Opt:
    """An optimizer stand-in with one parameter, counting its steps."""

    def __init__(self):
        self.p = mi.Tensor(np.zeros(3, np.float32), requires_grad=True)
        self.param_groups = [{"params": [self.p]}]
        self.steps = 0

    def step(self):
        self.steps += 1


def _iteration(scaler, opt, overflow):
    opt.p.grad = mi.Tensor(np.array([np.inf if overflow else 1.0, 2.0, 3.0], np.float32) * np.float32(scaler.get_scale()))
    stepped = scaler.step(opt)
    scaler.update()
    return stepped


def test_grad_scaler_state_machine_on_injected_overflows():
    scaler, opt = GradScaler(init_scale=1024.0, growth_interval=3), _Opt()
    trace = []
    for overflow in [False, True, False, False, False, True, True, False]:
        trace.append((_iteration(scaler, opt, overflow), scaler.get_scale()))
    assert trace == [(True, 1024.0), (False, 512.0), (True, 512.0), (True, 512.0), (True, 1024.0),
                     (False, 512.0), (False, 256.0), (True, 256.0)]
    assert opt.steps == 5 and scaler.skipped_steps == 3
    np.testing.assert_array_equal(opt.p.grad.data, [1.0, 2.0, 3.0])  # unscaled before the step
    saved = scaler.state_dict()
    again = GradScaler()
    again.load_state_dict(saved)
    assert again.get_scale() == 256.0 and again._growth_tracker == 1


def test_grad_scaler_matches_torch_state_machine():
    torch = pytest.importorskip("torch")
    ours, opt = GradScaler(init_scale=2.0**10, growth_interval=2), _Opt()
    w = torch.nn.Parameter(torch.zeros(3))
    topt = torch.optim.SGD([w], lr=0.0)
    theirs = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    for overflow in [False, False, True, False, True, True, False, False, False]:
        _iteration(ours, opt, overflow)
        theirs.scale(torch.tensor(1.0))  # torch's scaler initialises itself at its first scale()
        w.grad = torch.tensor([float("inf") if overflow else 1.0, 2.0, 3.0]) * theirs.get_scale()
        theirs.step(topt)
        theirs.update()
        assert ours.get_scale() == theirs.get_scale()


def test_grad_scaler_bad_input():
    with pytest.raises(ValueError, match="init_scale"):
        GradScaler(init_scale=0)
    with pytest.raises(ValueError, match="growth_factor"):
        GradScaler(growth_factor=1.0)
    with pytest.raises(ValueError, match="backoff_factor"):
        GradScaler(backoff_factor=1.5)
    with pytest.raises(ValueError, match="growth_interval"):
        GradScaler(growth_interval=0)
    scaler, opt = GradScaler(), _Opt()
    with pytest.raises(TypeError, match="Tensor"):
        scaler.scale(1.0)
    with pytest.raises(RuntimeError, match="call step"):
        scaler.update()
    opt.p.grad = mi.Tensor(np.ones(3, np.float32))
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already called"):
        scaler.unscale_(opt)


def _train(precision: str, steps: int = 25) -> list:
    """A tiny LLaMA on fixed random-but-learnable data (a repeating pattern), AdamW, clip 1.0."""
    mi.manual_seed(0)
    model = Transformer(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32, max_seq_len=16))
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 32, size=8)
    ids = np.stack([np.roll(np.tile(base, 3), -s)[:17] for s in range(8)])  # (8, 17): period-8 sequences
    x, y = mi.Tensor(ids[:, :-1]), mi.Tensor(ids[:, 1:])
    mp = MixedPrecision(model, precision) if precision != "float32" else None
    scaler = GradScaler(init_scale=2.0**12, enabled=precision == "float16")  # bf16: no loss scaling
    losses = []
    for _ in range(steps):
        if mp is None:
            loss = model(x, targets=y).loss
            loss.backward()
        else:
            with mp.autocast():
                loss = model(x, targets=y).loss
                scaler.scale(loss).backward()
        losses.append(float(loss.item()))
        scaler.unscale_(opt)
        clip_grad_norm_(list(model.parameters()), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        assert all(p.dtype == np.float32 for p in model.parameters())  # master weights stay float32
    return losses


def test_fp16_and_bf16_training_land_near_float32():
    """Stated tolerance: after 25 steps the loss is within 0.15 nats (absolute) of the float32 run,
    while training took it down by more than 1 nat: the precision changes the path, not the outcome."""
    ref = _train("float32")
    assert ref[0] - ref[-1] > 1.0
    for precision in ("float16", "bfloat16"):
        got = _train(precision)
        assert abs(got[0] - ref[0]) < 0.01, precision  # the same model before any update
        assert abs(got[-1] - ref[-1]) < 0.15, (precision, got[-1], ref[-1])


def test_mixed_precision_bad_input():
    model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=16, max_seq_len=8))
    with pytest.raises(ValueError, match="dtype must be one of"):
        MixedPrecision(model, "float8")
    with pytest.raises(TypeError, match="must be float32"):
        MixedPrecision(model.to(np.float64), "float16")

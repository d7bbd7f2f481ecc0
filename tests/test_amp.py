"""Mixed precision (``minillm.train.amp``): bf16 rounding, the GradScaler's state machine on injected
overflows, and Trainer runs with bf16=True / fp16=True (the CLI's --bf16 / --fp16) that track the float32 run."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import minillm as mi
from minillm.models.llama import ModelConfig, Transformer
from minillm.data import DataLoader
from minillm.train import TrainConfig, Trainer
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


class _Pattern:
    """Eight period-8 token sequences (rotations of one random pattern): learnable in a few steps."""

    def __init__(self):
        base = np.random.default_rng(0).integers(0, 32, size=8)
        self.ids = np.stack([np.roll(np.tile(base, 3), -s)[:17] for s in range(8)])  # (8, 17)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i, :-1], self.ids[i, 1:]


def _trainer(out_dir, steps: int, **precision) -> Trainer:
    """A tiny LLaMA trained by the Trainer on the pattern (AdamW lr 1e-2, clip 1.0), one metrics line a step."""
    mi.manual_seed(0)
    model = Transformer(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32, max_seq_len=16))
    config = TrainConfig(out_dir=str(out_dir), max_steps=steps, lr=1e-2, min_lr=1e-2, warmup_steps=0,
                         lr_schedule="constant", lr_decay_steps=100, weight_decay=0.0, eval_interval=0, log_interval=1,
                         checkpoint_interval=0, keep_last=5, progress=False, plot=False, **precision)
    return Trainer(model, None, DataLoader(_Pattern(), 8, shuffle=False), None, config)


K = 20  # steps of each run below


def test_trainer_bf16_and_fp16_track_float32(tmp_path):
    """``TrainConfig(bf16=True)`` / ``fp16=True`` (the CLI's --bf16/--fp16), against float32 over K steps.

    Stated tolerances. bf16 rounds weights and gradients to 8 significant bits (relative error
    2**-9 each): the first loss moves by < 0.01 nats, and at every one of the K steps the loss stays
    within 0.05 nats of the float32 run's (measured: 0.018) while training takes it down by more than
    1 nat (measured: 3.4). fp16's first update is skipped (65536 x a loss of ~3.5 overflows float16's 65504, so the
    scaler halves to 32768, as torch's does), so its path lags float32's by one step; its last loss is
    within 0.15 nats (measured: 0.04). Master weights stay float32, and the checkpoint is the same files
    with the same float32 tensors as the float32 run's (only fp16 adds the scaler's state).
    """
    runs = {}
    for name, flags in (("fp32", {}), ("bf16", {"bf16": True}), ("fp16", {"fp16": True})):
        trainer = _trainer(tmp_path / name, K, **flags)
        trainer.train()
        assert all(p.dtype == np.float32 for p in trainer.model.parameters()), name  # the master weights
        runs[name] = trainer
    ref = runs["fp32"].losses
    assert ref[0] - ref[-1] > 1.0
    bf16 = runs["bf16"].losses
    assert abs(bf16[0] - ref[0]) < 0.01
    assert max(abs(a - b) for a, b in zip(bf16, ref)) < 0.05, (bf16, ref)
    fp16 = runs["fp16"].losses
    assert abs(fp16[0] - ref[0]) < 0.01 and abs(fp16[-1] - ref[-1]) < 0.15, (fp16, ref)
    log = [json.loads(line) for line in open(tmp_path / "fp16" / "metrics.jsonl")]
    assert log[0]["loss_scale"] == 2.0**15 and log[0]["skipped_steps"] == 1 and log[-1]["skipped_steps"] == 1
    assert "loss_scale" not in json.loads(open(tmp_path / "bf16" / "metrics.jsonl").readline())

    def checkpoint(name):
        path = runs[name].last_checkpoint
        with open(os.path.join(path, "model.safetensors"), "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        state = json.load(open(os.path.join(path, "trainer_state.json")))
        return sorted(os.listdir(path)), {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}, state

    files, dtypes, state = checkpoint("fp32")
    assert set(dtypes.values()) == {"F32"}
    for name in ("bf16", "fp16"):
        got_files, got_dtypes, got_state = checkpoint(name)
        assert got_files == files and got_dtypes == dtypes
        assert set(got_state) - set(state) == ({"grad_scaler"} if name == "fp16" else set())
    assert checkpoint("fp16")[2]["grad_scaler"]["scale"] == 2.0**15
    # a run may change precision when it resumes: the bf16 checkpoint continues in float32
    again = _trainer(tmp_path / "bf16", K + 1)
    assert again.resume() == runs["bf16"].last_checkpoint and again.step == K


def test_trainer_fp16_resume_is_exact(tmp_path):
    """The scaler's state is in the checkpoint: stopping at step 2 and resuming gives the same step 3."""
    whole = _trainer(tmp_path / "whole", 3, fp16=True)
    whole.train()
    part = _trainer(tmp_path / "part", 2, fp16=True)
    part.train()
    resumed = _trainer(tmp_path / "part", 3, fp16=True)
    assert resumed.scaler.get_scale() == 2.0**16  # a fresh scaler ...
    assert resumed.resume() is not None
    assert resumed.scaler.get_scale() == 2.0**15  # ... takes the checkpoint's (step 1 overflowed and halved it)
    resumed.train()
    assert resumed.losses == whole.losses[2:]
    assert resumed.scaler.get_scale() == whole.scaler.get_scale()


def test_trainer_precision_bad_input(tmp_path):
    with pytest.raises(ValueError, match="bf16 and fp16 are both True"):
        TrainConfig(bf16=True, fp16=True)
    with pytest.raises(ValueError, match="TrainConfig.bf16 must be True or False"):
        TrainConfig(bf16="yes")
    mi.manual_seed(0)
    model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=32, max_seq_len=16))
    with pytest.raises(TypeError, match="master weights must be float32"):
        Trainer(model.to(np.float64), None, DataLoader(_Pattern(), 8), None, TrainConfig(out_dir=str(tmp_path), bf16=True))


def test_mixed_precision_bad_input():
    model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=16, max_seq_len=8))
    with pytest.raises(ValueError, match="dtype must be one of"):
        MixedPrecision(model, "float8")
    with pytest.raises(TypeError, match="must be float32"):
        MixedPrecision(model.to(np.float64), "float16")

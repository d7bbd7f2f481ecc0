"""minillm.train: the loop, evaluation, logging, checkpoints and exact resume."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
import minillm.nn.functional as F
from minillm.data import DataLoader
from minillm.optim import SGD, AdamW, param_groups_for_weight_decay
from minillm.train import (
    CheckpointMismatchError, TrainConfig, Trainer, latest_checkpoint, list_checkpoints, read_checkpoint,
    read_metrics,
)
from _helpers import affine_sequences

VOCAB, DIM, T = 64, 32, 16


class TinyLM(nn.Module):
    """Embedding -> residual SiLU MLP with dropout -> RMSNorm -> output: enough to exercise every part."""

    def __init__(self, vocab=VOCAB, dim=DIM, dropout=0.1):
        super().__init__()
        self.config = SimpleNamespace()  # not a dataclass: ignored by the config check
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.w1 = nn.Linear(dim, 2 * dim)
        self.w2 = nn.Linear(2 * dim, dim, bias=False)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.RMSNorm(dim)
        self.output = nn.Linear(dim, vocab, bias=False)
        self.output.weight = self.tok_embeddings.weight  # tied, as in the book's LLaMA

    def forward(self, input_ids, targets=None, attention_mask=None):
        h = self.tok_embeddings(input_ids)  # (B, T) -> (B, T, dim)
        h = h + self.drop(self.w2(F.silu(self.w1(h))))  # (B, T, dim)
        logits = self.output(self.norm(h))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100)
        return SimpleNamespace(logits=logits, loss=loss)


def make_data(n, seed):
    """Sequences where the next token is (token * 3 + 1) mod VOCAB: learnable, so the loss falls."""
    return affine_sequences(n, seed, VOCAB, T)


def setup(out_dir, seed=0, **overrides):
    """A fresh 'process': model, loaders, trainer, all from seeds."""
    mi.manual_seed(123)
    model = TinyLM()
    train = DataLoader(make_data(40, 1), batch_size=4, shuffle=True, seed=seed)
    val = DataLoader(make_data(12, 2), batch_size=4, shuffle=False)
    kw = dict(out_dir=str(out_dir), max_steps=10, grad_accum_steps=2, lr=1e-2, min_lr=1e-3, warmup_steps=3,
              eval_interval=4, eval_batches=2, log_interval=1, checkpoint_interval=4, keep_last=2, progress=False,
              plot=False, seed=7)
    kw.update(overrides)
    return Trainer(model, None, train, val, TrainConfig(**kw))


def test_training_reduces_loss_and_logs(tmp_path):
    trainer = setup(tmp_path, max_steps=30, eval_interval=10, checkpoint_interval=0, plot=True)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["val_loss"] < before["val_loss"] - 0.5
    assert after["val_ppl"] == pytest.approx(np.exp(after["val_loss"]))
    records = read_metrics(str(tmp_path / "metrics.jsonl"))
    train_recs = [r for r in records if "train_loss" in r]
    assert [r["step"] for r in train_recs] == list(range(1, 31))
    assert all(k in train_recs[0] for k in ("lr", "grad_norm", "tokens_per_sec", "tokens_seen"))
    assert train_recs[-1]["tokens_seen"] == 30 * 2 * 4 * T
    assert [r["step"] for r in records if "val_loss" in r] == [10, 20, 30]
    # the schedule: warmup to lr, then cosine towards min_lr
    lrs = [r["lr"] for r in train_recs]
    assert lrs[0] == pytest.approx(1e-2 / 3) and lrs[2] == pytest.approx(1e-2) and lrs[-1] < 2e-3
    assert [os.path.basename(p) for _, p in list_checkpoints(str(tmp_path))] == ["step_00000030"]
    pytest.importorskip("matplotlib")
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000


def test_exact_resume_after_a_crash(tmp_path):
    k = 4
    full = setup(tmp_path / "full")
    full.train()

    class Crash(Exception):
        pass

    crashing = setup(tmp_path / "crash")
    calls = {"n": 0}

    def forward_then_crash(model, batch):
        calls["n"] += 1
        if calls["n"] > 2 * (k + 1) + 1:  # in the middle of step k + 2, after the checkpoint at step k
            raise Crash()
        return model(mi.from_numpy(batch[0]), targets=mi.from_numpy(batch[1]))

    crashing.forward_fn = forward_then_crash
    with pytest.raises(Crash):
        crashing.train()
    assert latest_checkpoint(str(tmp_path / "crash")).endswith("step_00000004")

    resumed = setup(tmp_path / "crash")  # a new process: everything rebuilt, then resumed
    mi.manual_seed(999)  # whatever the RNG holds now must not matter
    assert resumed.resume() is not None and resumed.step == k
    resumed.train()

    assert resumed.losses == full.losses[k:]  # exact equality, not approx
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
    # metrics.jsonl has no duplicated steps after the resume
    steps = [r["step"] for r in read_metrics(str(tmp_path / "crash" / "metrics.jsonl")) if "train_loss" in r]
    assert steps == list(range(1, 11))
    full_val = [r["val_loss"] for r in read_metrics(str(tmp_path / "full" / "metrics.jsonl")) if "val_loss" in r]
    res_val = [r["val_loss"] for r in read_metrics(str(tmp_path / "crash" / "metrics.jsonl")) if "val_loss" in r]
    assert res_val == full_val


def test_checkpoint_contents_and_keep_last(tmp_path):
    trainer = setup(tmp_path, max_steps=10, checkpoint_interval=2, keep_last=2)
    trainer.train()
    ckpts = list_checkpoints(str(tmp_path))
    assert [s for s, _ in ckpts] == [8, 10]
    assert not [n for n in os.listdir(tmp_path / "checkpoints") if n.startswith(".tmp")]
    model_arrays, opt_arrays, state = read_checkpoint(ckpts[-1][1])
    assert "tok_embeddings.weight" in model_arrays and "output.weight" not in model_arrays  # tied: stored once
    assert state["tied"] == {"output.weight": "tok_embeddings.weight"}
    assert state["step"] == 10 and state["optimizer_class"] == "AdamW"
    assert set(state["train_loader"]) == {"epoch", "position", "seed"}
    assert any(k.endswith("exp_avg_sq") for k in opt_arrays)
    names = [g["param_names"] for g in state["optimizer"]["param_groups"]]
    assert "w1.weight" in names[0] and "tok_embeddings.weight" in names[1] and "w1.bias" in names[1]
    for name in os.listdir(ckpts[-1][1]):  # no pickle anywhere: JSON, or safetensors (u64 length + JSON header)
        with open(os.path.join(ckpts[-1][1], name), "rb") as f:
            head = f.read(9)
        assert head[:1] == b"{" if name.endswith(".json") else head[8:9] == b"{"


def test_resume_with_different_config_fails_clearly(tmp_path):
    setup(tmp_path, max_steps=4).train()
    with pytest.raises(CheckpointMismatchError, match=r"config\.lr: checkpoint 0\.01, now 0\.02"):
        setup(tmp_path, max_steps=8, lr=2e-2).resume()
    with pytest.raises(CheckpointMismatchError, match="grad_accum_steps"):
        setup(tmp_path, grad_accum_steps=1).resume()
    # a longer run moves the end of the lr decay: refused, with the fix in the message ...
    with pytest.raises(CheckpointMismatchError, match="set lr_decay_steps=4 to keep it"):
        setup(tmp_path, max_steps=6).resume()
    # ... which works: train 2 more steps at min_lr
    longer = setup(tmp_path, max_steps=6, lr_decay_steps=4)
    longer.resume()
    longer.train()
    assert longer.step == 6 and longer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    # strict_config=False accepts a changed lr: this run's hyperparameters, the checkpoint's state
    relaxed = setup(tmp_path, max_steps=8, lr_decay_steps=4, lr=2e-2, min_lr=2e-3)
    relaxed.load_checkpoint(latest_checkpoint(str(tmp_path)), strict_config=False)
    assert relaxed.step == 6 and relaxed.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)
    assert relaxed.optimizer.state[relaxed.model.w1.weight]["step"] == 6

    other = setup(tmp_path)
    other.model = TinyLM(dim=16)
    other.optimizer = AdamW(param_groups_for_weight_decay(other.model, 0.1))
    with pytest.raises(CheckpointMismatchError, match=r"tok_embeddings.weight: shape \(64, 32\).*\(64, 16\)"):
        other.load_checkpoint(latest_checkpoint(str(tmp_path)))

    sgd = setup(tmp_path)
    sgd.optimizer = SGD(sgd.model.parameters(), lr=0.1)
    with pytest.raises(CheckpointMismatchError, match="optimizer: checkpoint AdamW, now SGD"):
        sgd.load_checkpoint(latest_checkpoint(str(tmp_path)))


def test_sampling_does_not_change_training(tmp_path):
    def sample_fn(model, step):
        mi.randn(100)  # consumes random numbers, which must not leak into training
        assert not model.training
        return f"sample at {step}"

    plain = setup(tmp_path / "a")
    plain.train()
    sampled = setup(tmp_path / "b")
    sampled.sample_fn = sample_fn
    sampled.train()
    assert sampled.losses == plain.losses
    samples = [r for r in read_metrics(str(tmp_path / "b" / "metrics.jsonl")) if "samples" in r]
    assert [r["samples"] for r in samples] == [["sample at 4"], ["sample at 8"], ["sample at 10"]]


def test_evaluate_turns_dropout_off_and_restores_every_modules_mode(tmp_path):
    trainer = setup(tmp_path)
    model = trainer.model
    seen = []
    trainer.forward_fn = lambda m, batch: (seen.append((m.training, m.drop.training)), m(*map(mi.tensor, batch[:2])))[1]
    model.norm.eval()  # a sub-module the user froze in eval mode must stay so
    first = trainer.evaluate()["val_loss"]
    assert trainer.evaluate()["val_loss"] == first  # dropout off: the same batches give the same loss
    assert seen and all(state == (False, False) for state in seen)
    assert model.training and model.drop.training and not model.norm.training
    with pytest.raises(RuntimeError, match="broken batch"):
        trainer.forward_fn = lambda m, batch: (_ for _ in ()).throw(RuntimeError("broken batch"))
        trainer.evaluate()
    assert model.training and model.drop.training and not model.norm.training  # restored after an error too


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    """2 micro-batches of 4 == 1 batch of 8 (same data, no dropout): the summed grads of loss / 2."""
    data = make_data(16, 3)

    def run(bs, accum, sub):
        mi.manual_seed(5)
        model = TinyLM(dropout=0.0)
        loader = DataLoader(data, batch_size=bs, shuffle=False)
        cfg = TrainConfig(out_dir=str(tmp_path / sub), max_steps=2, grad_accum_steps=accum, warmup_steps=0,
                          eval_interval=0, checkpoint_interval=0, progress=False, plot=False)
        t = Trainer(model, None, loader, None, cfg)
        t.train()
        return t.model.state_dict()["w1.weight"].data

    np.testing.assert_allclose(run(4, 2, "a"), run(8, 1, "b"), rtol=2e-5, atol=2e-6)


def test_config_validation_and_errors(tmp_path):
    with pytest.raises(ValueError, match="grad_accum_steps"):
        TrainConfig(grad_accum_steps=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(max_steps=10, warmup_steps=20)
    cfg = TrainConfig(betas=[0.9, 0.99])
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="batch_size=8 but train_loader.batch_size=4"):
        setup(tmp_path, batch_size=8)
    with pytest.raises(ValueError, match="needs a val_loader"):
        Trainer(TinyLM(), None, DataLoader(make_data(8, 0), 4), None, TrainConfig(progress=False)).evaluate()
    with pytest.raises(TypeError, match="model must be an nn.Module.*got function"):
        Trainer(lambda x: x, None, DataLoader(make_data(8, 0), 4), None, TrainConfig(progress=False))


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    trainer = setup(tmp_path, lr=1e-2)
    trainer.forward_fn = lambda model, batch: mi.tensor(float("nan"))
    with pytest.raises(FloatingPointError, match="loss is nan at step 1"):
        trainer.train()

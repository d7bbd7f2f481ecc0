"""Issue 25, Trainer and PEFT: no lost work (1) and no half-applied state (2), with variants."""
import json
import os
import shutil

import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
from minillm.io import load_safetensors, save_safetensors
from minillm.models.llama import ModelConfig, Transformer
from minillm.peft import LoraConfig, PeftModel, get_peft_model
from minillm.train import (
    CheckpointMismatchError, OutputDirInUseError, TrainConfig, check_out_dir, list_checkpoints, read_metrics,
)
from test_train import setup

# ------------------------------------------------------------------ 1. a used out_dir is refused


def _state(trainer):
    return ({k: v.data.copy() for k, v in trainer.model.state_dict().items()},
            json.dumps(trainer.optimizer.state_dict()["param_groups"], default=str),
            {k: {kk: np.array(vv, copy=True) for kk, vv in st.items()} for k, st in trainer.optimizer.state.items()},
            trainer.step, trainer.scheduler.last_step, trainer.train_loader.state_dict(), mi.random.get_rng_state())


def _same_state(a, b):
    assert a[0].keys() == b[0].keys() and all(np.array_equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1] == b[1] and a[3:] == b[3:]
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        assert all(np.array_equal(a[2][k][kk], b[2][k][kk]) for kk in a[2][k])


@pytest.mark.parametrize("leftover", ["metrics", "checkpoints", "model", "adapter"])
def test_fresh_run_in_a_used_out_dir_is_refused(tmp_path, leftover):
    setup(tmp_path, max_steps=4).train()
    for name in {"metrics", "checkpoints", "model", "adapter"} - {leftover}:
        path = tmp_path / ("metrics.jsonl" if name == "metrics" else name)
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    if leftover in ("model", "adapter"):
        (tmp_path / leftover).mkdir()
        (tmp_path / leftover / "config.json").write_text("{}")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OutputDirInUseError, match=r"already holds a training run .*--overwrite"):
        setup(tmp_path, max_steps=6).train()
    assert sorted(os.listdir(tmp_path)) == before  # nothing touched


def test_overwrite_replaces_the_old_run_cleanly(tmp_path):
    setup(tmp_path, max_steps=8, checkpoint_interval=2, keep_last=10).train()
    setup(tmp_path, max_steps=4, overwrite=True, checkpoint_interval=2, keep_last=10).train()
    steps = [r["step"] for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "train_loss" in r]
    assert steps == [1, 2, 3, 4]  # one run's steps, not two mixed
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [2, 4]


def test_resume_in_a_used_out_dir_is_allowed_and_empty_dir_is_fresh(tmp_path):
    setup(tmp_path, max_steps=4).train()
    t = setup(tmp_path, max_steps=6, lr_decay_steps=4)
    assert t.resume() is not None
    t.train()
    check_out_dir(str(tmp_path / "new"))  # a missing folder is fresh
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")  # an empty metrics file is no run
    check_out_dir(str(tmp_path / "empty"))


def test_resume_without_checkpoint_starts_clean(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 10, "train_loss": 1.0}\n')  # a run that died before a checkpoint
    t = setup(tmp_path, max_steps=2, warmup_steps=1)
    assert t.resume() is None
    t.train()
    assert [r["step"] for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "train_loss" in r] == [1, 2]


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_overwrite_flag_is_a_bool(tmp_path, value):
    with pytest.raises(ValueError, match="overwrite"):
        TrainConfig(out_dir=str(tmp_path), overwrite=value)


@pytest.mark.parametrize("field, value", [("lr", "1e-3"), ("lr", float("nan")), ("min_lr", float("inf")),
                                          ("grad_clip", None), ("max_steps", True), ("betas", ("0.9", 0.95))])
def test_train_config_refuses_mistyped_numbers(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


# ------------------------------------------------------------------ 2. resume: check everything, then apply
def _damage_state(path, change):
    state_path = os.path.join(path, "trainer_state.json")
    state = json.loads(open(state_path).read())
    change(state)
    with open(state_path, "w") as f:
        json.dump(state, f)


STATE_DAMAGE = {
    "no rng": lambda s: s.pop("rng"),
    "no scheduler": lambda s: s.pop("scheduler"),
    "no step": lambda s: s.pop("step"),
    "no optimizer": lambda s: s.pop("optimizer"),
    "no model_params": lambda s: s.pop("model_params"),
    "step str": lambda s: s.update(step="8"),
    "step float": lambda s: s.update(step=8.0),
    "step bool": lambda s: s.update(step=True),
    "step -5": lambda s: s.update(step=-5),
    "step 1e6": lambda s: s.update(step=1_000_000),
    "step other": lambda s: s.update(step=4),
    "rng not object": lambda s: s.update(rng=[1, 2]),
    "rng garbage": lambda s: s["rng"].update(minillm={"bit_generator": "nope"}),
    "scheduler last_step": lambda s: s["scheduler"].update(last_step=-1),
    "loader garbage": lambda s: s.update(train_loader={"epoch": "x", "position": 0, "seed": 0}),
    "loader position": lambda s: s["train_loader"].update(position=10_000),
    "tied garbage": lambda s: s.update(tied={"output.weight": 3}),
    "optimizer meta": lambda s: s["optimizer"].update(state={"0": {"scalars": {}, "arrays": ["nope"]}}),
    "tokens_seen": lambda s: s.update(tokens_seen=-1),
    "best_val_loss": lambda s: s.update(best_val_loss="low"),
}


@pytest.mark.parametrize("damage", sorted(STATE_DAMAGE))
def test_damaged_trainer_state_changes_nothing(tmp_path, damage):
    setup(tmp_path, max_steps=8, checkpoint_interval=8).train()
    path = list_checkpoints(str(tmp_path))[-1][1]
    _damage_state(path, STATE_DAMAGE[damage])
    t = setup(tmp_path, max_steps=12, lr_decay_steps=8)
    before = _state(t)
    with pytest.raises(ValueError, match=r"(trainer_state\.json|step_00000008)") as err:
        t.load_checkpoint(path)
    assert not isinstance(err.value, CheckpointMismatchError)  # named as damage, not as another run
    _same_state(before, _state(t))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="every checkpoint is damaged"):
        setup(tmp_path, max_steps=12, lr_decay_steps=8).resume()  # the only checkpoint: nothing to fall back to


@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.safetensors"])
@pytest.mark.parametrize("keep", [5, 100, 0.5])
def test_truncated_checkpoint_file_is_named(tmp_path, victim, keep):
    setup(tmp_path, max_steps=4, checkpoint_interval=4).train()
    path = os.path.join(list_checkpoints(str(tmp_path))[-1][1], victim)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep) if keep < 1 else keep)
    t = setup(tmp_path, max_steps=8, lr_decay_steps=4)
    before = _state(t)
    with pytest.raises(ValueError, match=rf"step_00000004/{victim}"):
        t.load_checkpoint(os.path.dirname(path))
    _same_state(before, _state(t))


@pytest.mark.parametrize("damage", ["truncate", "state", "delete weights"])
def test_resume_falls_back_to_the_previous_intact_checkpoint(tmp_path, damage):
    setup(tmp_path, max_steps=8, checkpoint_interval=4, keep_last=3).train()
    newest = list_checkpoints(str(tmp_path))[-1][1]
    if damage == "truncate":
        with open(os.path.join(newest, "model.safetensors"), "r+b") as f:
            f.truncate(100)
    elif damage == "state":
        _damage_state(newest, STATE_DAMAGE["no rng"])
    else:
        os.remove(os.path.join(newest, "optimizer.safetensors"))
    t = setup(tmp_path, max_steps=8)
    with pytest.warns(UserWarning, match=r"step_00000008 is damaged"):
        path = t.resume()
    assert path.endswith("step_00000004") and t.step == 4
    # and the fallback is exact: continuing gives the same losses as the run that never stopped
    t.train()
    ref = setup(tmp_path / "ref", max_steps=8, checkpoint_interval=4)
    ref.train()
    assert np.allclose(t.losses, ref.losses[4:], rtol=0, atol=1e-10)


def test_resume_mismatch_does_not_fall_back(tmp_path):
    setup(tmp_path, max_steps=8, checkpoint_interval=4, keep_last=3).train()
    with pytest.raises(CheckpointMismatchError, match="config.lr"):
        setup(tmp_path, max_steps=8, lr=5e-2).resume()


def test_checkpoint_past_max_steps_is_refused(tmp_path):
    setup(tmp_path, max_steps=8, checkpoint_interval=8).train()
    with pytest.raises(CheckpointMismatchError, match=r"past max_steps=4.*--steps"):
        setup(tmp_path, max_steps=4, lr_decay_steps=8).resume()


@pytest.mark.parametrize("dtype", [np.int64, np.bool_])
def test_checkpoint_with_non_float_weights_is_refused(tmp_path, dtype):
    setup(tmp_path, max_steps=4, checkpoint_interval=4).train()
    path = os.path.join(list_checkpoints(str(tmp_path))[-1][1], "model.safetensors")
    tensors = load_safetensors(path)
    tensors["norm.weight"] = np.ones(tensors["norm.weight"].shape, dtype=dtype)
    save_safetensors(tensors, path)
    t = setup(tmp_path, max_steps=8, lr_decay_steps=4)
    before = _state(t)
    with pytest.raises(ValueError, match="not floating point"):
        t.load_checkpoint(os.path.dirname(path))
    _same_state(before, _state(t))


# ------------------------------------------------------------------ 2. PeftModel.from_pretrained validates, then mutates
def _llama():
    mi.manual_seed(0)
    model = Transformer(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=32))
    for p in model.parameters():
        nn.init.normal_(p, 0.0, 0.2)
    return model


def _adapter(tmp_path):
    peft = get_peft_model(_llama(), LoraConfig(r=2, lora_alpha=4, target_modules=["wq", "wv"]))
    for _, m in peft.lora_layers():
        nn.init.normal_(m.lora_B.weight, 0.0, 0.1)
    peft.save_pretrained(tmp_path / "good")
    return peft


def _bad_adapter(tmp_path, how):
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "good", bad)
    w, c = bad / "adapter_model.safetensors", bad / "adapter_config.json"
    tensors = load_safetensors(w)
    first = sorted(tensors)[0]
    if how == "truncated":
        with open(w, "r+b") as f:
            f.truncate(64)
    elif how == "missing tensor":
        del tensors[first]
        save_safetensors(tensors, w)
    elif how == "extra tensor":
        tensors["layers.0.attention.wk.lora_A.weight"] = np.zeros((2, 32), np.float32)
        save_safetensors(tensors, w)
    elif how == "wrong shape":
        tensors[first] = np.zeros((3, 3), np.float32)
        save_safetensors(tensors, w)
    elif how == "int tensor":
        tensors[first] = np.zeros(tensors[first].shape, np.int32)
        save_safetensors(tensors, w)
    elif how == "unknown module":
        cfg = json.loads(c.read_text())
        cfg["targeted_module_names"] = ["layers.0.attention.nope"]
        c.write_text(json.dumps(cfg))
    elif how == "bad r":
        cfg = json.loads(c.read_text())
        cfg["r"] = "two"
        c.write_text(json.dumps(cfg))
    elif how == "names not list":
        cfg = json.loads(c.read_text())
        cfg["targeted_module_names"] = "layers.0.attention.wq"
        c.write_text(json.dumps(cfg))
    return bad


@pytest.mark.parametrize("how", ["truncated", "missing tensor", "extra tensor", "wrong shape", "int tensor",
                                 "unknown module", "bad r", "names not list"])
def test_failed_from_pretrained_leaves_the_model_as_it_was_and_a_retry_works(tmp_path, how):
    trained = _adapter(tmp_path)
    bad = _bad_adapter(tmp_path, how)
    base = _llama()
    names = [n for n, _ in base.named_modules()]
    grads = {n: p.requires_grad for n, p in base.named_parameters()}
    weights = {k: v.data.copy() for k, v in base.state_dict().items()}
    with pytest.raises((ValueError, TypeError, FileNotFoundError)):
        PeftModel.from_pretrained(base, str(bad))
    assert [n for n, _ in base.named_modules()] == names  # no LoRA layer left behind
    assert {n: p.requires_grad for n, p in base.named_parameters()} == grads  # nothing frozen
    assert all(np.array_equal(weights[k], v.data) for k, v in base.state_dict().items())
    ids = mi.tensor(np.array([[1, 2, 3, 4]]))
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "good"))  # the retry works
    trained.eval()
    with mi.no_grad():
        assert np.allclose(reloaded(ids).logits.data, trained(ids).logits.data, atol=1e-6)


def test_from_pretrained_on_an_adapted_model_is_refused_up_front(tmp_path):
    _adapter(tmp_path)
    base = _llama()
    PeftModel.from_pretrained(base, str(tmp_path / "good"))
    with pytest.raises(ValueError, match="already has LoRA layers"):
        PeftModel.from_pretrained(base, str(tmp_path / "good"))

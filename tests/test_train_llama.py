"""minillm.train with the book's LLaMA2 (5.1): exact resume and sample generations on a tiny model."""
import numpy as np
import pytest

import minillm as mi
from minillm.data import DataLoader
from minillm.train import TrainConfig, Trainer, make_sample_fn, read_metrics
from _helpers import affine_sequences

llama = pytest.importorskip("minillm.models.llama")

VOCAB, T = 64, 16


def make_data(n, seed, vocab=VOCAB):
    return affine_sequences(n, seed, vocab, T)


def setup(out_dir, vocab=VOCAB, sample_fn=None, **overrides):
    mi.manual_seed(0)
    cfg = llama.ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab, max_seq_len=32,
                            dropout=0.1)
    model = llama.Transformer(cfg)
    train = DataLoader(make_data(24, 1, vocab), batch_size=4, seed=3)
    val = DataLoader(make_data(8, 2, vocab), batch_size=4, shuffle=False)
    kw = dict(out_dir=str(out_dir), max_steps=6, grad_accum_steps=2, lr=1e-2, min_lr=1e-3, warmup_steps=2,
              lr_decay_steps=6, eval_interval=3, eval_batches=1, log_interval=1, checkpoint_interval=3,
              progress=False, plot=False)
    kw.update(overrides)
    return Trainer(model, None, train, val, TrainConfig(**kw), sample_fn=sample_fn)


def test_llama_exact_resume(tmp_path):
    full = setup(tmp_path / "full")
    full.train()
    first = setup(tmp_path / "split", max_steps=3)  # "interrupted" after the checkpoint at step 3
    first.train()
    resumed = setup(tmp_path / "split")
    assert resumed.resume().endswith("step_00000003")
    resumed.train()
    assert first.losses + resumed.losses == full.losses  # bit-identical
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_llama_model_config_mismatch_is_named(tmp_path):
    setup(tmp_path, max_steps=3).train()
    other = setup(tmp_path, max_steps=3)
    other.model.args.rope_theta = 500.0  # same shapes, different model: caught by the config check
    with pytest.raises(ValueError, match="model config rope_theta: checkpoint 10000.0, now 500.0"):
        other.resume()


def test_sample_generations_are_logged(tmp_path):
    from minillm.tokenizers import CharTokenizer

    tok = CharTokenizer.train(["abcdefgh ijk"])
    trainer = setup(tmp_path, vocab=tok.vocab_size, sample_fn=make_sample_fn(tok, ["ab"], max_new_tokens=5),
                    max_steps=3)
    trainer.train()
    samples = [r["samples"] for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "samples" in r]
    assert len(samples) == 1 and samples[0][0].startswith("ab")

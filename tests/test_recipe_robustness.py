"""Issue 25 §8: the main job's recipe does not hinge on its seed.

The README reports the default run (`examples/train_tiny_llama.py`) over three seeds. This test
runs the same recipe — the world corpus, a BPE tokenizer, LLaMA pretraining, then SFT with the
example's optimizer and schedule, scored by ``pipeline.evaluate_sft`` — at a size CI can afford
(a 2-layer, 64-wide model, a small world, the two short-answer skills; reading QA needs long
stories and is left to the full run), for three seeds. Every seed must learn (held-out exact
match far above the 0 % before SFT) and the seeds must agree with each other. Not timed.
"""
import os

import pytest

import minillm as mi
from minillm import pipeline
from minillm.data import write_default_corpus
from minillm.models.llama import ModelConfig, Transformer
from minillm.train import TrainConfig

SEEDS = (0, 1, 2)


def _train_config(out_dir, steps, lr, seed):
    return TrainConfig(out_dir=out_dir, max_steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=max(1, steps // 20),
                       eval_interval=0, checkpoint_interval=0, keep_last=1, seed=seed, progress=False)


def _reduced_run(root, seed) -> dict:
    mi.manual_seed(seed)
    paths = write_default_corpus(os.path.join(root, "data"), n_stories=1500, n_sft=1200, seed=seed,
                                 skills=("translate", "math"))
    records = pipeline.read_sft_records(paths["sft_val"], limit=120)
    tok = pipeline.train_tokenizer(paths["pretrain_train"], 384, os.path.join(root, "tok"), show_progress=False)
    model = Transformer(ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size, max_seq_len=256))
    pipeline.pretrain(model, tok, paths, _train_config(os.path.join(root, "pre"), 150, 3e-3, seed), block_size=96, batch_size=8)
    before = pipeline.evaluate_sft(model, tok, records)["all"]
    pipeline.sft(model, tok, paths, _train_config(os.path.join(root, "sft"), 600, 3e-3, seed), batch_size=16)
    return {"before": before, "after": pipeline.evaluate_sft(model, tok, records)["all"]}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return {seed: _reduced_run(str(tmp_path_factory.mktemp(f"seed{seed}")), seed) for seed in SEEDS}


def test_every_seed_learns(results):
    # measured on the 2-core dev machine: 19 %, 22 %, 26 % after SFT (0 % before)
    for seed, r in results.items():
        assert r["before"] <= 0.05, (seed, r)
        assert r["after"] >= 0.10, f"seed {seed}: held-out exact match {r['after']:.1%} after SFT: {results}"


def test_seeds_agree(results):
    after = [r["after"] for r in results.values()]
    # 120 questions: one seed's standard error is ~4 points; a recipe that hinges on its seed
    # (the issue saw 52 % vs 68 % for one seed on two machines) spreads much further
    assert max(after) - min(after) <= 0.20, results

"""Chapter 4.1: parameter and FLOP counts, power-law fits (minillm/scaling.py)."""
import math

import numpy as np
import pytest

from minillm.models import ModelConfig, Transformer
from minillm.scaling import chinchilla_optimal, count_parameters, fit_power_law, flops_per_token, training_flops


@pytest.mark.parametrize("kw", [
    dict(),  # the book's model: 82,594,560 parameters (5.1.6)
    dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=2048),  # "tiny"
    dict(dim=64, n_layers=3, n_heads=4, n_kv_heads=4, vocab_size=300, tie_word_embeddings=False),
    dict(dim=48, n_layers=2, n_heads=6, n_kv_heads=2, vocab_size=100, hidden_dim=100),
])
def test_formula_equals_the_modules(kw):
    cfg = ModelConfig(**kw)
    assert count_parameters(cfg) == Transformer(cfg).num_parameters()
    parts = count_parameters(cfg, by_layer=True)
    assert parts["total"] == count_parameters(cfg)
    if not kw:
        assert count_parameters(cfg) == 82_594_560


def test_flops_per_token_is_six_n_plus_attention():
    cfg = ModelConfig(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=2048)
    n = count_parameters(cfg)
    assert flops_per_token(cfg, 256) == 6 * n + 6 * 4 * 256 * 128
    # without the embedding lookup, the tied output head's V·d matmul still counts once
    assert flops_per_token(cfg, 1, include_embedding=False) == 6 * n + 6 * 4 * 128
    assert training_flops(1e6, 2e7) == pytest.approx(1.2e14)
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(cfg, 0)
    with pytest.raises(ValueError, match="must be > 0"):
        training_flops(0, 1)


def test_matmul_flops_of_a_forward_pass_are_two_n_per_token():
    # count the multiply-adds of every Linear in one forward pass by hand: 2·(in·out) per token
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, hidden_dim=48)
    model = Transformer(cfg)
    linear = sum(2 * p.data.size for name, p in model.named_parameters() if p.data.ndim == 2 and "tok_embeddings" not in name)
    linear += 2 * cfg.vocab_size * cfg.dim  # the tied output head
    norms = sum(p.data.size for p in model.parameters() if p.data.ndim == 1)
    assert flops_per_token(cfg, 1, include_embedding=False) - 6 * cfg.n_layers * cfg.dim == pytest.approx(3 * (linear + 2 * norms))


def test_power_law_fit_recovers_its_exponent():
    c = np.logspace(10, 14, 9)
    rng = np.random.default_rng(0)
    loss = 50.0 * c ** -0.076 * np.exp(rng.normal(0, 1e-3, size=c.shape))
    fit = fit_power_law(c, loss)
    assert fit["b"] == pytest.approx(0.076, abs=2e-3) and fit["a"] == pytest.approx(50, rel=0.1) and fit["r2"] > 0.99
    with pytest.raises(ValueError, match="> 0"):
        fit_power_law([1, -1], [1, 2])
    with pytest.raises(ValueError, match="two equal"):
        fit_power_law([1], [1])


def test_chinchilla_rule():
    opt = chinchilla_optimal(6 * 20 * 1e6 ** 2)
    assert opt["n_params"] == pytest.approx(1e6) and opt["n_tokens"] == pytest.approx(2e7)
    assert training_flops(opt["n_params"], opt["n_tokens"]) == pytest.approx(6 * 20 * 1e12)
    assert math.isfinite(chinchilla_optimal(1.0)["n_params"])


def test_scaling_example_quick(tmp_path):
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "scaling"
    proc = subprocess.run([sys.executable, os.path.join(root, "examples", "scaling.py"), "--quick", "--out-dir", str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": root, "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert len(report["runs"]) == 4 and (out / "scaling.png").exists()
    assert "power law" in proc.stdout

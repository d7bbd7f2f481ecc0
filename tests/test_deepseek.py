"""DeepSeek (models/deepseek.py): the MoE router and dispatch against a one-expert-at-a-time
reference, the balance loss by formula, V3's bias balancing, MLA's absorbed decode against the
naive expansion, the latent KV cache, gradients through routing, the KV-cache byte table, bad input."""
import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
from minillm.generation import generate
from minillm.io import load_model, save_model
from minillm.models.deepseek import DeepseekConfig, DeepseekForCausalLM, DeepseekMoE, MoEGate, kv_cache_bytes_per_token
from minillm.models.llama import ModelConfig, Transformer
from minillm.testing import gradcheck
from _helpers import scramble as _scramble

V = 37


def cfg(**kw):
    base = dict(vocab_size=V, max_seq_len=24, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=24, n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
                moe_intermediate_size=8, kv_lora_rank=6, qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=8)
    return DeepseekConfig(**{**base, **kw})


def scramble(model, std=0.4):
    return _scramble(model, std, vectors=0.1)


def ids(B, T, seed=0):
    return np.random.default_rng(seed).integers(0, V, size=(B, T))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------ router and dispatch
def test_moe_output_is_the_weighted_sum_of_the_chosen_experts_one_by_one():
    c = cfg(n_routed_experts=6, num_experts_per_tok=3)
    moe = scramble(DeepseekMoE(c).double())
    x = mi.randn(2, 5, 16, dtype=mi.float64)
    got = moe(x).data.reshape(10, 16)
    flat = x.data.reshape(10, 16)
    s = softmax(flat @ moe.gate.weight.data.T)  # (N, E)
    for t in range(10):
        chosen = np.argsort(-s[t])[:3]
        ref = moe.shared_experts(mi.tensor(flat[t : t + 1])).data[0]
        for e in chosen:  # every chosen expert, computed alone on this one token
            ref = ref + s[t, e] * moe.experts[e](mi.tensor(flat[t : t + 1])).data[0]
        np.testing.assert_allclose(got[t], ref, rtol=1e-10, atol=1e-12, err_msg=f"token {t}")
    assert moe.gate.last_load.sum() == 10 * 3


def test_idle_experts_do_not_run():
    moe = scramble(DeepseekMoE(cfg(n_routed_experts=4, num_experts_per_tok=1)).double())
    calls = []

    class Spy(nn.Module):
        def __init__(self, inner, e):
            super().__init__()
            self.inner, self.e = inner, e

        def forward(self, x):
            calls.append((self.e, x.shape[0]))
            return self.inner(x)

    moe.experts = nn.ModuleList([Spy(ex, e) for e, ex in enumerate(moe.experts)])
    nn.init.zeros_(moe.gate.weight)
    moe.gate.weight.data[2, 0] = 50.0  # every token with x_0 > 0 goes to expert 2
    x = np.abs(np.random.default_rng(0).standard_normal((1, 6, 16))) + 0.1
    moe(mi.tensor(x))
    assert calls == [(2, 6)], "one call, on the expert's own tokens only"


def test_sigmoid_scores_renormalised_and_scaled():
    c = cfg(scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5)
    gate = scramble(MoEGate(c).double())
    x = np.random.default_rng(1).standard_normal((7, 16))
    idx, w, _ = gate(mi.tensor(x))
    s = 1 / (1 + np.exp(-(x @ gate.weight.data.T)))
    ref_idx = np.argsort(-s, axis=-1)[:, :2]
    np.testing.assert_array_equal(idx, ref_idx)
    ref_w = np.take_along_axis(s, ref_idx, -1)
    np.testing.assert_allclose(w.data, 2.5 * ref_w / ref_w.sum(-1, keepdims=True), rtol=1e-12)


def test_balance_loss_by_formula_and_its_minimum_at_uniform_routing():
    E, k, N = 4, 1, 8
    c = cfg(n_routed_experts=E, num_experts_per_tok=k, aux_loss_alpha=0.1)
    gate = MoEGate(c).double()
    x = np.random.default_rng(0).standard_normal((N, 16))
    nn.init.normal_(gate.weight, 0, 0.5)
    idx, _, aux = gate(mi.tensor(x))
    s = softmax(x @ gate.weight.data.T)
    f = np.array([(idx == i).sum() for i in range(E)]) * E / (k * N)
    assert aux.item() == pytest.approx(0.1 * (f * s.mean(0)).sum(), rel=1e-12)

    # uniform routing: two tokens per expert -> f_i = 1 and, softmax rows summing to 1, L = alpha exactly
    nn.init.zeros_(gate.weight)
    for i in range(E):
        gate.weight.data[i, i] = 3.0
    xu = np.zeros((N, 16))
    xu[np.arange(N), np.arange(N) % E] = 1.0
    idx, _, aux_u = gate(mi.tensor(xu))
    assert np.bincount(idx.ravel(), minlength=E).tolist() == [2, 2, 2, 2]
    assert aux_u.item() == pytest.approx(0.1, rel=1e-12)
    # collapsed routing: every token to expert 0 -> f_0 = E, L = alpha·E·P_0, E/k times the minimum as P_0 -> 1
    xc = np.zeros((N, 16))
    xc[:, 0] = 3.0
    idx, _, aux_c = gate(mi.tensor(xc))
    assert (idx == 0).all() and aux_c.item() > 3 * aux_u.item()
    with gate.mode(training=False):
        assert gate(mi.tensor(xc))[2] is None  # only a training loss


def test_aux_free_bias_balances_the_load_without_changing_the_gate_weights():
    c = cfg(n_routed_experts=4, num_experts_per_tok=1, topk_method="noaux_tc", bias_update_speed=0.02, aux_loss_alpha=0.0)
    gate = MoEGate(c).double()
    nn.init.normal_(gate.weight, 0.0, 0.3)
    gate.weight.data[0, 0] += 2.0  # a router that sends most tokens to expert 0
    x = mi.tensor(np.abs(np.random.default_rng(0).standard_normal((64, 16))))
    loads = []
    for _ in range(100):
        idx, w, aux = gate(x)
        loads.append(np.bincount(idx.ravel(), minlength=4).max())
    b = gate.e_score_correction_bias.data
    assert loads[0] > 40 and np.mean(loads[-20:]) < 0.6 * loads[0], loads
    assert b[0] == b.min() < 0, "the overloaded expert's bias went down"
    assert aux is None
    s = softmax(x.data @ gate.weight.data.T)
    np.testing.assert_allclose(w.data[:, 0], s[np.arange(64), idx[:, 0]], rtol=1e-12)  # weights: unbiased scores
    with gate.mode(training=False):
        before = b.copy()
        gate(x)
        np.testing.assert_array_equal(gate.e_score_correction_bias.data, before)  # no update at inference


def brute_force_group_choice(choice, n_group, topk_group, k, group_score):
    """The definition, one token at a time with Python lists: rank the groups by ``group_score``
    of their experts' scores, keep the best ``topk_group``, then take the k best experts among the
    kept groups' experts only."""
    E = len(choice)
    size = E // n_group
    groups = [list(range(g * size, (g + 1) * size)) for g in range(n_group)]
    ranked = sorted(range(n_group), key=lambda g: (-group_score([choice[e] for e in groups[g]]), g))
    allowed = [e for g in ranked[:topk_group] for e in groups[g]]
    return sorted(allowed, key=lambda e: (-choice[e], e))[:k]


@pytest.mark.parametrize("method, n_group, topk_group, k", [
    ("group_limited_greedy", 4, 2, 3),  # V2: a group's score is its best expert
    ("noaux_tc", 4, 2, 3),  # V3: the sum of its two best (bias-adjusted) experts
    ("noaux_tc", 2, 1, 2),
])
def test_group_limited_routing_equals_the_brute_force_definition(method, n_group, topk_group, k):
    c = cfg(n_routed_experts=8, num_experts_per_tok=k, n_group=n_group, topk_group=topk_group, topk_method=method,
            scoring_func="softmax" if method == "group_limited_greedy" else "sigmoid", bias_update_speed=0.0)
    gate = MoEGate(c).double()
    nn.init.normal_(gate.weight, 0.0, 0.5)
    if method == "noaux_tc":
        gate.e_score_correction_bias.data[:] = np.random.default_rng(3).normal(0, 0.3, 8)  # some choices go negative
    x = mi.tensor(np.random.default_rng(4).standard_normal((200, 16)))
    idx, w, _ = gate(x)
    s = gate.scores(x).data
    choice = s + (gate.e_score_correction_bias.data if method == "noaux_tc" else 0.0)
    group_score = (lambda v: max(v)) if method == "group_limited_greedy" else (lambda v: sum(sorted(v)[-2:]))
    plain_top_k = np.argsort(-choice, axis=-1, kind="stable")[:, :k]
    differs = 0
    for t in range(200):
        want = brute_force_group_choice(list(choice[t]), n_group, topk_group, k, group_score)
        assert idx[t].tolist() == want, f"token {t}"
        assert len({e // (8 // n_group) for e in idx[t]}) <= topk_group  # at most topk_group groups used
        differs += set(want) != set(plain_top_k[t])
    assert differs > 10, "the group limit changed the choice of some tokens (the test can tell the two apart)"
    np.testing.assert_allclose(w.data, s[np.arange(200)[:, None], idx], rtol=1e-12)  # weights: the unbiased scores


def test_group_limited_moe_gradchecks_and_one_group_is_plain_top_k():
    moe = scramble(DeepseekMoE(cfg(n_routed_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1,
                                   topk_method="group_limited_greedy")).double(), 0.5)
    x = mi.randn(1, 4, 16, dtype=mi.float64, requires_grad=True)
    gradcheck(lambda x, *p: moe(x) + moe.aux_loss, [x, *moe.parameters()], name="group-limited DeepseekMoE")
    one = MoEGate(cfg(n_routed_experts=4, n_group=1, topk_method="group_limited_greedy")).double()
    greedy = MoEGate(cfg(n_routed_experts=4)).double()
    greedy.load_state_dict(one.state_dict())
    z = mi.tensor(np.random.default_rng(5).standard_normal((50, 16)))
    np.testing.assert_array_equal(one(z)[0], greedy(z)[0])


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid"])
def test_gradcheck_through_routing_away_from_ties(scoring):
    moe = scramble(DeepseekMoE(cfg(scoring_func=scoring, norm_topk_prob=scoring == "sigmoid")).double(), 0.5)
    x = mi.randn(1, 4, 16, dtype=mi.float64, requires_grad=True)
    assert moe.training and moe.gate.alpha > 0
    s = moe.gate.scores(x.reshape(4, 16)).data
    top = np.sort(s, -1)
    assert (top[:, -2] - top[:, -3]).min() > 1e-4, "the k-th and (k+1)-th scores are apart: no choice flips under eps"

    def fn(x, *p):
        y = moe(x)
        return y + moe.aux_loss  # (training mode: the balance loss is part of what is checked)

    gradcheck(fn, [x, *moe.parameters()], name=f"DeepseekMoE ({scoring}) with its balance loss")


# ------------------------------------------------------------------ MLA
@pytest.mark.parametrize("q_lora_rank", [None, 5])
def test_mla_absorbed_equals_naive_and_gradchecks(q_lora_rank):
    c = cfg(q_lora_rank=q_lora_rank)
    m = scramble(DeepseekForCausalLM(c).double(), 0.3)
    x = ids(2, 6)
    naive, absorbed = m(x, absorb=False).logits.data, m(x, absorb=True).logits.data
    np.testing.assert_allclose(absorbed, naive, rtol=1e-10, atol=1e-12)
    attn = m.model.layers[0].self_attn
    h = mi.randn(1, 3, 16, dtype=mi.float64, requires_grad=True)
    cos, sin = m.freqs_cos.data[:3], m.freqs_sin.data[:3]
    for absorb in (False, True):
        gradcheck(lambda h, *p: attn(h, cos, sin, absorb=absorb), [h, *attn.parameters()], name=f"MLA absorb={absorb}")


def test_latent_cache_holds_only_c_kv_and_the_rotary_key_and_decodes_exactly():
    c = cfg()
    m = scramble(DeepseekForCausalLM(c).double(), 0.3)
    x = ids(2, 9)
    full = m(x, absorb=False).logits.data
    with mi.no_grad(), m.mode(training=False):
        cache = m.new_kv_cache(2, 12)
        assert cache[0].k.shape == (2, 1, 12, c.kv_lora_rank) and cache[0].v.shape == (2, 1, 12, c.qk_rope_head_dim)
        steps = [m(x[:, :4], kv_cache=cache).logits.data] + [m(x[:, t : t + 1], kv_cache=cache).logits.data for t in range(4, 9)]
    np.testing.assert_allclose(np.concatenate(steps, 1), full, rtol=1e-9, atol=1e-11)
    # what was cached is the layer's latent and rotary key of those tokens
    attn = m.model.layers[0].self_attn
    h = m.model.layers[0].input_layernorm(m.model.embed_tokens(x))
    c_kv, k_rope = attn._latent(h, m.freqs_cos.data[:9], m.freqs_sin.data[:9])
    np.testing.assert_allclose(cache[0].k[:, 0, :9], c_kv.data, rtol=1e-12)
    np.testing.assert_allclose(cache[0].v[:, 0, :9], k_rope.data[:, :, 0], rtol=1e-12)


def test_decoupled_rope_makes_attention_depend_on_relative_positions_only():
    m = scramble(DeepseekForCausalLM(cfg()).double(), 0.3)
    x = ids(1, 7)
    base = m(x).logits.data
    shifted = m(x, position_ids=np.arange(5, 12)[None]).logits.data
    np.testing.assert_allclose(shifted, base, rtol=1e-9, atol=1e-11)
    # and the rotary part does carry position: with it removed (d_rope positions all 0) logits change
    assert not np.allclose(m(x, position_ids=np.zeros((1, 7), dtype=np.int64)).logits.data, base)


def test_generation_left_padding_and_the_dense_variant():
    m = scramble(DeepseekForCausalLM(cfg()), 0.3)
    a = generate(m, [[3, 4, 5, 6]], 5, temperature=0)
    b = generate(m, [[3, 4, 5, 6], [7, 8]], 5, temperature=0)
    assert b[0] == a[0]
    dense = DeepseekForCausalLM(cfg(n_routed_experts=0))
    assert dense.moe_layers() == [] and dense(ids(1, 4)).logits.shape == (1, 4, V)


def test_model_loss_gradcheck_includes_the_balance_losses():
    c = cfg(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8, moe_intermediate_size=4,
            kv_lora_rank=4, qk_nope_head_dim=2, qk_rope_head_dim=2, v_head_dim=4, vocab_size=9, aux_loss_alpha=0.5)
    m = scramble(DeepseekForCausalLM(c).double(), 0.6)
    x, y = np.random.default_rng(1).integers(0, 9, (2, 3)), np.random.default_rng(2).integers(0, 9, (2, 3))
    out = m(x, targets=y)
    aux = m.last_aux_loss
    with m.mode(training=False):
        plain = m(x, targets=y).loss.item()
    assert out.loss.item() == pytest.approx(plain + aux, rel=1e-12) and aux > 0
    gradcheck(lambda *p: m(x, targets=y).loss, list(m.parameters()), name="DeepSeek loss + balance loss",
              directions=2)  # whole model: random directions; MoE and MLA are checked element by element above


# ------------------------------------------------------------------ KV cache bytes
def test_kv_cache_bytes_formula_equals_the_allocated_caches():
    L, H, dh = 4, 8, 16
    per_token = lambda caches, n: sum(cc.nbytes for cc in caches) / n  # noqa: E731
    for kind, n_kv in (("MHA", 8), ("GQA", 2), ("MQA", 1)):
        llama = Transformer(ModelConfig(dim=H * dh, n_layers=L, n_heads=H, n_kv_heads=n_kv, vocab_size=32, max_seq_len=64))
        assert per_token(llama.new_kv_cache(1, 64), 64) == kv_cache_bytes_per_token(kind, L, H, dh, n_kv_heads=n_kv)
    ds = DeepseekForCausalLM(cfg(num_hidden_layers=L, num_attention_heads=H, hidden_size=H * dh, kv_lora_rank=32,
                                 qk_rope_head_dim=8, max_seq_len=64))
    assert per_token(ds.new_kv_cache(1, 64), 64) == kv_cache_bytes_per_token("MLA", L, H, dh, kv_lora_rank=32, qk_rope_head_dim=8)
    assert kv_cache_bytes_per_token("MLA", L, H, dh, kv_lora_rank=32, qk_rope_head_dim=8) < kv_cache_bytes_per_token("GQA", L, H, dh, n_kv_heads=2)
    with pytest.raises(ValueError, match="kind must be one of"):
        kv_cache_bytes_per_token("XYZ", 1, 1, 1)


# ------------------------------------------------------------------ config, io, bad input
def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"num_experts_per_tok \(5\) must be <= n_routed_experts \(4\)"):
        cfg(num_experts_per_tok=5)
    with pytest.raises(ValueError, match="DeepseekConfig.scoring_func"):
        cfg(scoring_func="relu")
    with pytest.raises(ValueError, match="DeepseekConfig.topk_method"):
        cfg(topk_method="random")
    with pytest.raises(ValueError, match="DeepseekConfig.qk_rope_head_dim must be even"):
        cfg(qk_rope_head_dim=3)
    with pytest.raises(ValueError, match="DeepseekConfig.kv_lora_rank must be an int >= 1"):
        cfg(kv_lora_rank=0)
    with pytest.raises(ValueError, match=r"topk_group \(3\) must be <= n_group \(2\)"):
        cfg(n_group=2, topk_group=3, topk_method="noaux_tc")
    with pytest.raises(ValueError, match=r"n_routed_experts \(4\) must be divisible by n_group \(3\)"):
        cfg(n_group=3, topk_method="noaux_tc")
    with pytest.raises(ValueError, match=r"topk_group \(1\) groups of 1 experts hold fewer than num_experts_per_tok \(2\)"):
        cfg(n_group=4, topk_group=1, topk_method="group_limited_greedy")
    with pytest.raises(ValueError, match="n_group=2 needs topk_method 'group_limited_greedy'"):
        cfg(n_group=2)
    with pytest.raises(ValueError, match="groups need >= 2 experts, got 1"):
        cfg(n_group=4, topk_group=2, topk_method="noaux_tc")
    assert DeepseekConfig.from_dict(cfg().to_dict()) == cfg()


def test_bad_input_and_save_load(tmp_path):
    m = DeepseekForCausalLM(cfg())
    with pytest.raises(ValueError, match=r"position_ids must be in \[0, 24\)"):
        m(ids(1, 3), position_ids=np.array([[0, 1, 30]]))
    with pytest.raises(ValueError, match="exceed max_seq_len=24"):
        m(ids(1, 25))
    with pytest.raises(ValueError, match="kv_cache has 1 layers"):
        with mi.no_grad():
            m(ids(1, 3), kv_cache=m.new_kv_cache(1)[:1])
    with pytest.raises(TypeError, match="integer token ids"):
        m(np.zeros((1, 3)))
    save_model(m, tmp_path / "ds")
    m2 = load_model(tmp_path / "ds")
    assert isinstance(m2, DeepseekForCausalLM)
    with m.mode(training=False), m2.mode(training=False):
        np.testing.assert_array_equal(m(ids(1, 5)).logits.data, m2(ids(1, 5)).logits.data)

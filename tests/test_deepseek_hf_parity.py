"""Optional: our DeepseekForCausalLM gives Hugging Face DeepseekV3ForCausalLM's logits (skips without
torch/transformers). A tiny random config: MLA with a compressed query (q_lora_rank), one dense
layer then MoE layers with V3's router (sigmoid scores, bias-adjusted choice, renormalised and
scaled weights), one shared expert; with n_group = 1 (plain top-k) and with group-limited routing
(n_group = 3, topk_group = 2: each token's experts come from its 2 best groups of 2)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "DeepseekV3ForCausalLM"):
    pytest.skip("this transformers has no DeepseekV3ForCausalLM", allow_module_level=True)

from minillm.models.deepseek import DeepseekConfig, DeepseekForCausalLM  # noqa: E402
import minillm as mi  # noqa: E402
import minillm.nn as nn  # noqa: E402


def models(q_lora_rank, n_group=1, topk_group=1):
    ours_cfg = DeepseekConfig(vocab_size=41, max_seq_len=32, hidden_size=24, num_hidden_layers=3, num_attention_heads=3,
                              intermediate_size=40, n_routed_experts=6, n_shared_experts=1, num_experts_per_tok=2,
                              moe_intermediate_size=12, first_k_dense_replace=1, scoring_func="sigmoid", norm_topk_prob=True,
                              routed_scaling_factor=2.5, topk_method="noaux_tc", bias_update_speed=0.0, aux_loss_alpha=0.0,
                              q_lora_rank=q_lora_rank, kv_lora_rank=10, n_group=n_group, topk_group=topk_group, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=8)
    mi.manual_seed(0)
    ours = DeepseekForCausalLM(ours_cfg).double()
    for name, p in ours.named_parameters():
        nn.init.normal_(p, 0.0, 0.3 if p.ndim == 2 else 0.1)
        if name.endswith("norm.weight"):
            p.data += 1.0
    for moe in ours.moe_layers():
        moe.gate.e_score_correction_bias.data[:] = np.random.default_rng(1).normal(0, 0.2, 6)
    c = ours_cfg
    hf_cfg = transformers.DeepseekV3Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        moe_intermediate_size=c.moe_intermediate_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_attention_heads,
        n_shared_experts=c.n_shared_experts, n_routed_experts=c.n_routed_experts, routed_scaling_factor=c.routed_scaling_factor,
        kv_lora_rank=c.kv_lora_rank, q_lora_rank=c.q_lora_rank, qk_rope_head_dim=c.qk_rope_head_dim, v_head_dim=c.v_head_dim,
        qk_nope_head_dim=c.qk_nope_head_dim, n_group=c.n_group, topk_group=c.topk_group, num_experts_per_tok=c.num_experts_per_tok,
        first_k_dense_replace=c.first_k_dense_replace, norm_topk_prob=True, max_position_embeddings=c.max_seq_len,
        rms_norm_eps=c.rms_norm_eps, rope_interleave=True, tie_word_embeddings=False,
    )
    hf_cfg._experts_implementation = "eager"  # the per-expert loop (the grouped-GEMM kernel takes no float64)
    hf = transformers.DeepseekV3ForCausalLM(hf_cfg).double().eval()
    sd = {k: v for k, v in ours.state_dict().items()}
    out = {}
    for k, v in sd.items():
        t = torch.tensor(np.asarray(v.data if hasattr(v, "data") else v))
        # SwiGLU names: ours w1 (gate), w3 (up), w2 (down), as LLaMA's
        k2 = k.replace(".w1.", ".gate_proj.").replace(".w3.", ".up_proj.").replace(".w2.", ".down_proj.")
        out[k2] = t
    L, E, I = c.num_hidden_layers, c.n_routed_experts, c.moe_intermediate_size
    for i in range(c.first_k_dense_replace, L):  # HF keeps the routed experts as two 3-D tensors
        pre = f"model.layers.{i}.mlp.experts."
        gate_up = [torch.cat([out.pop(f"{pre}{e}.gate_proj.weight"), out.pop(f"{pre}{e}.up_proj.weight")], 0) for e in range(E)]
        out[pre + "gate_up_proj"] = torch.stack(gate_up)  # (E, 2I, C)
        out[pre + "down_proj"] = torch.stack([out.pop(f"{pre}{e}.down_proj.weight") for e in range(E)])  # (E, C, I)
        assert out[pre + "gate_up_proj"].shape == (E, 2 * I, c.hidden_size)
    missing, unexpected = hf.load_state_dict(out, strict=False)
    assert not unexpected, unexpected
    assert all("rotary" in m or "inv_freq" in m for m in missing), missing
    return ours, hf


@pytest.mark.parametrize("n_group, topk_group", [(1, 1), (3, 2)])
def test_logits_equal_transformers_deepseek_v3(n_group, topk_group):
    """Equal to 1e-5, not 1e-12, even in float64: HF computes the router's scores in float32
    (``F.linear(h.float(), weight.float())``, on purpose, for routing stability) and its RoPE
    angles in float32; our float64 model keeps float64 scores."""
    ours, hf = models(q_lora_rank=8, n_group=n_group, topk_group=topk_group)
    ids = np.random.default_rng(0).integers(0, 41, (2, 9))
    with mi.no_grad(), ours.mode(training=False):
        got = ours(ids).logits.data
        absorbed = ours(ids, absorb=True).logits.data
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(absorbed, ref, rtol=1e-5, atol=1e-5)
    assert np.abs(ref).max() > 1.0  # not a trivially small output
    if n_group > 1:  # the group limit changed some token's experts, so the test tells the two routings apart
        for moe in ours.moe_layers():
            moe.gate.n_group = 1
        with mi.no_grad(), ours.mode(training=False):
            assert np.abs(ours(ids).logits.data - got).max() > 1e-3

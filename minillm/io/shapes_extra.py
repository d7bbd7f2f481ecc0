"""``STATE_SHAPES`` for the families that have no Hugging Face mapping file here (GLM, DeepSeek):
``{state_dict name: shape}`` from the config alone, so ``load_model`` compares ``config.json``
with the weights' header before it allocates the model (issue 25 §5). Each function is tested
equal to the real model's ``state_dict`` in ``tests/test_io_state_shapes.py``."""
from __future__ import annotations

from ..models.deepseek import DeepseekConfig, DeepseekForCausalLM
from ..models.glm import GLM, GLMConfig
from . import checkpoint
from .guards import bounded_shapes

__all__ = ["glm_state_shapes", "deepseek_state_shapes"]


def _glm_entries(c: GLMConfig):
    H, I = c.hidden_size, c.hidden_dim
    yield "word_embeddings.weight", (c.vocab_size, H)  # the output layer is tied to it: listed once
    if c.position_encoding == "learned":  # 2-D rotary positions have no parameters
        yield "transformer.position_embeddings.embedding.weight", (c.max_seq_len, H)
        yield "transformer.block_position_embeddings.embedding.weight", (c.max_seq_len, H)
    for i in range(c.num_layers):
        p = f"transformer.layers.{i}."
        for name, shape in (("input_layernorm", (H,)), ("attention.wq", (H, H)), ("attention.wk", (H, H)),
                            ("attention.wv", (H, H)), ("attention.wo", (H, H)), ("post_attention_layernorm", (H,)),
                            ("mlp.w1", (I, H)), ("mlp.w2", (H, I))):
            yield p + name + ".weight", shape
            yield p + name + ".bias", (shape[0],)
    yield "transformer.final_layernorm.weight", (H,)
    yield "transformer.final_layernorm.bias", (H,)


def glm_state_shapes(config: GLMConfig, max_tensors: int | None = None) -> dict:
    return bounded_shapes(_glm_entries(config), max_tensors)


def _deepseek_entries(c: DeepseekConfig):
    C, heads = c.hidden_size, c.num_attention_heads
    yield "model.embed_tokens.weight", (c.vocab_size, C)

    def swiglu(p, width):
        yield from ((p + "w1.weight", (width, C)), (p + "w2.weight", (C, width)), (p + "w3.weight", (width, C)))

    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (C,)
        a = p + "self_attn."
        q_out = heads * c.qk_head_dim
        if c.q_lora_rank:  # queries through a low-rank bottleneck (V2/V3)
            yield from ((a + "q_a_proj.weight", (c.q_lora_rank, C)), (a + "q_a_layernorm.weight", (c.q_lora_rank,)),
                        (a + "q_b_proj.weight", (q_out, c.q_lora_rank)))
        else:
            yield a + "q_proj.weight", (q_out, C)
        yield from ((a + "kv_a_proj_with_mqa.weight", (c.kv_lora_rank + c.qk_rope_head_dim, C)),
                    (a + "kv_a_layernorm.weight", (c.kv_lora_rank,)),
                    (a + "kv_b_proj.weight", (heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank)),
                    (a + "o_proj.weight", (C, heads * c.v_head_dim)))
        yield p + "post_attention_layernorm.weight", (C,)
        if c.is_moe_layer(i):
            for e in range(c.n_routed_experts):
                yield from swiglu(f"{p}mlp.experts.{e}.", c.moe_intermediate_size)
            yield from ((p + "mlp.gate.weight", (c.n_routed_experts, C)),
                        (p + "mlp.gate.e_score_correction_bias", (c.n_routed_experts,)))
            if c.n_shared_experts:
                yield from swiglu(p + "mlp.shared_experts.", c.moe_intermediate_size * c.n_shared_experts)
        else:
            yield from swiglu(p + "mlp.", c.intermediate_size)
    yield "model.norm.weight", (C,)
    if not c.tie_word_embeddings:
        yield "lm_head.weight", (c.vocab_size, C)


def deepseek_state_shapes(config: DeepseekConfig, max_tensors: int | None = None) -> dict:
    return bounded_shapes(_deepseek_entries(config), max_tensors)


checkpoint.STATE_SHAPES[GLM] = glm_state_shapes
checkpoint.STATE_SHAPES[DeepseekForCausalLM] = deepseek_state_shapes

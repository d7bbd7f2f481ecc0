"""Issue 25 §5 for every model family: a config.json that asks for a huge model is compared with
the weights' header *before* the model is allocated, in ``load_model`` and in every Hugging Face
importer. The shape functions that make this possible are checked against the real models."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minillm as mi
from minillm.io import (export_hf, export_hf_bert, export_hf_gpt2, export_hf_t5, import_hf, import_hf_bert,
                        import_hf_gpt2, import_hf_t5, load_model, save_model)
from minillm.io.checkpoint import STATE_SHAPES
from minillm.io.hf_bert import HF_ARCHITECTURES
from minillm.models import MODEL_TYPES
from minillm.models.bert import BertConfig, BertForMaskedLM
from minillm.models.gpt import GPT, GPTConfig
from minillm.models.llama import ModelConfig, Transformer
from minillm.models.t5 import T5Config, T5ForConditionalGeneration


def _unique_shapes(model) -> dict:
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        if id(t.data) not in seen:
            seen.add(id(t.data))
            out[name] = tuple(t.shape)
    return out


def test_every_saveable_family_has_a_shape_function():
    for model_type, (_, cls) in MODEL_TYPES.items():
        assert cls in STATE_SHAPES, f"{model_type}: load_model would allocate before checking the header"
    for cls in HF_ARCHITECTURES.values():
        assert cls in STATE_SHAPES


@settings(max_examples=12, deadline=None)
@given(heads=st.integers(1, 3), head_dim=st.sampled_from([2, 4]), layers=st.integers(1, 3), vocab=st.integers(5, 40),
       positions=st.integers(1, 20), inner=st.one_of(st.none(), st.integers(1, 12)))
def test_gpt_shapes_equal_the_model(heads, head_dim, layers, vocab, positions, inner):
    cfg = GPTConfig(vocab_size=vocab, max_seq_len=positions, n_embd=heads * head_dim, n_layer=layers, n_head=heads,
                    n_inner=inner)
    assert STATE_SHAPES[GPT](cfg) == _unique_shapes(GPT(cfg))


@settings(max_examples=12, deadline=None)
@given(heads=st.integers(1, 3), d_kv=st.integers(1, 4), d_model=st.integers(2, 9), enc=st.integers(1, 3),
       dec=st.one_of(st.none(), st.integers(1, 3)), gated=st.booleans(), tied=st.booleans(), buckets=st.integers(4, 16))
def test_t5_shapes_equal_the_model(heads, d_kv, d_model, enc, dec, gated, tied, buckets):
    cfg = T5Config(vocab_size=30, d_model=d_model, d_kv=d_kv, d_ff=7, num_layers=enc, num_decoder_layers=dec,
                   num_heads=heads, relative_attention_num_buckets=buckets,
                   feed_forward_proj="gated-gelu" if gated else "relu", tie_word_embeddings=tied)
    assert STATE_SHAPES[T5ForConditionalGeneration](cfg) == _unique_shapes(T5ForConditionalGeneration(cfg))


@settings(max_examples=16, deadline=None)
@given(arch=st.sampled_from(sorted(HF_ARCHITECTURES)), heads=st.integers(1, 3), layers=st.integers(1, 3),
       inner=st.one_of(st.none(), st.integers(1, 12)), positions=st.integers(4, 20), types=st.integers(1, 3),
       labels=st.integers(1, 5), share=st.booleans(), embedding=st.integers(1, 6))
def test_bert_family_shapes_equal_the_model(arch, heads, layers, inner, positions, types, labels, share, embedding):
    cls = HF_ARCHITECTURES[arch]
    kw = dict(vocab_size=25, hidden_size=4 * heads, num_hidden_layers=layers, num_attention_heads=heads,
              intermediate_size=inner, max_position_embeddings=positions, type_vocab_size=types, num_labels=labels)
    if "Albert" in arch:
        kw.update(share_layers=share, embedding_size=embedding)
    cfg = cls.config_class(**kw)
    assert STATE_SHAPES[cls](cfg) == _unique_shapes(cls(cfg))


@settings(max_examples=10, deadline=None)
@given(heads=st.integers(1, 3), layers=st.integers(1, 3), inner=st.one_of(st.none(), st.integers(1, 12)),
       positions=st.integers(2, 20), encoding=st.sampled_from(["rotary", "learned"]))
def test_glm_shapes_equal_the_model(heads, layers, inner, positions, encoding):
    from minillm.models.glm import GLM, GLMConfig

    cfg = GLMConfig(vocab_size=30, max_seq_len=positions, hidden_size=4 * heads, num_layers=layers,
                    num_attention_heads=heads, intermediate_size=inner, position_encoding=encoding)
    assert STATE_SHAPES[GLM](cfg) == _unique_shapes(GLM(cfg))


@settings(max_examples=10, deadline=None)
@given(layers=st.integers(1, 3), experts=st.integers(0, 3), shared=st.integers(0, 2), dense=st.integers(0, 2),
       q_rank=st.one_of(st.none(), st.integers(1, 6)), tied=st.booleans(), topk=st.sampled_from(["greedy", "noaux_tc"]))
def test_deepseek_shapes_equal_the_model(layers, experts, shared, dense, q_rank, tied, topk):
    from minillm.models.deepseek import DeepseekConfig, DeepseekForCausalLM

    try:
        cfg = DeepseekConfig(vocab_size=30, max_seq_len=16, hidden_size=8, num_hidden_layers=layers, num_attention_heads=2,
                             intermediate_size=12, n_routed_experts=experts, n_shared_experts=shared,
                             num_experts_per_tok=min(2, max(experts, 1)), moe_intermediate_size=4,
                             first_k_dense_replace=dense, q_lora_rank=q_rank, kv_lora_rank=5, qk_nope_head_dim=3,
                             qk_rope_head_dim=4, v_head_dim=7, tie_word_embeddings=tied, topk_method=topk)
    except ValueError:  # a combination the config refuses (e.g. top-k over no experts)
        return
    assert STATE_SHAPES[DeepseekForCausalLM](cfg) == _unique_shapes(DeepseekForCausalLM(cfg))


def _families():
    """(name, model, writer, reader, config field -> a hostile value) for our files and HF's."""
    mi.manual_seed(0)
    llama = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=40, max_seq_len=16, hidden_dim=32))
    gpt = GPT(GPTConfig(vocab_size=40, max_seq_len=16, n_embd=16, n_layer=1, n_head=2))
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    bert = BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=16))
    huge = 10**9
    return [
        ("gpt", gpt, save_model, load_model, {"vocab_size": huge, "max_seq_len": 10**12, "n_layer": 10**12}),
        ("t5", t5, save_model, load_model, {"vocab_size": huge, "d_ff": huge, "num_layers": 10**12}),
        ("bert", bert, None, None, None),  # BertForMaskedLM has no model_type of its own: the HF row covers it
        ("hf-llama", llama, export_hf, import_hf, {"vocab_size": huge, "num_hidden_layers": 10**12}),
        ("hf-gpt2", gpt, export_hf_gpt2, import_hf_gpt2, {"vocab_size": huge, "n_positions": 10**12, "n_layer": 10**12}),
        ("hf-t5", t5, export_hf_t5, import_hf_t5, {"vocab_size": huge, "d_ff": huge, "num_layers": 10**12}),
        ("hf-bert", bert, export_hf_bert, import_hf_bert,
         {"vocab_size": huge, "max_position_embeddings": 10**12, "num_hidden_layers": 10**12, "intermediate_size": huge}),
    ]


HOSTILE = {  # family -> the config.json fields set to a huge value, one per case
    "gpt": ("vocab_size", "max_seq_len", "n_layer"), "t5": ("vocab_size", "d_ff", "num_layers"),
    "hf-llama": ("vocab_size", "num_hidden_layers"), "hf-gpt2": ("vocab_size", "n_positions", "n_layer"),
    "hf-t5": ("vocab_size", "d_ff", "num_layers"),
    "hf-bert": ("vocab_size", "max_position_embeddings", "num_hidden_layers", "intermediate_size"),
}
CASES = [(name, field) for name, fields in HOSTILE.items() for field in fields]


@pytest.mark.parametrize("name,field", CASES)
def test_a_huge_config_is_refused_before_the_model_is_built(tmp_path, monkeypatch, name, field):
    _, model, write, read, fields = next(f for f in _families() if f[0] == name)
    write(model, tmp_path)
    assert read(tmp_path) is not None  # the untouched directory loads
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = fields[field]
    (tmp_path / "config.json").write_text(json.dumps(cfg))

    def built(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} was allocated before the header was checked")

    monkeypatch.setattr(type(model), "__init__", built)
    with pytest.raises(ValueError, match="do not match config.json") as e:
        read(tmp_path)
    assert "model.safetensors" in str(e.value)  # the message names the file


def test_a_renamed_tensor_is_named_before_anything_is_read(tmp_path):
    from minillm.io.safetensors import load_safetensors, save_safetensors

    _, gpt, *_ = next(f for f in _families() if f[0] == "hf-gpt2")
    export_hf_gpt2(gpt, tmp_path)
    tensors = load_safetensors(str(tmp_path / "model.safetensors"))
    tensors["transformer.h.0.attn.c_attn.weigth"] = tensors.pop("transformer.h.0.attn.c_attn.weight")
    save_safetensors(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing tensors \['transformer.h.0.attn.c_attn.weight'\].*unexpected"):
        import_hf_gpt2(tmp_path)

"""Happy LLM 6.3.1 beyond LoRA: Houlsby adapters, prefix tuning, prompt tuning, P-tuning.

For each method: only its parameters train, the trainable count matches its formula, the
adapter files round-trip (safetensors + JSON), the model generates, and the method's own
defining property holds (zero-init adapters leave the model unchanged; prefixes occupy the
first P cache positions with the real tokens at RoPE positions P..; prompt tuning starts from
a text's embeddings; the reparameterisation merges away without changing the outputs).
"""
import json
import os

import numpy as np
import pytest

import minillm as mi
from minillm import nn
from minillm.generation import generate
from minillm.io.safetensors import save_safetensors
from minillm.models.llama import ModelConfig, Transformer
from minillm.nn.adapter import AdapterLinear
from minillm.peft import (
    BottleneckConfig, PeftModel, PeftModelForCausalLM, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig,
    bottleneck_param_formula, get_peft_model, prompt_param_formula,
)
from minillm.peft.prompt import _BiLSTM
from minillm.testing import gradcheck
from minillm.tokenizers import CharTokenizer

P = 3
CFG = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=40, max_seq_len=48)


def _base(dtype=np.float32, seed=0, **kw):
    mi.manual_seed(seed)
    m = Transformer(ModelConfig(**{**CFG, **kw}))
    return m.double() if dtype == np.float64 else m


def _ids(B=2, T=7, seed=1):
    return np.random.default_rng(seed).integers(0, CFG["vocab_size"], (B, T))


PROMPT_CONFIGS = {
    "prefix": lambda: PrefixTuningConfig(num_virtual_tokens=P),
    "prefix_mlp": lambda: PrefixTuningConfig(num_virtual_tokens=P, prefix_projection=True, encoder_hidden_size=8),
    "prompt": lambda: PromptTuningConfig(num_virtual_tokens=P),
    "ptuning_mlp": lambda: PromptEncoderConfig(num_virtual_tokens=P, encoder_hidden_size=8),
    "ptuning_lstm": lambda: PromptEncoderConfig(num_virtual_tokens=P, encoder_hidden_size=6, encoder_num_layers=2,
                                                encoder_reparameterization_type="LSTM"),
}
ALL = {**PROMPT_CONFIGS, "adapter": lambda: BottleneckConfig(bottleneck_dim=4)}


def _randomize(model):
    """Non-zero adapter / virtual-token weights (zero-init would hide mistakes)."""
    rng = np.random.default_rng(5)
    for n, p in model.named_parameters():
        if p.requires_grad:
            p.data[...] = rng.normal(0, 0.3, p.shape).astype(p.dtype)


# ====================================================================== every method
@pytest.mark.parametrize("name", list(ALL))
def test_only_the_method_parameters_train_and_count_matches_formula(name):
    model = get_peft_model(_base(), ALL[name]())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(("adapter_" in n) if name == "adapter" else n.startswith("prompt_encoder.") for n in trainable)
    assert model.num_parameters(trainable_only=True) == model.expected_trainable_parameters()
    x = _ids()
    model(mi.tensor(x), targets=mi.tensor(x)).loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n


def test_formulas_by_hand():
    d, L, kv = CFG["dim"], CFG["n_layers"], 2 * (32 // 4)
    assert prompt_param_formula(PromptTuningConfig(num_virtual_tokens=5), d, L, kv) == 5 * 32
    assert prompt_param_formula(PrefixTuningConfig(num_virtual_tokens=5), d, L, kv) == 5 * 2 * 2 * 16
    assert prompt_param_formula(PrefixTuningConfig(num_virtual_tokens=5, prefix_projection=True, encoder_hidden_size=8), d, L, kv) \
        == 5 * 32 + (32 * 8 + 8) + (8 * 64 + 64)
    assert prompt_param_formula(PromptEncoderConfig(num_virtual_tokens=5, encoder_hidden_size=8), d, L, kv) \
        == 5 * 32 + (32 * 8 + 8) + (8 * 8 + 8) + (8 * 32 + 32)
    lstm = 2 * (4 * 8 * (32 + 8) + 8 * 8)  # one bidirectional layer: two directions, two biases each
    assert prompt_param_formula(PromptEncoderConfig(num_virtual_tokens=5, encoder_hidden_size=8, encoder_num_layers=1,
                                                    encoder_reparameterization_type="LSTM"), d, L, kv) \
        == 5 * 32 + lstm + (16 * 16 + 16) + (16 * 32 + 32)
    assert bottleneck_param_formula([32, 32], [4, 4]) == 2 * (2 * 32 * 4 + 4 + 32)


@pytest.mark.parametrize("name", list(ALL))
def test_save_and_load_give_the_same_logits(name, tmp_path):
    model = get_peft_model(_base(), ALL[name]())
    _randomize(model)
    model.eval()
    x = mi.tensor(_ids())
    with mi.no_grad():
        want = model(x).logits.data
    model.save_pretrained(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", "adapter_model.safetensors"]
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    assert meta["peft_type"] == ALL[name]().peft_type if name != "adapter" else meta["peft_type"] == "BOTTLENECK"
    loaded = PeftModel.from_pretrained(_base(), str(tmp_path))
    with mi.no_grad():
        np.testing.assert_allclose(loaded(x).logits.data, want, rtol=1e-5, atol=1e-6)
    assert loaded.num_parameters(trainable_only=True) == 0  # is_trainable=False freezes the adapter too
    again = PeftModel.from_pretrained(_base(), str(tmp_path), is_trainable=True)
    assert again.num_parameters(trainable_only=True) > 0


@pytest.mark.parametrize("name", list(ALL))
def test_generate_with_cache_equals_without(name):
    model = get_peft_model(_base(), ALL[name]())
    _randomize(model)
    model.eval()
    prompts = [[1, 2, 3, 4, 5], [7, 8]]  # left-padded together
    cached = generate(model, prompts, max_new_tokens=6, do_sample=False)
    full = generate(model, prompts, max_new_tokens=6, do_sample=False, use_cache=False)
    assert cached == full and all(len(c) == 6 for c in cached)
    # a batched, left-padded row decodes like the same prompt alone
    assert generate(model, prompts[1], max_new_tokens=6, do_sample=False) == cached[1]


# ====================================================================== adapters (Houlsby)
def test_adapter_starts_as_the_base_model_and_unloads():
    base = _base()
    x = mi.tensor(_ids())
    want = base(x).logits.data.copy()
    names = list(base.state_dict())
    model = get_peft_model(base, BottleneckConfig(reduction_factor=8))
    np.testing.assert_array_equal(model(x).logits.data, want)  # W_up = 0: nothing added
    layers = dict(model.tuner_layers())
    assert sorted(layers) == [f"layers.{i}.{p}" for i in range(2) for p in ("attention.wo", "feed_forward.w2")]
    assert all(m.bottleneck_dim == 32 // 8 for m in layers.values())
    _randomize(model)
    assert np.abs(model(x).logits.data - want).max() > 1e-3
    with model.disable_adapter():
        np.testing.assert_array_equal(model(x).logits.data, want)
    with pytest.raises(RuntimeError, match="cannot be folded"):
        model.merge_and_unload()
    plain = model.unload()
    assert type(plain.layers[0].attention.wo) is nn.Linear and list(plain.state_dict()) == names
    assert all(p.requires_grad for p in plain.parameters())


def test_adapter_layer_formula_and_gradcheck_float64():
    base = nn.Linear(5, 6, dtype=np.float64)
    layer = AdapterLinear(base, bottleneck_dim=3, non_linearity="tanh", init_weights=False)
    x = mi.tensor(np.random.default_rng(0).standard_normal((2, 4, 5)), dtype=mi.float64, requires_grad=True)
    h = x.data @ base.weight.data.T + base.bias.data
    d, u = layer.adapter_down, layer.adapter_up
    expected = h + np.tanh(h @ d.weight.data.T + d.bias.data) @ u.weight.data.T + u.bias.data
    np.testing.assert_allclose(layer(x).data, expected, rtol=1e-12)
    assert gradcheck(lambda x, a, b: layer(x), [x, d.weight, u.weight], name="AdapterLinear")
    assert base.weight.grad is None and base.bias.grad is None


def test_adapter_bad_input():
    with pytest.raises(ValueError, match="bottleneck_dim"):
        BottleneckConfig(bottleneck_dim=0)
    with pytest.raises(ValueError, match="non_linearity"):
        BottleneckConfig(non_linearity="softmax")
    with pytest.raises(TypeError, match="only nn.Linear"):
        get_peft_model(_base(), BottleneckConfig(target_modules=["attention"]))
    with pytest.raises(ValueError, match="matched no module"):
        get_peft_model(_base(), BottleneckConfig(target_modules=["o_proj"]))


# ====================================================================== prefix tuning
def _prefilled_base_cache(model, B):
    """The base model's caches holding the prefix keys/values, written by hand."""
    base = model.base_model
    a = base.args
    table = model.get_prompt().data.reshape(P, a.n_layers * 2, a.n_kv_heads, a.head_dim)  # (P, 2L, Hkv, D)
    cache = base.new_kv_cache(B)
    for i, c in enumerate(cache):
        k = np.broadcast_to(table[:, 2 * i].transpose(1, 0, 2), (B, a.n_kv_heads, P, a.head_dim))
        v = np.broadcast_to(table[:, 2 * i + 1].transpose(1, 0, 2), (B, a.n_kv_heads, P, a.head_dim))
        c.update(mi.tensor(np.ascontiguousarray(k)), mi.tensor(np.ascontiguousarray(v)))
    return cache


@pytest.mark.parametrize("flash", [True, False])
def test_prefix_occupies_the_first_cache_positions_and_real_tokens_start_at_P(flash):
    model = get_peft_model(_base(flash_attn=flash), PrefixTuningConfig(num_virtual_tokens=P))
    _randomize(model)
    x = _ids()
    B, T = x.shape
    with mi.no_grad():
        got = model(mi.tensor(x)).logits.data
        assert model.new_kv_cache(B)[0].length == P
        base = model.base_model
        # the same as the plain model reading a cache that holds the prefix, at positions P..P+T-1
        want = base(mi.tensor(x), position_ids=np.broadcast_to(np.arange(P, P + T), (B, T)),
                    kv_cache=_prefilled_base_cache(model, B)).logits.data
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        # and not the same with positions 0..T-1: RoPE positions really are shifted by P
        shifted = base(mi.tensor(x), position_ids=np.broadcast_to(np.arange(T), (B, T)),
                       kv_cache=_prefilled_base_cache(model, B)).logits.data
        assert np.abs(shifted - got).max() > 1e-3


def test_prefix_gradcheck_float64():
    model = get_peft_model(_base(np.float64), PrefixTuningConfig(num_virtual_tokens=2, prefix_projection=True, encoder_hidden_size=3))
    model = model  # float64 all through
    model.base_model.args  # noqa: B018
    x = mi.tensor(_ids(1, 4))
    enc = model.prompt_encoder

    def f(e, w0, w2):
        return model(x).logits

    assert gradcheck(f, [enc.embedding.weight, enc.transform_0.weight, enc.transform_2.weight], name="prefix tuning")


@pytest.mark.parametrize("name", ["prefix_mlp", "ptuning_mlp", "ptuning_lstm"])
def test_reparameterisation_merges_away(name):
    model = get_peft_model(_base(), PROMPT_CONFIGS[name]())
    _randomize(model)
    x = mi.tensor(_ids())
    model.eval()
    with mi.no_grad():
        want = model(x).logits.data.copy()
        model.merge_prompt_encoder()
        got = model(x).logits.data
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert [n for n, _ in model.prompt_encoder.named_parameters()] == ["embedding.weight"]  # a plain table, no encoder
    assert model.num_parameters(trainable_only=True) == model.expected_trainable_parameters()


def test_padding_mask_only_hides_padding():
    """Right padding does not change the real positions (the virtual tokens are always visible)."""
    for make in (PROMPT_CONFIGS["prefix"], PROMPT_CONFIGS["prompt"]):
        model = get_peft_model(_base(), make())
        _randomize(model)
        x = _ids(1, 5)
        padded = np.concatenate([x, np.zeros((1, 3), dtype=x.dtype)], axis=1)
        mask = np.array([[1] * 5 + [0] * 3])
        with mi.no_grad():
            np.testing.assert_allclose(model(mi.tensor(padded), attention_mask=mask).logits.data[:, :5],
                                       model(mi.tensor(x)).logits.data, rtol=1e-5, atol=1e-6)


# ====================================================================== prompt tuning
def test_prompt_tuning_init_from_text(tmp_path):
    tok = CharTokenizer.train(["abcdefgh xyz"])
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    base = _base(vocab_size=max(CFG["vocab_size"], tok.vocab_size))
    cfg = PromptTuningConfig(num_virtual_tokens=5, prompt_tuning_init="TEXT", prompt_tuning_init_text="abc",
                             tokenizer_name_or_path=path)
    model = get_peft_model(base, cfg)
    ids = tok.encode("abc")
    expected_ids = (ids * 3)[:5]  # repeated to fill P (peft's rule)
    np.testing.assert_array_equal(model.prompt_encoder.embedding.weight.data, base.tok_embeddings.weight.data[expected_ids])
    assert model.prompt_encoder.embedding.weight is not base.tok_embeddings.weight  # a copy that trains on its own
    # prompt tuning = the frozen model reading [virtual embeddings; token embeddings]
    x = _ids(1, 4)
    with mi.no_grad():
        h = mi.cat([model.prompt_encoder.embedding.weight.unsqueeze(0), base.tok_embeddings(mi.tensor(x))], dim=1)
        np.testing.assert_allclose(model(mi.tensor(x)).logits.data, base(inputs_embeds=h).logits.data[:, 5:], rtol=1e-6)


def test_bidirectional_lstm_matches_torch():
    torch = pytest.importorskip("torch")
    mi.manual_seed(0)
    ours = _BiLSTM(5, 4, num_layers=2, dtype=np.float64)
    ref = torch.nn.LSTM(5, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    with torch.no_grad():
        for k in range(2):
            for direction, suffix in (("forward", ""), ("backward", "_reverse")):
                lstm = getattr(ours, f"{direction}_{k}")
                for pname in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{pname}_l{k}{suffix}").copy_(torch.from_numpy(getattr(lstm, f"{pname}_l0").data))
    x = np.random.default_rng(0).standard_normal((2, 6, 5))
    np.testing.assert_allclose(ours(mi.tensor(x)).data, ref(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-10, atol=1e-12)
    assert sum(p.numel() for p in ref.parameters()) == ours.num_parameters()


# ====================================================================== bad input
def test_prompt_config_bad_input(tmp_path):
    with pytest.raises(ValueError, match="num_virtual_tokens"):
        PrefixTuningConfig(num_virtual_tokens=0)
    with pytest.raises(ValueError, match="encoder_reparameterization_type"):
        PromptEncoderConfig(encoder_reparameterization_type="GRU")
    with pytest.raises(ValueError, match="prompt_tuning_init_text"):
        PromptTuningConfig(prompt_tuning_init="TEXT")
    with pytest.raises(ValueError, match="token_dim=64 does not match"):
        get_peft_model(_base(), PromptTuningConfig(num_virtual_tokens=2, token_dim=64))
    with pytest.raises(ValueError, match="no room"):
        get_peft_model(_base(), PromptTuningConfig(num_virtual_tokens=48))
    with pytest.raises(TypeError, match="expected a LoraConfig"):
        get_peft_model(_base(), {"r": 8})
    model = get_peft_model(_base(), PromptTuningConfig(num_virtual_tokens=2))
    with pytest.raises(ValueError, match="make it with this model's new_kv_cache"):
        with mi.no_grad():
            model(mi.tensor(_ids()), kv_cache=model.base_model.new_kv_cache(2))
    with pytest.raises(ValueError, match="longer than max_seq_len"):
        model(mi.tensor(_ids(1, 47)))  # 47 real + 2 virtual > 48
    model.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="token_dim=32 does not match the model"):
        PeftModel.from_pretrained(_base(dim=64), str(tmp_path))
    save_safetensors({"prompt_embeddings": np.zeros((2, 16), np.float32)}, str(tmp_path / "adapter_model.safetensors"))
    base = _base()
    with pytest.raises(ValueError, match=r"prompt_embeddings is float32 \(2, 16\), this model needs float \(2, 32\)"):
        PeftModel.from_pretrained(base, str(tmp_path))
    assert all(p.requires_grad for p in base.parameters())  # a refused file leaves the base as it was


def test_transformer_inputs_embeds():
    """Prompt tuning feeds vectors instead of ids (Hugging Face's ``inputs_embeds``)."""
    model = _base()
    x = _ids()
    out = model(mi.tensor(x), targets=mi.tensor(x))
    emb = model(inputs_embeds=model.tok_embeddings(mi.tensor(x)), targets=mi.tensor(x))
    np.testing.assert_array_equal(emb.logits.data, out.logits.data)
    assert float(emb.loss.data) == float(out.loss.data)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(mi.tensor(x), inputs_embeds=model.tok_embeddings(mi.tensor(x)))
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \(batch, seq_len >= 1, dim=32\)"):
        model(inputs_embeds=mi.zeros(2, 3, 16))
    with pytest.raises(TypeError, match="inputs_embeds must be a Tensor"):
        model(inputs_embeds=np.zeros((2, 3, 32), np.float32))


def test_prompt_tuning_is_the_plain_model_reading_the_virtual_tokens_first():
    """Virtual tokens whose table holds the embeddings of real tokens t: logits and loss (with an
    attention mask and -100 targets) equal the plain model reading [t, x] with t's targets ignored;
    so the virtual tokens reach every attention layer, at positions 0..P-1, and only the real
    targets count in the loss."""
    base = _base()
    model = get_peft_model(base, PromptTuningConfig(num_virtual_tokens=P))
    t = np.array([5, 11, 7])
    model.prompt_encoder.embedding.weight.data[...] = base.tok_embeddings.weight.data[t]
    x = _ids(2, 6)
    y = np.where(np.arange(6) < 2, -100, _ids(2, 6, seed=3))  # the prompt part of a conversation is -100
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2])  # right padding in the second row
    y[1, 4:] = -100
    full_x = np.concatenate([np.broadcast_to(t, (2, P)), x], axis=1)
    full_y = np.concatenate([np.full((2, P), -100), y], axis=1)
    full_mask = np.concatenate([np.ones((2, P), dtype=mask.dtype), mask], axis=1)
    with mi.no_grad():
        got = model(mi.tensor(x), targets=mi.tensor(y), attention_mask=mask)
        want = base(mi.tensor(full_x), targets=mi.tensor(full_y), attention_mask=full_mask)
    np.testing.assert_allclose(got.logits.data, want.logits.data[:, P:], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(got.loss.data), float(want.loss.data), rtol=1e-6)

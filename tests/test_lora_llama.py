"""LoRA on the book's LLaMA (Happy LLM 6.3 on top of 5.1): a tiny Transformer (dim 32, 2 layers, vocab 64)."""
import json

import numpy as np
import pytest

import minillm as mi
from minillm.models import ModelConfig, Transformer
from minillm.peft import (
    ADAPTER_CONFIG_NAME, LLAMA_ALL_LINEAR_TARGETS, LLAMA_ATTENTION_TARGETS, LoraConfig, LoRALinear, PeftModel,
    book_lora_param_count, get_peft_model, lora_param_formula,
)
from minillm.optim import AdamW, param_groups_for_weight_decay
from minillm.testing import gradcheck

V = 64


def _config(**kw):
    return ModelConfig(**{**dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=V, max_seq_len=16, hidden_dim=48), **kw})


def _fresh(state, **kw):
    model = Transformer(_config(**kw))
    model.load_state_dict(state)
    return model


def _batch(seed=0, B=3, T=8):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=(B, T + 1))
    return mi.tensor(ids[:, :-1]), mi.tensor(ids[:, 1:])


def _train(peft, steps=4, lr=1e-2):
    opt = AdamW(param_groups_for_weight_decay(peft, 0.1), lr=lr)
    for step in range(steps):
        x, y = _batch(seed=step)
        out = peft(x, targets=y)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    return opt


def test_wrapped_llama_equals_base_at_init_exactly():
    model = Transformer(_config())
    model.eval()
    x, _ = _batch()
    before = model(x).logits.data.copy()
    peft = get_peft_model(model, LoraConfig(target_modules=LLAMA_ALL_LINEAR_TARGETS))
    peft.eval()
    np.testing.assert_array_equal(peft(x).logits.data, before)
    assert len(list(peft.lora_layers())) == 2 * 7


def test_trainable_count_is_the_books_formula(capsys):
    d, r = 32, 8
    model = Transformer(_config(n_kv_heads=4))  # plain multi-head attention: wq, wk, wv, wo are all d×d
    peft = get_peft_model(model, LoraConfig(r=r, target_modules=["wq", "wv"]))
    trainable, total = peft.get_nb_trainable_parameters()
    # 6.3.3: Θ = 2 × L_LoRA × d_model × r with L_LoRA = 2 layers × (W_q, W_v)
    assert trainable == book_lora_param_count(4, d, r) == 2 * 4 * d * r == 2048
    assert total == Transformer(_config(n_kv_heads=4)).num_parameters() + trainable
    peft.print_trainable_parameters()
    assert capsys.readouterr().out.startswith(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: ")

    # with GQA (wk, wv: 32 -> 16) and the MLP (32 <-> 48) the general r·(d_in + d_out) applies
    peft = get_peft_model(Transformer(_config()), LoraConfig(r=r, target_modules=LLAMA_ALL_LINEAR_TARGETS))
    per_layer = [(32, 32), (16, 32), (16, 32), (32, 32), (48, 32), (32, 48), (48, 32)]  # (d_out, d_in)
    assert peft.get_nb_trainable_parameters()[0] == lora_param_formula(per_layer * 2, r) == peft.expected_lora_parameters()


def test_tied_output_head_is_refused_untied_is_fine():
    with pytest.raises(ValueError, match=r"output.weight is shared by \['tok_embeddings.weight', 'output.weight'\]"):
        get_peft_model(Transformer(_config()), LoraConfig(target_modules=["output"]))
    peft = get_peft_model(Transformer(_config(tie_word_embeddings=False)), LoraConfig(target_modules=["output"]))
    assert isinstance(peft.output, LoRALinear)


def test_no_match_names_the_llama_layers():
    with pytest.raises(ValueError, match=r"\['q_proj', 'v_proj'\] matched no module of Transformer.*'w1', 'w2', 'w3', 'wk', 'wo', 'wq', 'wv'"):
        get_peft_model(Transformer(_config()), LoraConfig(target_modules=["q_proj", "v_proj"]))


def test_gradcheck_through_the_model_float64():
    """d loss / d A and d loss / d B by finite differences, through a whole (tiny) LLaMA."""
    model = Transformer(_config(n_layers=1, dim=16, hidden_dim=16, n_heads=2, n_kv_heads=2)).to(mi.float64)
    peft = get_peft_model(model, LoraConfig(r=2, lora_dropout=0.0, target_modules=["layers.0.attention.wv"]))
    layer = peft.layers[0].attention.wv
    layer.lora_B.weight.data[...] = np.random.default_rng(0).standard_normal(layer.lora_B.weight.shape) * 0.3
    x, y = _batch(B=2, T=4)

    def loss(a, b):
        return peft(x, targets=y).loss

    previous = mi.get_kernels()
    mi.set_kernels("numpy")  # the plain reference kernels: no float64 Numba dispatch to warm up
    try:
        assert gradcheck(loss, [layer.lora_A.weight, layer.lora_B.weight], name="llama+lora")
    finally:
        mi.set_kernels(previous)
    assert all(p.grad is None for n, p in peft.named_parameters() if "lora_" not in n)


def test_train_merge_save_reload_gives_same_logits(tmp_path):
    io = pytest.importorskip("minillm.io")
    mi.manual_seed(0)
    pretrained = Transformer(_config()).state_dict()
    model = _fresh(pretrained)
    names_before = list(model.state_dict())
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=LLAMA_ALL_LINEAR_TARGETS))
    _train(peft)
    # only A and B moved
    for name, t in model.state_dict().items():
        if "lora_" not in name:
            np.testing.assert_array_equal(t.data, pretrained[name].data, err_msg=name)
    peft.eval()
    x, _ = _batch(seed=11)
    logits = peft(x).logits.data.copy()

    # adapter-only save -> load on a fresh copy of the pretrained model -> identical logits
    peft.save_pretrained(tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG_NAME).read_text())
    assert meta["base_model_config"]["dim"] == 32 and meta["base_model_class"] == "Transformer"
    again = PeftModel.from_pretrained(_fresh(pretrained), str(tmp_path / "adapter"))
    np.testing.assert_array_equal(again(x).logits.data, logits)

    # merge -> plain Transformer -> normal checkpoint -> reload -> same logits
    plain = peft.merge_and_unload()
    assert type(plain) is Transformer and list(plain.state_dict()) == names_before
    io.save_model(plain, tmp_path / "merged")
    reloaded = io.load_model(tmp_path / "merged")
    reloaded.eval()
    np.testing.assert_allclose(reloaded(x).logits.data, logits, rtol=1e-4, atol=1e-5)


def test_merged_model_exports_to_hugging_face(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    io = pytest.importorskip("minillm.io")
    peft = get_peft_model(Transformer(_config()), LoraConfig(r=4, target_modules=["wq", "wk", "wv", "wo"]))
    _train(peft, steps=2)
    peft.eval()
    x, _ = _batch(seed=5)
    logits = peft(x).logits.data.copy()
    io.export_hf(peft.merge_and_unload(), tmp_path / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "hf"))
    hf.eval()
    with torch.no_grad():
        hf_logits = hf(torch.from_numpy(x.data)).logits.numpy()
    np.testing.assert_allclose(hf_logits, logits, rtol=1e-4, atol=1e-4)


def test_trainer_trains_only_the_adapters(tmp_path):
    train = pytest.importorskip("minillm.train")
    mi.manual_seed(0)
    model = Transformer(_config())
    frozen = {n: t.data.copy() for n, t in model.state_dict().items()}
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=LLAMA_ATTENTION_TARGETS))
    batches = [tuple(a.data for a in _batch(seed=s)) for s in range(4)]
    cfg = train.TrainConfig(out_dir=str(tmp_path), max_steps=3, warmup_steps=0, eval_interval=0, progress=False,
                            plot=False, checkpoint_interval=0, lr=1e-2, min_lr=1e-3)
    trainer = train.Trainer(peft, None, batches, None, cfg)
    trainer.train()
    n_opt = sum(p.data.size for g in trainer.optimizer.param_groups for p in g["params"])
    assert n_opt == peft.get_nb_trainable_parameters()[0]
    for name, t in model.state_dict().items():
        if "lora_" not in name:
            np.testing.assert_array_equal(t.data, frozen[name], err_msg=name)
    assert any(np.any(t.data != 0) for n, t in model.state_dict().items() if "lora_B" in n)

"""LoRA (Happy LLM 6.3): the layer, its gradients, merging, injection, counting and adapter files.

These tests use a small hand-made model; tests/test_lora_llama.py repeats the end-to-end
checks on a tiny LLaMA.
"""
import json
import math
import re

import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
from minillm.peft import (
    ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, LoraConfig, LoRALinear, PeftModel, book_lora_param_count,
    find_target_modules, get_peft_model, lora_param_formula,
)
from minillm.optim import AdamW
from minillm.testing import gradcheck


# ---------------------------------------------------------------------- a small model
class Attn(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.wq = nn.Linear(d, d)
        self.wk = nn.Linear(d, d)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def forward(self, x):
        return self.wo(self.wq(x).tanh() * self.wk(x) + self.wv(x))


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attention = Attn(d)
        self.feed_forward = nn.Sequential(nn.Linear(d, 2 * d), nn.Linear(2 * d, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        x = x + self.attention(self.norm(x))
        return x + self.feed_forward(x).tanh()


class Small(nn.Module):
    """Two blocks and a head; ``forward(x)`` returns logits, ``forward(x, targets=y)`` a loss too."""

    def __init__(self, d=8, n_out=5):
        super().__init__()
        self.layers = nn.ModuleList([Block(d), Block(d)])
        self.output = nn.Linear(d, n_out)

    def forward(self, x, targets=None):
        for layer in self.layers:
            x = layer(x)
        logits = self.output(x)
        if targets is None:
            return logits
        return logits, nn.functional.cross_entropy(logits, targets)


def _x(*shape, dtype=np.float32, seed=1):
    return mi.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def _randomize_lora(peft_or_layer, seed=3, scale=0.1):
    """Give B non-zero values (at init B = 0 and the adapter does nothing)."""
    rng = np.random.default_rng(seed)
    layers = [peft_or_layer] if isinstance(peft_or_layer, LoRALinear) else [m for _, m in peft_or_layer.lora_layers()]
    for m in layers:
        b = m.lora_B.weight
        b.data[...] = (rng.standard_normal(b.shape) * scale).astype(b.dtype)


# ====================================================================== the layer (6.3.2-6.3.4)
def test_lora_linear_structure_and_init():
    base = nn.Linear(16, 12)
    layer = LoRALinear(base, r=4, lora_alpha=32, lora_dropout=0.1)
    assert layer.scaling == 8.0
    assert layer.weight is base.weight and layer.bias is base.bias  # shared, not copied
    assert not layer.weight.requires_grad and not layer.bias.requires_grad  # frozen W0, b
    assert layer.lora_A.weight.shape == (4, 16) and layer.lora_B.weight.shape == (12, 4)  # A: in -> r, B: r -> out
    assert layer.lora_A.weight.requires_grad and layer.lora_B.weight.requires_grad
    assert np.all(layer.lora_B.weight.data == 0)  # B = 0: ΔW = 0 at the start
    bound = 1 / math.sqrt(16)  # kaiming_uniform_(a=√5) = U(-1/√in, 1/√in)
    a = layer.lora_A.weight.data
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.5 * bound
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["weight", "bias", "lora_A.weight", "lora_B.weight"]
    assert "r=4" in repr(layer) and "merged=False" in repr(layer)


def test_lora_linear_gaussian_init_and_dtype():
    base = nn.Linear(6, 3, dtype=np.float64)
    layer = LoRALinear(base, r=2, init_lora_weights="gaussian")
    assert layer.lora_A.weight.dtype == np.float64 and layer.lora_B.weight.dtype == np.float64
    assert np.all(layer.lora_B.weight.data == 0) and np.any(layer.lora_A.weight.data != 0)
    assert np.any(LoRALinear(nn.Linear(6, 3), r=2, init_lora_weights=False).lora_B.weight.data != 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(r=0), "r must be a positive int"),
    (dict(r=2.5), "r must be a positive int"),
    (dict(lora_alpha=0), "lora_alpha must be a positive number"),
    (dict(lora_dropout=1.0), r"lora_dropout must be in \[0, 1\)"),
    (dict(init_lora_weights="xavier"), "init_lora_weights"),
])
def test_lora_linear_rejects_bad_hparams(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoRALinear(nn.Linear(4, 4), **kwargs)


def test_lora_linear_rejects_non_linear_and_double_wrap():
    with pytest.raises(TypeError, match="expected an nn.Linear"):
        LoRALinear(nn.LayerNorm(4))
    with pytest.raises(TypeError, match="already has a LoRA adapter"):
        LoRALinear(LoRALinear(nn.Linear(4, 4)))


def test_forward_matches_the_formula():
    """h = W0·x + b + B·A·x · α/r  (6.3.3), against plain NumPy."""
    layer = LoRALinear(nn.Linear(5, 3), r=2, lora_alpha=4)
    _randomize_lora(layer)
    x = _x(2, 4, 5)
    w, b = layer.weight.data, layer.bias.data
    A, B = layer.lora_A.weight.data, layer.lora_B.weight.data
    expected = x.data @ w.T + b + (x.data @ A.T @ B.T) * 2.0
    np.testing.assert_allclose(layer(x).data, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gradcheck_float64_grads_only_to_A_and_B(dropout):
    base = nn.Linear(4, 3, dtype=np.float64)
    layer = LoRALinear(base, r=2, lora_alpha=6, lora_dropout=dropout)
    _randomize_lora(layer, scale=0.5)
    x = mi.tensor(np.random.default_rng(0).standard_normal((2, 3, 4)), dtype=mi.float64, requires_grad=True)
    A, B = layer.lora_A.weight, layer.lora_B.weight

    def f(x, a, b):
        mi.manual_seed(7)  # the same dropout mask at every evaluation
        return layer(x)

    assert gradcheck(f, [x, A, B], name="LoRALinear")
    # the frozen base weight and bias received nothing
    assert layer.weight.grad is None and layer.bias.grad is None
    assert A.grad is not None and B.grad is not None


def test_base_weight_gets_no_gradient_in_a_backward_pass():
    layer = LoRALinear(nn.Linear(4, 4), r=2)
    (layer(_x(3, 4)) ** 2).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    assert layer.lora_B.weight.grad is not None and np.any(layer.lora_B.weight.grad.data != 0)
    # at init B = 0, so dL/dA = 0 exactly (the gradient reaches A only through B)
    assert np.all(layer.lora_A.weight.grad.data == 0)


def test_at_init_output_equals_base_exactly():
    base = nn.Linear(6, 4)
    x = _x(2, 3, 6)
    before = base(x).data.copy()
    layer = LoRALinear(base, r=3, lora_dropout=0.5)  # dropout is on, still exact: B = 0
    np.testing.assert_array_equal(layer(x).data, before)


def test_merge_unmerge_round_trip():
    layer = LoRALinear(nn.Linear(8, 6), r=2, lora_alpha=16)
    _randomize_lora(layer)
    layer.eval()
    x = _x(4, 8)
    w0 = layer.weight.data.copy()
    y = layer(x).data.copy()
    layer.merge()
    assert layer.merged
    np.testing.assert_allclose(layer.weight.data, w0 + layer.delta_weight(), rtol=0, atol=1e-7)
    np.testing.assert_allclose(layer(x).data, y, rtol=1e-5, atol=1e-6)
    layer.merge()  # a second merge is a no-op, not a double add
    np.testing.assert_allclose(layer(x).data, y, rtol=1e-5, atol=1e-6)
    layer.unmerge()
    assert not layer.merged
    np.testing.assert_allclose(layer.weight.data, w0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(layer(x).data, y, rtol=1e-5, atol=1e-6)


def test_training_forward_on_merged_layer_is_an_error():
    layer = LoRALinear(nn.Linear(4, 4), r=2)
    layer.merge()
    with pytest.raises(RuntimeError, match="unmerge"):
        layer(_x(2, 4))
    with mi.no_grad():
        layer(_x(2, 4))  # inference is fine
    layer.eval()
    layer(_x(2, 4))


# ====================================================================== config and matching (6.3.4, 6.3.5)
def test_lora_config_defaults_are_the_books():
    cfg = LoraConfig()
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 32, 0.1)
    assert cfg.target_modules == ["wq", "wv"]
    assert LoraConfig(target_modules="wq").target_modules == ["wq"]
    d = LoraConfig(target_modules=[re.compile(r".*\.w[qv]")]).to_dict()
    assert d["target_modules"] == [r".*\.w[qv]"]
    json.dumps(d)
    assert LoraConfig.from_dict({**d, "peft_type": "LORA", "whatever": 1}).r == 8


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(target_modules=[]), ValueError, "target_modules is empty"),
    (dict(target_modules=[3]), TypeError, "non-empty str or an re.Pattern"),
    (dict(target_modules=["w(q"]), ValueError, "not a valid regular expression"),
    (dict(bias="some"), ValueError, "bias must be one of"),
    (dict(r=-1), ValueError, "r must be a positive int"),
])
def test_lora_config_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        LoraConfig(**kwargs)


def test_matching_rules():
    model = Small()
    names = lambda t: list(find_target_modules(model, t))  # noqa: E731
    assert names(["wq"]) == ["layers.0.attention.wq", "layers.1.attention.wq"]
    assert names(["wq", "wv"]) == ["layers.0.attention.wq", "layers.0.attention.wv",
                                   "layers.1.attention.wq", "layers.1.attention.wv"]
    assert names(["layers.1.attention.wq"]) == ["layers.1.attention.wq"]  # exact full name
    assert names(["attention.wk"]) == ["layers.0.attention.wk", "layers.1.attention.wk"]  # dotted suffix
    assert names([r"layers\.0\.attention\.w[qk]"]) == ["layers.0.attention.wq", "layers.0.attention.wk"]  # regex
    assert names(re.compile(r".*feed_forward\.\d")) == ["layers.0.feed_forward.0", "layers.0.feed_forward.1",
                                                         "layers.1.feed_forward.0", "layers.1.feed_forward.1"]


def test_no_match_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\['q_proj'\] matched no module of Small.*'wq'.*layers.0.attention.wq"):
        get_peft_model(Small(), LoraConfig(target_modules=["wq", "q_proj"]))


def test_non_linear_target_is_a_clear_error():
    with pytest.raises(TypeError, match="'layers.0.attention' is a Attn; only nn.Linear"):
        get_peft_model(Small(), LoraConfig(target_modules=["attention"]))


def test_tied_weight_target_is_refused():
    model = Small()
    model.layers[0].attention.wk.weight = model.layers[0].attention.wq.weight
    with pytest.raises(ValueError, match="tied weights"):
        get_peft_model(model, LoraConfig(target_modules=["wq"]))


def test_double_injection_is_refused():
    peft = get_peft_model(Small(), LoraConfig(target_modules=["wq"]))
    with pytest.raises(ValueError, match="already a PeftModel"):
        get_peft_model(peft, LoraConfig(target_modules=["wv"]))
    with pytest.raises(ValueError, match="already has a LoRA adapter"):
        get_peft_model(peft.base_model, LoraConfig(target_modules=["wq"]))


# ====================================================================== injection and counting (6.3.3, 6.3.5)
def test_injection_freezes_all_but_adapters_and_keeps_names():
    model = Small()
    before = [n for n, _ in model.named_parameters()]
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["wq", "wv"]))
    assert isinstance(model.layers[0].attention.wq, LoRALinear)  # modified in place
    assert isinstance(model.layers[0].attention.wk, nn.Linear) and not isinstance(model.layers[0].attention.wk, LoRALinear)
    names = [n for n, _ in peft.named_parameters()]
    assert [n for n in names if "lora_" not in n] == before  # base names unchanged
    assert peft.state_dict().keys() == model.state_dict().keys()  # the wrapper shares the tree
    trainable = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 4
    assert peft.targeted_module_names == ["layers.0.attention.wq", "layers.0.attention.wv",
                                          "layers.1.attention.wq", "layers.1.attention.wv"]


def test_trainable_count_matches_the_books_formula(capsys):
    d, r = 8, 4
    peft = get_peft_model(Small(d), LoraConfig(r=r, target_modules=["wq", "wk", "wv", "wo"]))
    trainable, total = peft.get_nb_trainable_parameters()
    # 6.3.3: Θ = 2 · L_LoRA · d_model · r, here L_LoRA = 2 layers × 4 matrices
    assert trainable == book_lora_param_count(8, d, r) == 2 * 8 * d * r == peft.expected_lora_parameters()
    assert total == Small(d).num_parameters() + trainable
    peft.print_trainable_parameters()
    out = capsys.readouterr().out
    assert out == f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}\n"
    # non-square matrices: r·(d_in + d_out) each
    peft2 = get_peft_model(Small(d), LoraConfig(r=r, target_modules=["feed_forward.0", "feed_forward.1"]))
    assert peft2.get_nb_trainable_parameters()[0] == lora_param_formula([(2 * d, d), (d, 2 * d)] * 2, r) == 2 * 2 * r * (d + 2 * d)


def test_peft_model_forward_and_attributes_pass_through():
    model = Small()
    x = _x(3, 8)
    y0 = model(x).data.copy()
    peft = get_peft_model(model, LoraConfig(target_modules=["wq", "wv", "output"]))
    np.testing.assert_array_equal(peft(x).data, y0)  # B = 0: exactly the base model, dropout on or not
    logits, loss = peft(x, targets=mi.tensor(np.array([0, 1, 2])))
    assert logits.shape == (3, 5) and loss.ndim == 0
    assert peft.layers is model.layers  # attribute lookups reach the base model
    peft.eval()
    assert not model.training and not model.layers[0].attention.wq.training
    peft.train()
    assert model.training and model.layers[0].attention.wq.lora_dropout.training
    # mode(): the wrapper, the base model (not in the wrapper's tree) and every layer, restored after
    model.layers[1].train(False)  # a sub-module in its own mode must get it back too
    with peft.mode(training=False) as m:
        assert m is peft and not peft.training and not model.training and not model.layers[0].training
        with pytest.raises(RuntimeError, match="boom"):
            with peft.mode(training=True):
                assert model.layers[1].training
                raise RuntimeError("boom")
        assert not model.training and not model.layers[1].training
    assert peft.training and model.training and model.layers[0].training and not model.layers[1].training


def test_injection_lives_in_nn_and_knows_no_files():
    """nn/lora.py is a layer (LoRALinear, LoraConfig, matching, injection); the PeftModel
    wrapper and its adapter files live one level up in minillm/peft/ (like peft above torch)."""
    import ast
    import inspect

    import minillm.nn.lora as lora_module
    from minillm.nn.lora import inject_adapter_in_model, lora_layers

    tree = ast.parse(inspect.getsource(lora_module))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.lstrip(".").split(".")[0] in ("io", "peft", "models", "train", "json", "os")], imported

    model = Small()
    names = inject_adapter_in_model(LoraConfig(r=2, target_modules=["wq"], bias="lora_only"), model)
    assert [n for n, _ in lora_layers(model)] == ["layers.0.attention.wq", "layers.1.attention.wq"]
    assert names == ["layers.0.attention.wq.lora_A.weight", "layers.0.attention.wq.lora_B.weight",
                     "layers.1.attention.wq.lora_A.weight", "layers.1.attention.wq.lora_B.weight",
                     "layers.0.attention.wq.bias", "layers.1.attention.wq.bias"]
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == sorted(names)
    wq = model.layers[0].attention.wq
    assert wq.get_base_layer().weight is wq.weight  # the same Parameter, put back by unload()
    with pytest.raises(ValueError, match="has no module"):
        inject_adapter_in_model(LoraConfig(target_modules=["wk"]), Small(), ["layers.9.wk"])


def test_disable_adapter_runs_the_base_model():
    model = Small()
    x = _x(3, 8)
    y0 = model(x).data.copy()
    peft = get_peft_model(model, LoraConfig(target_modules=["wq", "wv"], lora_dropout=0.0))
    _randomize_lora(peft)
    assert not np.allclose(peft(x).data, y0)
    with peft.disable_adapter():
        np.testing.assert_array_equal(peft(x).data, y0)
    assert not np.allclose(peft(x).data, y0)


def test_bias_and_modules_to_save_are_trained_and_saved(tmp_path):
    peft = get_peft_model(Small(), LoraConfig(target_modules=["wq"], bias="lora_only", modules_to_save=["norm"]))
    trainable = sorted(n for n, p in peft.named_parameters() if p.requires_grad)
    assert "layers.0.attention.wq.bias" in trainable and "layers.1.layers" not in trainable
    assert "layers.0.norm.weight" in trainable and "layers.1.norm.bias" in trainable
    assert "layers.0.attention.wk.bias" not in trainable
    assert sorted(peft.adapter_state_dict()) == trainable
    peft.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / ADAPTER_CONFIG_NAME).read_text())
    assert meta["bias"] == "lora_only" and meta["modules_to_save"] == ["norm"]
    peft_all = get_peft_model(Small(), LoraConfig(target_modules=["wq"], bias="all"))
    assert {n for n, p in peft_all.named_parameters() if p.requires_grad} >= {"layers.0.attention.wk.bias", "output.bias"}


# ====================================================================== adapter files, merging, training
def _train_steps(peft, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    opt = AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        x = mi.tensor(rng.standard_normal((6, 8)).astype(np.float32))
        y = mi.tensor(rng.integers(0, 5, size=6))
        _, loss = peft(x, targets=y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return opt


def test_adapter_save_load_gives_identical_outputs(tmp_path):
    mi.manual_seed(1)
    base_state = Small().state_dict()

    def fresh():
        m = Small()
        m.load_state_dict(base_state)
        return m

    peft = get_peft_model(fresh(), LoraConfig(r=4, target_modules=["wq", "wv", "output"]))
    _train_steps(peft)
    peft.eval()
    x = _x(4, 8, seed=9)
    y = peft(x).data.copy()
    peft.save_pretrained(tmp_path / "adapter")

    saved = (tmp_path / "adapter" / ADAPTER_WEIGHTS_NAME)
    from safetensors.numpy import load_file
    tensors = load_file(str(saved))
    assert sorted(tensors) == sorted(n for n, _ in peft.named_parameters() if "lora_" in n)  # adapter only
    meta = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG_NAME).read_text())
    assert meta["r"] == 4 and meta["lora_alpha"] == 32 and meta["lora_dropout"] == 0.1
    assert meta["target_modules"] == ["wq", "wv", "output"] and meta["peft_type"] == "LORA"
    assert meta["targeted_module_names"] == peft.targeted_module_names

    loaded = PeftModel.from_pretrained(fresh(), str(tmp_path / "adapter"))
    assert not loaded.training and loaded.get_nb_trainable_parameters()[0] == 0  # inference mode by default
    np.testing.assert_array_equal(loaded(x).data, y)

    trainable = PeftModel.from_pretrained(fresh(), str(tmp_path / "adapter"), is_trainable=True)
    assert trainable.get_nb_trainable_parameters()[0] == peft.get_nb_trainable_parameters()[0]

    # load_adapter into an existing PeftModel with the same layout
    other = get_peft_model(fresh(), LoraConfig(r=4, target_modules=["wq", "wv", "output"]))
    other.load_adapter(str(tmp_path / "adapter"))
    other.eval()
    np.testing.assert_array_equal(other(x).data, y)


def test_adapter_load_errors(tmp_path):
    peft = get_peft_model(Small(), LoraConfig(r=4, target_modules=["wq"]))
    peft.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="r=4, lora_alpha=32; this model has r=2"):
        get_peft_model(Small(), LoraConfig(r=2, target_modules=["wq"])).load_adapter(str(tmp_path))
    with pytest.raises(ValueError, match="size mismatch"):
        PeftModel.from_pretrained(Small(d=16), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        PeftModel.from_pretrained(Small(), str(tmp_path / "nowhere"))


def test_train_merge_and_unload_then_reload_gives_same_logits(tmp_path):
    from safetensors.numpy import load_file, save_file

    model = Small()
    names_before = list(model.state_dict())
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["wq", "wk", "wv", "wo", "feed_forward.0"]))
    w0 = model.layers[0].attention.wq.weight.data.copy()
    _train_steps(peft, steps=4)
    assert np.array_equal(model.layers[0].attention.wq.weight.data, w0)  # base weight untouched by training
    peft.eval()
    x = _x(5, 8, seed=4)
    y = peft(x).data.copy()

    plain = peft.merge_and_unload()
    assert plain is model and type(plain) is Small
    assert list(plain.state_dict()) == names_before  # exactly the original names
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert all(p.requires_grad for p in plain.parameters())  # restored
    np.testing.assert_allclose(plain(x).data, y, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="merge_and_unload"):
        peft.save_pretrained(tmp_path / "x")

    save_file({k: np.ascontiguousarray(v.data) for k, v in plain.state_dict().items()}, str(tmp_path / "merged.safetensors"))
    reloaded = Small()
    reloaded.load_state_dict(load_file(str(tmp_path / "merged.safetensors")))
    reloaded.eval()
    np.testing.assert_allclose(reloaded(x).data, y, rtol=1e-5, atol=1e-5)


def test_unload_without_merge_gives_back_the_base_model():
    model = Small()
    x = _x(3, 8)
    y0 = model(x).data.copy()
    peft = get_peft_model(model, LoraConfig(target_modules=["wq"]))
    _randomize_lora(peft)
    plain = peft.unload()
    np.testing.assert_array_equal(plain(x).data, y0)


def test_merge_adapter_on_peft_model_round_trip():
    peft = get_peft_model(Small(), LoraConfig(target_modules=["wq", "wv"]))
    _randomize_lora(peft)
    peft.eval()
    x = _x(3, 8)
    y = peft(x).data.copy()
    peft.merge_adapter()
    np.testing.assert_allclose(peft(x).data, y, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="unmerge_adapter"):
        with peft.disable_adapter():
            pass
    peft.unmerge_adapter()
    np.testing.assert_allclose(peft(x).data, y, rtol=1e-5, atol=1e-6)

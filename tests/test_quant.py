"""Weight-only quantization (int8 per output channel, NF4 blockwise with optional double
quantization) and QLoRA: LoRA trained on a frozen NF4 base."""
import os

import numpy as np
import pytest

import minillm as mi
from minillm import nn
from minillm.models.llama import ModelConfig, Transformer
from minillm.nn import functional as F
from minillm.nn.quant import (
    NF4_CODE, Linear4bit, Linear8bit, dequantize_int8, dequantize_nf4, nf4_error_bound, nf4_scales, quantize_int8,
    quantize_model, quantize_nf4,
)
from minillm.peft import LLAMA_ALL_LINEAR_TARGETS, LoraConfig, PeftModel, get_peft_model, load_quantized, save_quantized
from minillm.testing import gradcheck

# Dettmers et al. 2023 (QLoRA), appendix E / bitsandbytes' NF4 table, copied from the paper.
PUBLISHED_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]


def _w(shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape) * scale
    w[0, :3] *= 20  # outliers: one block with a much larger absmax
    return w.astype(np.float32)


def test_nf4_code_is_the_published_table():
    np.testing.assert_array_equal(NF4_CODE, np.array(PUBLISHED_NF4, dtype=np.float32))
    assert len(NF4_CODE) == 16 and np.all(np.diff(NF4_CODE) > 0) and 0.0 in NF4_CODE


@pytest.mark.parametrize("shape", [(7, 5), (96, 80), (3, 129)])
def test_int8_error_is_at_most_half_a_step_per_element(shape):
    w = _w(shape)
    w[-1] = 0.0  # an all-zero row keeps its zeros
    q, scale = quantize_int8(w)
    assert q.dtype == np.int8 and scale.shape == (shape[0],) and np.abs(q).max() <= 127
    np.testing.assert_allclose(scale[:-1], np.abs(w[:-1]).max(axis=1) / 127, rtol=1e-6)
    err = np.abs(dequantize_int8(q, scale) - w)
    assert np.all(err <= scale[:, None] / 2 * (1 + 1e-6) + 1e-12)
    assert np.all(dequantize_int8(q, scale)[-1] == 0)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("shape", [(64, 64), (33, 70), (5, 3)])  # whole blocks, padding, less than one block
def test_nf4_error_bound_per_block(shape, double_quant):
    w = _w(shape, seed=2)
    st = quantize_nf4(w, double_quant=double_quant)
    d = dequantize_nf4(st)
    assert d.shape == w.shape and d.dtype == np.float32
    n_blocks = -(-w.size // 64)
    assert st["packed"].dtype == np.uint8 and st["packed"].size == n_blocks * 32  # two codes per byte
    assert np.all(np.abs(d - w) <= nf4_error_bound(w, st))
    # every dequantized value is a code value times its block's scale
    flat = np.zeros(n_blocks * 64, np.float32)
    flat[: w.size] = d.reshape(-1)
    ratio = flat.reshape(n_blocks, 64) / nf4_scales(st)[:, None]
    assert np.all(np.min(np.abs(ratio[..., None] - NF4_CODE), axis=-1) < 1e-5)
    if not double_quant:  # the largest weight of each block is represented exactly (code ±1)
        absmax = np.abs(flat.reshape(n_blocks, 64)).max(axis=1)
        np.testing.assert_allclose(nf4_scales(st), np.abs(np.pad(w.reshape(-1), (0, n_blocks * 64 - w.size))).reshape(n_blocks, 64).max(1))
        assert np.allclose(np.abs(flat.reshape(n_blocks, 64)).max(axis=1), absmax)


def test_nf4_codes_are_nearest_and_double_quant_shrinks_the_scales():
    x = np.array([NF4_CODE, NF4_CODE * 0.5, -NF4_CODE * 0.999], dtype=np.float32).reshape(1, -1)
    x = np.concatenate([x, np.zeros((1, 64 * 2 - x.size), np.float32)], axis=1)
    d = dequantize_nf4(quantize_nf4(x))
    brute = []
    for blk in x.reshape(-1, 64):
        s = np.abs(blk).max() or 1.0
        brute.append(NF4_CODE[np.argmin(np.abs(blk[:, None] / s - NF4_CODE), axis=1)] * s)
    np.testing.assert_allclose(d.reshape(-1), np.concatenate(brute), rtol=1e-6)
    w = _w((256, 256))
    plain, dq = quantize_nf4(w), quantize_nf4(w, double_quant=True)
    bits = lambda st: 8 * sum(v.nbytes for k, v in st.items() if k not in ("shape", "blocksize")) / w.size  # noqa: E731
    assert abs(bits(plain) - (4 + 32 / 64)) < 1e-9  # 4 bits + a float32 scale per 64 weights
    assert bits(dq) < 4.13  # 4 + 8/64 + 32/(64·256) + the offset
    assert np.abs(nf4_scales(dq) - nf4_scales(plain)).max() <= plain["absmax"].max() / 127


def test_quantize_bad_input():
    with pytest.raises(TypeError, match="float weight"):
        quantize_int8(np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match="non-finite"):
        quantize_nf4(np.array([[1.0, np.inf]], np.float32))
    with pytest.raises(ValueError, match="2-D"):
        quantize_int8(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="quant_type"):
        quantize_model(nn.Linear(2, 2), "int4")
    with pytest.raises(TypeError, match="expected an nn.Linear"):
        Linear4bit(nn.Embedding(3, 4))
    layer = Linear8bit(nn.Linear(3, 2))
    with pytest.raises(TypeError, match="compute dtype"):
        layer(mi.tensor(np.ones((1, 3))))  # float64 input on a float32 layer


@pytest.mark.parametrize("cls", [Linear8bit, Linear4bit])
def test_quantized_linear_is_linear_with_the_dequantized_weight_gradcheck_float64(cls):
    base = nn.Linear(70, 5, dtype=np.float64)
    layer = cls(base)
    assert not any(p.requires_grad for p in layer.parameters()) and layer.weight.data.dtype in (np.int8, np.uint8)
    x = mi.tensor(np.random.default_rng(0).standard_normal((2, 3, 70)), dtype=mi.float64, requires_grad=True)
    w = layer.dequantize()
    np.testing.assert_allclose(layer(x).data, x.data @ w.T + base.bias.data, rtol=1e-12)
    assert np.abs(w - base.weight.data).max() < np.abs(base.weight.data).max() * 0.15
    assert gradcheck(lambda x: layer(x), [x], name=cls.__name__)
    assert base.bias.grad is None


# ====================================================================== models and QLoRA
CFG = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, max_seq_len=32)


def _model(seed=0):
    mi.manual_seed(seed)
    return Transformer(ModelConfig(**CFG))


def _ids(B=2, T=9):
    return mi.tensor(np.random.default_rng(1).integers(0, CFG["vocab_size"], (B, T)))


@pytest.mark.parametrize("quant_type,double_quant", [("int8", False), ("nf4", False), ("nf4", True)])
def test_quantize_model_saves_and_loads(quant_type, double_quant, tmp_path):
    ref = _model()
    x = _ids()
    want = ref(x).logits.data.copy()
    model = quantize_model(_model(), quant_type, double_quant=double_quant)
    kinds = {n: type(m).__name__ for n, m in model.named_modules() if "Linear" in type(m).__name__}
    assert kinds["output"] == "Linear" and kinds["layers.0.attention.wq"] in ("Linear8bit", "Linear4bit")
    got = model(x).logits.data
    assert 0 < np.abs(got - want).max() < (0.02 if quant_type == "int8" else 0.2)
    save_quantized(model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors", "quantization_config.json"]
    np.testing.assert_array_equal(load_quantized(tmp_path)(x).logits.data, got)
    float_bytes = os.path.getsize(tmp_path / "model.safetensors")
    (tmp_path / "f").mkdir()
    from minillm.io import save_model
    save_model(ref, tmp_path / "f")
    assert float_bytes < os.path.getsize(tmp_path / "f" / "model.safetensors") * (0.6 if quant_type == "int8" else 0.5)


def test_load_quantized_refuses_a_mismatch(tmp_path):
    save_quantized(quantize_model(_model(), "nf4"), tmp_path)
    qpath = tmp_path / "quantization_config.json"
    good = qpath.read_text()
    qpath.write_text('{"quant_type": "nf4", "double_quant": false, "quantized_modules": []}')
    with pytest.raises(ValueError, match=r"lists quantized layers \[\]"):
        load_quantized(tmp_path)
    qpath.write_text(good.replace('"double_quant": false', '"double_quant": true'))  # the file has float32 scales
    with pytest.raises(ValueError, match="weight_absmax: file float32"):
        load_quantized(tmp_path)
    qpath.write_text('{"quant_type": "int3"}')
    with pytest.raises(ValueError, match="quant_type"):
        load_quantized(tmp_path)
    with pytest.raises(ValueError, match="no quantized layer"):
        save_quantized(_model(), tmp_path / "x")


def test_qlora_trains_only_lora_with_gradients_through_the_nf4_base(tmp_path):
    model = quantize_model(_model(), "nf4", double_quant=True)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LLAMA_ALL_LINEAR_TARGETS))
    trainable = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert peft.num_parameters(trainable_only=True) == peft.expected_lora_parameters() == \
        2 * (4 * (64 + 64) * 2 + 4 * (64 + 32) * 2 + 4 * (64 + 192) * 3)
    x = _ids()
    before = peft(x).logits.data.copy()
    opt = mi.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-2)
    codes = {n: b.data.copy() for n, b in peft.named_buffers()}
    for _ in range(3):
        loss = peft(x, targets=x).loss
        loss.backward()
        assert all(p.grad is None for p in peft.parameters() if not p.requires_grad)  # no gradient stored for the base
        opt.step()
        opt.zero_grad()
    assert all(np.array_equal(codes[n], b.data) for n, b in peft.named_buffers())  # the NF4 base never changes
    assert np.abs(peft(x).logits.data - before).max() > 1e-3
    with pytest.raises(RuntimeError, match="quantized"):
        peft.merge_adapter()
    peft.save_pretrained(str(tmp_path))
    again = PeftModel.from_pretrained(quantize_model(_model(), "nf4", double_quant=True), str(tmp_path))
    with mi.no_grad():
        np.testing.assert_array_equal(again(x).logits.data, peft(x).logits.data)
    assert len(peft.generate([1, 2, 3], max_new_tokens=4, temperature=0)) == 4


def test_qlora_lora_layer_gradcheck_float64():
    base = nn.Linear(70, 6, dtype=np.float64)
    q = Linear4bit(base)
    from minillm.nn.lora import LoRALinear
    layer = LoRALinear(q, r=2, lora_alpha=4)
    mi.nn.init.normal_(layer.lora_B.weight, std=0.3)
    x = mi.tensor(np.random.default_rng(0).standard_normal((2, 70)), dtype=mi.float64, requires_grad=True)
    np.testing.assert_allclose(layer(x).data, F.linear(x, mi.tensor(q.dequantize()), base.bias).data
                               + (x.data @ layer.lora_A.weight.data.T @ layer.lora_B.weight.data.T) * 2.0, rtol=1e-10)
    assert gradcheck(lambda x, a, b: layer(x), [x, layer.lora_A.weight, layer.lora_B.weight], name="QLoRA LoRALinear")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("shape", [(130, 70), (3, 64), (200, 256)])
def test_nf4_kernels_equal_the_reference(backend, shape):
    from minillm import kernels as K
    from minillm.kernels import _quant, reference
    w = _w(shape, seed=3)
    st = quantize_nf4(w, double_quant=True)
    scales = nf4_scales(st)
    want = reference.nf4_dequantize(st["packed"], scales, NF4_CODE, 64)
    np.testing.assert_array_equal(_quant.nf4_dequantize(st["packed"], scales, NF4_CODE, 64), want)
    x = np.random.default_rng(0).standard_normal((3, shape[1])).astype(np.float32)
    np.testing.assert_allclose(_quant.nf4_linear(x, st["packed"], scales, NF4_CODE, 64, shape[0]),
                               reference.nf4_linear(x, st["packed"], scales, NF4_CODE, 64, shape[0]), rtol=1e-4, atol=1e-4)
    old = K.get_kernels()
    K.set_kernels(backend)
    try:
        np.testing.assert_array_equal(dequantize_nf4(st), want[: w.size].reshape(shape))
    finally:
        K.set_kernels(old)

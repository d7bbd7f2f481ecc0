"""GenerationConfig: validation naming the field, keyword calls == config calls, do_sample/temperature rules."""
import numpy as np
import pytest

import minillm as mi
from minillm.generation import GenerationConfig, generate, stream_generate
from minillm.models.llama import ModelConfig, Transformer
from _helpers import scramble


@pytest.fixture(scope="module")
def model():
    mi.manual_seed(0)
    m = Transformer(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=40, max_seq_len=32))
    return scramble(m, 0.3)


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_new_tokens", -1), ("max_new_tokens", 2.5), ("temperature", -0.1), ("temperature", None), ("top_k", 0),
        ("top_p", 0.0), ("top_p", 1.5), ("repetition_penalty", 0), ("eos_token_id", -1), ("eos_token_id", 1.0),
        ("pad_token_id", "0"), ("num_beams", 0), ("length_penalty", float("nan")), ("early_stopping", "sometimes"),
        ("early_stopping", 1), ("num_return_sequences", 0), ("decoder_start_token_id", -2), ("seed", 1.5),
        ("num_assistant_tokens", 0), ("use_cache", 1), ("fused_decode", None), ("do_sample", "yes"),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"GenerationConfig\.{field} "):
        GenerationConfig(**{field: value})


def test_cross_field_rules():
    with pytest.raises(ValueError, match=r"num_return_sequences \(3\) must be <= num_beams \(2\)"):
        GenerationConfig(num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="num_return_sequences.*greedy"):
        GenerationConfig(temperature=0, num_return_sequences=2)
    with pytest.raises(ValueError, match="GenerationConfig.temperature must be > 0 when do_sample=True"):
        GenerationConfig(do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="GenerationConfig.do_sample .*beam sampling"):
        GenerationConfig(do_sample=True, num_beams=3)
    with pytest.raises(TypeError, match=r"no field\(s\) \['temprature'\]"):
        GenerationConfig().update(temprature=0.5)


def test_sampling_rule():
    assert GenerationConfig().sampling  # the book's default: temperature 1.0 samples
    assert not GenerationConfig(temperature=0).sampling
    assert not GenerationConfig(temperature=0.7, do_sample=False).sampling
    assert not GenerationConfig(num_beams=4).sampling  # beam search is deterministic by default
    assert GenerationConfig(temperature=0.5, do_sample=True).sampling


def test_keyword_calls_equal_config_calls(model):
    cfg = GenerationConfig(max_new_tokens=9, temperature=0.8, top_k=10, top_p=0.9, seed=3, repetition_penalty=1.2)
    by_kw = generate(model, [1, 2, 3], 9, temperature=0.8, top_k=10, top_p=0.9, seed=3, repetition_penalty=1.2)
    assert generate(model, [1, 2, 3], cfg) == by_kw
    assert generate(model, [1, 2, 3], generation_config=cfg) == by_kw
    assert generate(model, [1, 2, 3], max_new_tokens=9, temperature=0.8, top_k=10, top_p=0.9, seed=3, repetition_penalty=1.2) == by_kw
    # keywords override the config's fields; the config object is not changed
    greedy = generate(model, [1, 2, 3], cfg, temperature=0)
    assert greedy == generate(model, [1, 2, 3], 9, temperature=0, repetition_penalty=1.2) and cfg.temperature == 0.8
    assert list(stream_generate(model, [1, 2, 3], cfg)) == by_kw
    assert generate(model, [1, 2, 3], cfg, do_sample=False) == greedy  # do_sample=False: greedy whatever the temperature
    assert len(generate(model, [1, 2, 3], temperature=0)) == GenerationConfig().max_new_tokens  # HF's default 20


def test_bad_calls(model):
    with pytest.raises(TypeError, match="max_new_tokens given twice"):
        generate(model, [1, 2], 3, max_new_tokens=4)
    with pytest.raises(TypeError, match="GenerationConfig or max_new_tokens"):
        generate(model, [1, 2], "3")
    with pytest.raises(TypeError, match=r"no field\(s\) \['max_tokens'\]"):
        generate(model, [1, 2], max_tokens=4)
    with pytest.raises(ValueError, match="GenerationConfig.top_k"):
        generate(model, [1, 2], 3, top_k=-2)
    with pytest.raises(ValueError, match="stream_generate: streams one sequence"):
        list(stream_generate(model, [1, 2], 3, num_beams=2))


def test_num_return_sequences_sampling(model):
    out = generate(model, [[1, 2, 3], [4, 5]], 6, temperature=1.0, num_return_sequences=3, seed=0)
    assert len(out) == 6 and all(len(o) == 6 for o in out)
    assert len({tuple(o) for o in out[:3]}) > 1  # different samples of the same prompt
    single = generate(model, [1, 2, 3], 6, temperature=1.0, num_return_sequences=2, seed=0)
    assert len(single) == 2 and isinstance(single[0], list)


def test_generation_leaves_modes_and_grad_as_they_were(model):
    model.train()
    model.layers[0].eval()  # a mixed state is restored exactly (Module.mode)
    generate(model, [1, 2, 3], 3, temperature=0)
    generate(model, [1, 2, 3], 3, num_beams=2)
    assert model.training and not model.layers[0].training and model.layers[1].training
    assert mi.is_grad_enabled()
    model.eval()


@pytest.mark.parametrize("field, value", [
    ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", "0.5"), ("temperature", -1.0),
    ("repetition_penalty", float("nan")), ("repetition_penalty", float("inf")), ("repetition_penalty", "1.2"),
    ("top_p", float("nan")), ("length_penalty", float("nan")),
])
def test_non_finite_or_non_numeric_sampling_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=f"GenerationConfig.{field}"):
        GenerationConfig(**{field: value})


def test_a_tiny_temperature_is_greedy_in_the_limit_not_nan():
    from minillm.generation import sample_next_token

    logits = np.array([[0.5, 2.0, -1.0], [3.0, 1.0, 2.9]])
    for t in (1e-320, 1e-300, 1e-30):
        np.testing.assert_array_equal(sample_next_token(logits, t, rng=np.random.default_rng(0)), [1, 0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("num_beams", [1, 2])
def test_nan_or_inf_logits_stop_generation_naming_the_step(monkeypatch, bad, num_beams):
    import minillm as mi
    from minillm.generation import generate
    from minillm.models.llama import ModelConfig, Transformer

    mi.manual_seed(0)
    model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=11, max_seq_len=16))
    model.output.weight.data[3, 0] = bad  # token 3's logit is NaN / inf whenever feature 0 is non-zero
    with pytest.raises(FloatingPointError, match=r"logits at new token 0 contain"):
        generate(model, [1, 2, 3], max_new_tokens=4, temperature=0, num_beams=num_beams)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_logits_finds_one_nan_or_inf_anywhere_and_allows_minus_inf(dtype):
    """check_logits first looks at the max (one pass): a single NaN or +inf anywhere, also mixed
    with -inf or in the last element, must still be refused; -inf alone is a legitimate logit."""
    from minillm.generation.sampling import check_logits

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 37)).astype(dtype)
    logits[1, 5] = -np.inf
    check_logits(logits, 0)  # finite and -inf: fine
    check_logits(np.full((2, 4), -np.inf, dtype), 0)
    check_logits(np.empty((0, 4), dtype), 0)
    for bad in (np.nan, np.inf):
        for row, col in [(0, 0), (2, 36), (1, 5), (1, 17)]:
            x = logits.copy()
            x[row, col] = bad
            with pytest.raises(FloatingPointError, match=rf"new token 7 contain {bad} \(row {row}, token {col}\)"):
                check_logits(x, 7)

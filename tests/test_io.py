"""minillm.io: save_model / load_model round trips, safetensors reading with clear errors, HF layout offline."""
import json
import os

import numpy as np
import pytest

import minillm.nn as nn
from minillm.io import export_hf, import_hf, load_model, load_safetensors, save_model, save_safetensors
from minillm.io.hf import permute_rope_rows_from_hf, permute_rope_rows_to_hf
from minillm.models.llama import ModelConfig, Transformer
from _helpers import scramble

V = 64


def make_model(**kw):
    model = Transformer(ModelConfig(**{**dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=V, max_seq_len=32), **kw}))
    return scramble(model, 0.2, vectors=0.2)


X = np.random.default_rng(0).integers(0, V, size=(2, 9))


@pytest.mark.parametrize("tie", [True, False])
def test_save_load_identical_logits(tmp_path, tie):
    model = make_model(tie_word_embeddings=tie, dropout=0.1, n_kv_heads=4)
    model.eval()
    save_model(model, tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]  # no pickle, no temp files
    loaded = load_model(tmp_path / "m")
    assert loaded.args == model.args
    loaded.eval()
    np.testing.assert_array_equal(loaded(X).logits.data, model(X).logits.data)
    assert (loaded.output.weight is loaded.tok_embeddings.weight) == tie
    stored = load_safetensors(tmp_path / "m" / "model.safetensors")
    assert ("output.weight" in stored) == (not tie)  # a tied head is stored once
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "minillm-llama"


def test_safetensors_roundtrip_matches_reference_library(tmp_path):
    from safetensors.numpy import load_file, save_file

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], dtype=np.int64), "c": np.ones((0, 4), np.float64)}
    save_safetensors(arrays, tmp_path / "ours.safetensors", metadata={"k": "v"})
    for k, v in load_file(str(tmp_path / "ours.safetensors")).items():
        np.testing.assert_array_equal(v, arrays[k])
    save_file(arrays, str(tmp_path / "theirs.safetensors"))
    for k, v in load_safetensors(tmp_path / "theirs.safetensors").items():
        np.testing.assert_array_equal(v, arrays[k])
        assert v.dtype == arrays[k].dtype


def test_bfloat16_is_read_as_float32(tmp_path):
    x = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # exact in bfloat16
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    (tmp_path / "bf16.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bits.tobytes())
    np.testing.assert_array_equal(load_safetensors(tmp_path / "bf16.safetensors")["w"], x)


def test_truncated_file_names_file_and_tensor(tmp_path):
    save_model(make_model(), tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(ValueError, match=r"model\.safetensors: truncated file: tensor '[\w.]+' needs bytes"):
        load_model(tmp_path / "m")
    path.write_bytes(data[:5])
    with pytest.raises(ValueError, match=r"model\.safetensors: not a safetensors file"):
        load_model(tmp_path / "m")
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match=r"model\.safetensors: corrupt safetensors header"):
        load_model(tmp_path / "m")


def test_mismatched_file_names_file_and_tensor(tmp_path):
    save_model(make_model(), tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["n_kv_heads"] = 4  # the config now disagrees with the stored wk/wv shapes
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model\.safetensors: the weights do not match config\.json .*layers\.0\.attention\.wk\.weight: config gives \(32, 32\), file has \(16, 32\)"):
        load_model(tmp_path / "m")

    save_model(make_model(), tmp_path / "m2")
    tensors = load_safetensors(tmp_path / "m2" / "model.safetensors")
    del tensors["norm.weight"]
    tensors["extra.weight"] = np.zeros(3, np.float32)
    save_safetensors(tensors, tmp_path / "m2" / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: .*missing tensors \['norm\.weight'\].*unexpected tensors \['extra\.weight'\]"):
        load_model(tmp_path / "m2")


def test_bad_config_files(tmp_path):
    save_model(make_model(), tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "n_layer": 3}))
    with pytest.raises(ValueError, match=r"config\.json: .*unknown field.*n_layer"):
        load_model(tmp_path / "m")
    cfg_path.write_text(json.dumps({**cfg, "n_heads": 5}))
    with pytest.raises(ValueError, match=r"config\.json: ModelConfig\.dim"):
        load_model(tmp_path / "m")
    cfg_path.write_text("{")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        load_model(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "nowhere")
    cfg_path.write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(ValueError, match=r"config\.json: not a minillm model config .*'llama'.*\[.*'minillm-llama'.*\].*import_hf"):
        load_model(tmp_path / "m")


def test_io_finds_model_classes_through_the_registry(tmp_path):
    """io sits above models: save_model/load_model name no family, only minillm.models.MODEL_TYPES."""
    import ast
    import inspect

    import minillm.io.checkpoint as checkpoint
    from minillm.models import MODEL_TYPES

    tree = ast.parse(inspect.getsource(checkpoint))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "models" in imported and not [m for m in imported if m and m.startswith("models.")]  # the registry only
    assert MODEL_TYPES["minillm-llama"] == (ModelConfig, Transformer)
    with pytest.raises(TypeError, match=r"save_model: expected a registered model class .*Transformer.*got Linear"):
        save_model(nn.Linear(2, 2), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_model_config_dict_is_the_json_form_of_the_config():
    from dataclasses import dataclass
    from types import SimpleNamespace

    from minillm.io import model_config_dict

    model = make_model(n_kv_heads=np.int64(2))
    d = model_config_dict(model)
    assert d == json.loads(json.dumps(model.args.to_dict(), default=int))  # model.args: the book's name
    assert type(d["n_kv_heads"]) is int  # a NumPy number comes back as a Python number

    @dataclass
    class Cfg:
        dims: tuple = (1, 2)
        dtype: object = np.dtype("float32")

    assert model_config_dict(SimpleNamespace(config=Cfg())) == {"dims": [1, 2], "dtype": "float32"}  # as read back from JSON
    assert model_config_dict(SimpleNamespace(params=Cfg())) == {"dims": [1, 2], "dtype": "float32"}  # llama2.c's name
    assert model_config_dict(SimpleNamespace(config=SimpleNamespace(a=1))) is None  # not a config dataclass
    assert model_config_dict(nn.Linear(2, 2)) is None


def test_rope_row_permutation_is_a_bijection():
    w = np.arange(2 * 8 * 3).reshape(16, 3)
    hf = permute_rope_rows_to_hf(w, n_heads=2)
    # head 0, HF row i (i < 4) is our row 2i; HF row 4 + i is our row 2i + 1
    assert hf[:, 0].tolist()[:8] == [0, 6, 12, 18, 3, 9, 15, 21]
    np.testing.assert_array_equal(permute_rope_rows_from_hf(hf, n_heads=2), w)


def test_hf_layout_roundtrip_offline(tmp_path):
    """No torch needed: export writes HF names and import_hf restores the identical model."""
    model = make_model(tie_word_embeddings=False)
    export_hf(model, tmp_path / "hf", eos_token_id=2)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_key_value_heads"] == 2 and cfg["intermediate_size"] == model.args.ffn_hidden_dim
    names = set(load_safetensors(tmp_path / "hf" / "model.safetensors"))
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.self_attn.q_proj.weight",
            "model.layers.0.mlp.down_proj.weight", "model.layers.0.post_attention_layernorm.weight"} <= names
    back = import_hf(tmp_path / "hf")
    np.testing.assert_array_equal(back(X).logits.data, model(X).logits.data)
    assert back.args.tie_word_embeddings is False


def test_json_metadata_files_fail_with_the_file_named(tmp_path):
    """Every JSON file minillm reads (configs, checkpoint state, adapter config, sidecars) goes
    through read_json_object: a damaged file is a ValueError naming it, never a json traceback."""
    from minillm.data.pretrain import read_token_file_info
    from minillm.io.jsonfile import read_json_object
    from minillm.peft import PeftModel
    from minillm.train.checkpoint import read_checkpoint

    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    assert read_json_object(good) == {"a": 1}
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"list\.json: expected a JSON object, got a JSON list"):
        read_json_object(tmp_path / "list.json")
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(ValueError, match=r"latin1\.json: not valid JSON"):
        read_json_object(tmp_path / "latin1.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.json: no such file \(hint\)"):
        read_json_object(tmp_path / "missing.json", " (hint)")

    ckpt = tmp_path / "step_1"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"trainer_state\.json: not valid JSON"):
        read_checkpoint(str(ckpt))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('"r=8"')
    with pytest.raises(ValueError, match=r"adapter_config\.json: expected a JSON object"):
        PeftModel.from_pretrained(make_model(), str(adapter))
    (tmp_path / "tokens.bin.json").write_text("")
    with pytest.raises(ValueError, match=r"tokens\.bin\.json: not valid JSON"):
        read_token_file_info(tmp_path / "tokens.bin")

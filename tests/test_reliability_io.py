"""Issue 25, loaders: nothing read outside the folder (3), no silent garbage (4), bounded cost (5),
no half-written model directories (2). Each class is tried with several variants."""
import json
import math
import os
import struct

import numpy as np
import pytest

import minillm as mi
from minillm.io import export_hf, import_hf, load_model, load_safetensors, save_model, save_safetensors
from minillm.io.guards import resolve_inside
from minillm.models.llama import ModelConfig, Transformer
from minillm.peft import LoraConfig, get_peft_model
from _helpers import scramble

V = 64
SMALL = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=V, max_seq_len=32)


def make_model(**kw):
    model = Transformer(ModelConfig(**{**SMALL, **kw}))
    return scramble(model, 0.2, vectors=0.2)


def write_raw_safetensors(path, header: dict, data: bytes):
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)


# ------------------------------------------------------------------ 4. safetensors headers
@pytest.mark.parametrize("entry, message", [
    ({"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8]}, r"data_offsets \[0\.0, 8\]"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, "8"]}, r"data_offsets"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [True, 8]}, r"data_offsets"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, r"data_offsets"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}, r"data_offsets"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0]}, r"data_offsets"),
    ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, r"shape \[-2\]"),
    ({"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}, r"shape \[2\.0\]"),
    ({"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}, r"shape '2'"),
    ({"dtype": "F32", "shape": [2, -1, -4], "data_offsets": [0, 8]}, r"shape"),
    ({"dtype": 5, "shape": [2], "data_offsets": [0, 8]}, r"unsupported dtype 5"),
    ({"dtype": "F32", "shape": [2]}, r"malformed header entry"),
    ({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, r"needs 12 bytes"),
    ({"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}, r"needs \d+ bytes"),
])
def test_safetensors_bad_header_entries_are_named(tmp_path, entry, message):
    path = tmp_path / "w.safetensors"
    write_raw_safetensors(path, {"w": entry}, b"\0" * 8)
    with pytest.raises(ValueError, match=rf"w\.safetensors: tensor 'w' .*{message}"):
        load_safetensors(path)


@pytest.mark.parametrize("b_offsets", [[0, 8], [4, 12], [0, 16]])
def test_safetensors_overlapping_tensors_are_refused(tmp_path, b_offsets):
    path = tmp_path / "w.safetensors"
    n = (b_offsets[1] - b_offsets[0]) // 4
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [n], "data_offsets": b_offsets}}
    write_raw_safetensors(path, header, b"\0" * 16)
    with pytest.raises(ValueError, match=r"w\.safetensors: tensors .* overlap"):
        load_safetensors(path)


def test_safetensors_adjacent_and_empty_tensors_still_load(tmp_path):
    path = tmp_path / "w.safetensors"
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    write_raw_safetensors(path, header, np.arange(4, dtype=np.float32).tobytes())
    out = load_safetensors(path)
    assert out["b"].tolist() == [2.0, 3.0] and out["e"].shape == (0,)


def test_safetensors_bad_metadata_is_named(tmp_path):
    path = tmp_path / "w.safetensors"
    write_raw_safetensors(path, {"__metadata__": {"format": 1}}, b"")
    with pytest.raises(ValueError, match="__metadata__"):
        load_safetensors(path)


# ------------------------------------------------------------------ 4. float parameters from non-float tensors
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.uint8, np.int8])
def test_load_model_refuses_non_float_tensors(tmp_path, dtype):
    save_model(make_model(), tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    tensors = load_safetensors(path)
    tensors["norm.weight"] = np.ones(tensors["norm.weight"].shape, dtype=dtype)
    save_safetensors(tensors, path)
    with pytest.raises(ValueError, match=r"model\.safetensors: .*norm\.weight .*not floating point"):
        load_model(tmp_path / "m")


def test_import_hf_refuses_non_float_tensors(tmp_path):
    export_hf(make_model(), tmp_path / "hf")
    path = tmp_path / "hf" / "model.safetensors"
    tensors = load_safetensors(path)
    tensors["model.norm.weight"] = np.ones(32, dtype=np.int64)
    save_safetensors(tensors, path)
    with pytest.raises(ValueError, match=r"not floating point"):
        import_hf(tmp_path / "hf")


def test_float16_and_bfloat16_sources_still_load(tmp_path):
    model = make_model()
    save_model(model, tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    tensors = {k: v.astype(np.float16) for k, v in load_safetensors(path).items()}
    save_safetensors(tensors, path)
    back = load_model(tmp_path / "m")
    assert np.allclose(back.norm.weight.data, model.norm.weight.data, atol=1e-2)


# ------------------------------------------------------------------ 4. HF config: strict JSON types
def _hf_dir(tmp_path, **config_changes):
    export_hf(make_model(tie_word_embeddings=False), tmp_path / "hf")
    cfg_path = tmp_path / "hf" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for k, v in config_changes.items():
        if v is KeyError:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    cfg_path.write_text(json.dumps(cfg))
    return tmp_path / "hf"


@pytest.mark.parametrize("field, value", [
    ("tie_word_embeddings", "false"), ("tie_word_embeddings", "true"), ("tie_word_embeddings", 0),
    ("tie_word_embeddings", 1), ("attention_bias", "false"), ("mlp_bias", 0),
    ("hidden_size", 32.0), ("hidden_size", "32"), ("hidden_size", True), ("num_hidden_layers", 2.5),
    ("vocab_size", -1), ("num_attention_heads", None), ("max_position_embeddings", 1e12),
    ("rms_norm_eps", "1e-5"), ("rms_norm_eps", True), ("rms_norm_eps", 0), ("rope_theta", -1.0),
    ("intermediate_size", [88]), ("head_dim", 8.0), ("rope_parameters", "default"),
])
def test_import_hf_refuses_mistyped_config_fields(tmp_path, field, value):
    d = _hf_dir(tmp_path, **{field: value, **({"rope_parameters": KeyError} if field == "rope_theta" else {})})
    with pytest.raises(ValueError, match=rf"config\.json: .*{field}"):
        import_hf(d)


def test_import_hf_tie_false_keeps_lm_head(tmp_path):
    model = make_model(tie_word_embeddings=False)
    export_hf(model, tmp_path / "hf")
    back = import_hf(tmp_path / "hf")
    assert back.args.tie_word_embeddings is False
    assert np.array_equal(back.output.weight.data, model.output.weight.data)


@pytest.mark.parametrize("field, value", [("rms_norm_eps", float("inf")), ("rope_theta", float("inf")),
                                          ("rms_norm_eps", float("nan"))])
def test_import_hf_refuses_non_finite_config_values(tmp_path, field, value):
    d = _hf_dir(tmp_path, **{field: value, "rope_parameters": KeyError})
    with pytest.raises(ValueError, match=rf"{field}.* finite"):
        import_hf(d)


# ------------------------------------------------------------------ 4. ModelConfig and forward
@pytest.mark.parametrize("field, value", [
    ("norm_eps", math.inf), ("norm_eps", math.nan), ("norm_eps", -1e-5), ("norm_eps", True), ("norm_eps", "1e-5"),
    ("rope_theta", math.inf), ("rope_theta", math.nan), ("rope_theta", 0), ("rope_theta", False),
    ("dropout", math.nan), ("dropout", True),
])
def test_model_config_refuses_non_finite_or_mistyped_floats(field, value):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}"):
        ModelConfig(**{**SMALL, field: value})


def test_load_model_refuses_infinite_norm_eps_in_config(tmp_path):
    save_model(make_model(), tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg_path.write_text(cfg_path.read_text().replace('"norm_eps": 1e-05', '"norm_eps": Infinity'))
    with pytest.raises(ValueError, match=r"config\.json: ModelConfig\.norm_eps"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize("k", [-1, -5, 1.0, True, "1", None])
def test_logits_to_keep_must_be_a_non_negative_int(k):
    model = make_model()
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(mi.tensor(np.zeros((1, 4), dtype=np.int64)), logits_to_keep=k)


@pytest.mark.parametrize("k", [0, 1, 3, np.int64(2)])
def test_logits_to_keep_valid_values(k):
    out = make_model()(mi.tensor(np.zeros((1, 4), dtype=np.int64)), logits_to_keep=k)
    assert out.logits.shape == (1, int(k) or 4, V)


# ------------------------------------------------------------------ 5. config checked against the header first
@pytest.mark.parametrize("field, value", [
    ("vocab_size", 10**9), ("dim", 2**20), ("n_layers", 10**6), ("hidden_dim", 10**9), ("max_seq_len", 10**12),
    ("n_layers", 1), ("vocab_size", V + 1),
])
def test_load_model_checks_config_against_weights_before_allocating(tmp_path, field, value):
    save_model(make_model(), tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[field] = value
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"(do not match config\.json|max_seq_len)"):
        load_model(tmp_path / "m")  # a MemoryError or a minutes-long allocation would fail this test


@pytest.mark.parametrize("field, value", [("vocab_size", 10**9), ("hidden_size", 2**20), ("num_hidden_layers", 10**6),
                                          ("max_position_embeddings", 10**12)])
def test_import_hf_checks_config_against_weights_before_allocating(tmp_path, field, value):
    d = _hf_dir(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=r"(do not match config\.json|max_seq_len|head_dim)"):
        import_hf(d)


# ------------------------------------------------------------------ 3. nothing outside the folder
def _sharded(tmp_path, model=None):
    """An HF directory with two shards and an index, as transformers writes it."""
    model = model or make_model(tie_word_embeddings=False)
    export_hf(model, tmp_path / "hf")
    d = tmp_path / "hf"
    tensors = load_safetensors(d / "model.safetensors")
    os.remove(d / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_safetensors({k: tensors[k] for k in keys}, d / shard)
        weight_map.update({k: shard for k in keys})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return d, model


def _set_shard(d, tensor_index, value):
    idx_path = d / "model.safetensors.index.json"
    idx = json.loads(idx_path.read_text())
    key = sorted(idx["weight_map"])[tensor_index]
    idx["weight_map"][key] = value
    idx_path.write_text(json.dumps(idx))


def test_sharded_import_still_works(tmp_path):
    d, model = _sharded(tmp_path)
    back = import_hf(d)
    assert np.array_equal(back.output.weight.data, model.output.weight.data)


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.safetensors", "sub/../../outside.safetensors",
                                  "..", "", "C:/x.safetensors"])
def test_shard_names_outside_the_folder_are_refused(tmp_path, name):
    d, _ = _sharded(tmp_path)
    save_safetensors({"x": np.zeros(2, np.float32)}, tmp_path / "outside.safetensors")
    _set_shard(d, 0, name)
    with pytest.raises(ValueError, match=r"index\.json: .*refused"):
        import_hf(d)


@pytest.mark.parametrize("name", [3, None, ["model-00001-of-00002.safetensors"], {"a": 1}, True])
def test_non_string_shard_names_are_refused(tmp_path, name):
    d, _ = _sharded(tmp_path)
    _set_shard(d, 0, name)
    with pytest.raises(ValueError, match=r"index\.json: .*expected a string"):
        import_hf(d)


def test_symlinked_shard_leading_outside_is_refused(tmp_path):
    d, _ = _sharded(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shard = d / "model-00001-of-00002.safetensors"
    os.replace(shard, outside / shard.name)
    os.symlink(outside / shard.name, shard)
    with pytest.raises(ValueError, match="outside .*symlink"):
        import_hf(d)


def test_hf_cache_layout_with_symlinks_into_blobs_is_accepted(tmp_path):
    """The Hugging Face cache: snapshots/<rev>/* are symlinks into ../../blobs (index included)."""
    d, model = _sharded(tmp_path)
    blobs = tmp_path / "blobs"
    snap = tmp_path / "snapshots" / "abc"
    blobs.mkdir()
    snap.mkdir(parents=True)
    for f in os.listdir(d):
        os.replace(d / f, blobs / f)
        os.symlink(os.path.join("..", "..", "blobs", f), snap / f)
    back = import_hf(snap)
    assert np.array_equal(back.norm.weight.data, model.norm.weight.data)


def test_shard_with_tensors_the_index_does_not_list_is_refused(tmp_path):
    d, _ = _sharded(tmp_path)
    idx_path = d / "model.safetensors.index.json"
    idx = json.loads(idx_path.read_text())
    first = sorted(idx["weight_map"])[0]
    other = "model-00002-of-00002.safetensors" if idx["weight_map"][first].startswith("model-00001") else \
        "model-00001-of-00002.safetensors"
    idx["weight_map"][first] = other  # the index now says the tensor lives in the other shard
    idx_path.write_text(json.dumps(idx))
    with pytest.raises(ValueError, match="does not map to it"):
        import_hf(d)


def test_resolve_inside_accepts_plain_names(tmp_path):
    (tmp_path / "sub").mkdir()
    assert resolve_inside(tmp_path, "a.safetensors", "idx") == os.path.join(os.path.realpath(tmp_path), "a.safetensors")
    assert resolve_inside(tmp_path, "sub/a.safetensors", "idx").endswith(os.path.join("sub", "a.safetensors"))


# ------------------------------------------------------------------ 2. save_model with injected LoRA
@pytest.mark.parametrize("save", [save_model, export_hf])
def test_saving_a_model_with_injected_lora_is_refused(tmp_path, save):
    base = make_model()
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["wq"]))
    for obj in (base, peft):
        with pytest.raises(ValueError, match=r"merge_and_unload\(\).*save_pretrained"):
            save(obj, tmp_path / "m")
    assert not (tmp_path / "m" / "model.safetensors").exists()
    merged = peft.merge_and_unload()
    save(merged, tmp_path / "m")  # the advice works
    assert (tmp_path / "m" / "model.safetensors").exists()

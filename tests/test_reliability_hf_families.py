"""Issue 25's guards hold for every Hugging Face family, not just LLaMA: strict JSON types in
config.json, no casting of integer tensors into float parameters, no export of LoRA-injected models."""
import json

import numpy as np
import pytest

import minillm as mi
from minillm.io import export_hf_bert, export_hf_gpt2, export_hf_t5, import_hf_bert, import_hf_gpt2, import_hf_t5
from minillm.io.safetensors import load_safetensors, save_safetensors
from minillm.models.bert import BertConfig, BertForMaskedLM
from minillm.models.gpt import GPT, GPTConfig
from minillm.models.t5 import T5Config, T5ForConditionalGeneration
from minillm.nn.lora import LoraConfig, inject_adapter_in_model


def _models():
    mi.manual_seed(0)
    return {
        "gpt2": (GPT(GPTConfig(vocab_size=40, max_seq_len=16, n_embd=16, n_layer=1, n_head=2)), export_hf_gpt2, import_hf_gpt2),
        "t5": (T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)),
               export_hf_t5, import_hf_t5),
        "bert": (BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=32, max_position_embeddings=16)), export_hf_bert, import_hf_bert),
    }


FIELD = {"gpt2": ("n_embd", "tie_word_embeddings"), "t5": ("d_model", "tie_word_embeddings"), "bert": ("hidden_size", None)}


@pytest.mark.parametrize("family", ["gpt2", "t5", "bert"])
def test_mistyped_config_fields_are_refused(tmp_path, family):
    model, export, load = _models()[family]
    export(model, tmp_path)
    assert load(tmp_path) is not None  # the untouched export loads
    cfg = json.loads((tmp_path / "config.json").read_text())
    size, flag = FIELD[family]
    for key, bad in [(size, "16"), (size, 16.0)] + ([(flag, "false")] if flag else []):
        c = dict(cfg, **{key: bad})
        (tmp_path / "config.json").write_text(json.dumps(c))
        with pytest.raises(ValueError, match=key):
            load(tmp_path)


@pytest.mark.parametrize("family", ["gpt2", "t5", "bert"])
def test_integer_tensors_are_not_cast_into_float_parameters(tmp_path, family):
    model, export, load = _models()[family]
    export(model, tmp_path)
    tensors = load_safetensors(str(tmp_path / "model.safetensors"))
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[name] = tensors[name].astype(np.int32)
    save_safetensors(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="not floating point"):
        load(tmp_path)


@pytest.mark.parametrize("family", ["gpt2", "t5", "bert"])
def test_exporting_a_model_with_lora_layers_is_refused(tmp_path, family):
    model, export, _ = _models()[family]
    target = next(n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear")
    inject_adapter_in_model(LoraConfig(r=2, target_modules=[target]), model)
    with pytest.raises(ValueError, match="LoRA layers injected"):
        export(model, tmp_path)


@pytest.mark.parametrize("family", ["gpt2", "t5", "bert"])
def test_a_bin_checkpoint_is_never_read(tmp_path, family):
    model, export, load = _models()[family]
    export(model, tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")  # unpickling one can run code
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors \(\.bin checkpoints are not read"):
        load(tmp_path)

"""Our adapter files and Hugging Face ``peft``'s, on the ``export_hf`` model (optional: skipped
without torch/transformers/peft).

``export_hf_adapter`` must write a directory ``peft.PeftModel.from_pretrained`` loads onto
``LlamaForCausalLM.from_pretrained(export_hf dir)`` with the same logits as our adapted model,
and ``import_hf_adapter`` must read what ``peft``'s own ``save_pretrained`` wrote. The RoPE
permutation of ``export_hf`` (pairs -> halves) is what these tests catch when it is forgotten:
on LoRA's B for wq/wk and on the prefix keys.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import minillm as mi  # noqa: E402
from minillm.io import export_hf  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from minillm.peft import (  # noqa: E402
    LLAMA_ALL_LINEAR_TARGETS, BottleneckConfig, LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig,
    export_hf_adapter, get_peft_model, import_hf_adapter,
)
from _helpers import scramble  # noqa: E402


V, TOL = 96, 1e-4


def random_model():
    mi.manual_seed(0)
    model = Transformer(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=V, max_seq_len=48))
    return scramble(model, 0.2, vectors=(0.5, 1.5)).eval()  # every weight matters for the logits


def randomize(peft_model, std=0.3):
    """Non-zero adapter weights (B = 0 at init would make every test pass trivially)."""
    for _, p in peft_model.named_parameters():
        if p.requires_grad:
            p.data[...] = np.random.default_rng(p.data.size).normal(0.0, std, p.shape)
    return peft_model.eval()


def hf_base(tmp_path):
    base = random_model()
    export_hf(base, tmp_path / "hf")
    return transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()


def torch_logits(model, ids):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long)).logits.numpy()
    return logits[:, -ids.shape[1]:]  # peft's prompt tuning also returns logits at the P virtual positions


IDS = np.random.default_rng(1).integers(0, V, size=(2, 20))


@pytest.mark.parametrize("config", [
    LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LLAMA_ALL_LINEAR_TARGETS),
    LoraConfig(r=2, lora_alpha=16, lora_dropout=0.1, target_modules=["layers.1.attention.wq", "wk"]),
    PrefixTuningConfig(num_virtual_tokens=5),
    PromptTuningConfig(num_virtual_tokens=4),
    PromptEncoderConfig(num_virtual_tokens=3, encoder_hidden_size=8),
], ids=["lora_all", "lora_some", "prefix", "prompt", "ptuning"])
def test_our_adapter_loads_in_peft_with_the_same_logits(tmp_path, config):
    ours = randomize(get_peft_model(random_model(), config))
    export_hf_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "hf"))
    theirs = peft.PeftModel.from_pretrained(hf_base(tmp_path), tmp_path / "adapter").eval()
    want = ours(IDS).logits.data
    assert np.abs(want - random_model()(IDS).logits.data).max() > 1e-2  # the adapter changes the logits
    diff = np.abs(torch_logits(theirs, IDS) - want).max()
    assert diff <= TOL, diff


@pytest.mark.parametrize("kind", ["lora", "prefix", "prompt"])
def test_peft_saved_adapter_imports_with_the_same_logits(tmp_path, kind):
    hf = hf_base(tmp_path)
    if kind == "lora":
        cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                              init_lora_weights=False, task_type="CAUSAL_LM")  # random A and B
    elif kind == "prefix":
        cfg = peft.PrefixTuningConfig(num_virtual_tokens=5, task_type="CAUSAL_LM")
    else:
        cfg = peft.PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")
    torch.manual_seed(0)
    theirs = peft.get_peft_model(hf, cfg)
    with torch.no_grad():
        for n, p in theirs.named_parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.3)
    theirs.save_pretrained(tmp_path / "peft_adapter")
    want = torch_logits(theirs.eval(), IDS)
    ours = import_hf_adapter(random_model(), tmp_path / "peft_adapter")
    assert not any(p.requires_grad for p in ours.parameters())  # inference by default, as peft
    diff = np.abs(ours(IDS).logits.data - want).max()
    assert diff <= TOL, diff


def test_round_trip_and_refusals(tmp_path):
    lora = randomize(get_peft_model(random_model(), LoraConfig(r=3, lora_dropout=0.0, target_modules=["wq", "w2"])))
    export_hf_adapter(lora, tmp_path / "a")
    back = import_hf_adapter(random_model(), tmp_path / "a")
    assert np.array_equal(back(IDS).logits.data, lora(IDS).logits.data)
    assert sorted(back.targeted_module_names) == sorted(lora.targeted_module_names)
    with pytest.raises(ValueError, match="BottleneckConfig has no counterpart"):
        export_hf_adapter(get_peft_model(random_model(), BottleneckConfig(bottleneck_dim=4)), tmp_path / "b")
    with pytest.raises(ValueError, match="bias='all'"):
        export_hf_adapter(get_peft_model(random_model(), LoraConfig(bias="all")), tmp_path / "c")
    lora.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        export_hf_adapter(lora, tmp_path / "d")
    with pytest.raises(TypeError, match="PeftModel"):
        export_hf_adapter(random_model(), tmp_path / "e")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        import_hf_adapter(random_model(), tmp_path / "missing")

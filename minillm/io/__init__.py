"""Weights on disk, as data only (never executable): our own model directories and Hugging Face's.

    from minillm.io import save_model, load_model, export_hf, import_hf
    save_model(model, "ckpt/")                 # config.json + model.safetensors
    model = load_model("ckpt/")
    export_hf(model, "hf/")                    # LlamaForCausalLM.from_pretrained("hf/") loads it
    model = import_hf("hf/")

Layering: ``io`` sits *above* ``models`` (it imports them; no model imports ``io``).
``checkpoint.py`` reaches model classes only through the registry ``minillm.models.MODEL_TYPES``;
the ``hf*.py`` files are the per-family Hugging Face mappings (``hf.py`` LLaMA <-> HF Llama,
``hf_bert.py`` BERT/RoBERTa/ALBERT <-> their ``*ForMaskedLM``, ``hf_gpt2.py`` GPT <-> GPT2LMHeadModel,
``hf_t5.py`` T5 <-> T5ForConditionalGeneration) and ``shapes_extra.py`` (the
config-vs-header shapes of GLM and DeepSeek) are the only files here that import a family module. ``safetensors.py`` and ``jsonfile.py`` know no model at all.
"""
from .checkpoint import load_model, model_config_dict, save_model
from .hf import export_hf, import_hf
from .hf_bert import export_hf_bert, import_hf_bert
from .hf_gpt2 import export_hf_gpt2, import_hf_gpt2
from .hf_t5 import export_hf_t5, import_hf_t5
from .safetensors import load_safetensors, save_safetensors
from . import shapes_extra  # noqa: F401  (registers GLM's and DeepSeek's STATE_SHAPES)

__all__ = [
    "save_model", "load_model", "model_config_dict", "export_hf", "import_hf", "export_hf_bert", "import_hf_bert",
    "export_hf_gpt2", "import_hf_gpt2",
    "export_hf_t5", "import_hf_t5", "load_safetensors", "save_safetensors",
]

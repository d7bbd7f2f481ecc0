"""Weights on disk, as data only (never executable): our own model directories and Hugging Face's.

    from minillm.io import save_model, load_model, export_hf, import_hf
    save_model(model, "ckpt/")                 # config.json + model.safetensors
    model = load_model("ckpt/")
    export_hf(model, "hf/")                    # LlamaForCausalLM.from_pretrained("hf/") loads it
    model = import_hf("hf/")

Layering: ``io`` sits *above* ``models`` (it imports them; no model imports ``io``).
``checkpoint.py`` reaches model classes only through the registry ``minillm.models.MODEL_TYPES``;
``hf.py`` is the per-family Hugging Face mapping (LLaMA <-> HF Llama) and the one file here that
imports a family module. ``safetensors.py`` and ``jsonfile.py`` know no model at all.
"""
from .checkpoint import load_model, model_config_dict, save_model
from .hf import export_hf, import_hf
from .hf_bert import export_hf_bert, import_hf_bert  # noqa: F401  (BERT, RoBERTa, ALBERT)
from .safetensors import load_safetensors, save_safetensors

__all__ = ["save_model", "load_model", "model_config_dict", "export_hf", "import_hf", "load_safetensors", "save_safetensors"]

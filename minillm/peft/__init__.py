"""``minillm.peft``: parameter-efficient fine-tuning (Happy LLM 6.3), the ``peft`` API on ``minillm.nn``.

=========================  =====================================  ===============================
method (6.3.1, 6.3.2)      config                                 file
=========================  =====================================  ===============================
LoRA                       ``LoraConfig``                         ``nn/lora.py`` + ``peft/model.py``
Houlsby adapters           ``BottleneckConfig``                   ``nn/adapter.py`` + ``peft/model.py``
prefix tuning              ``PrefixTuningConfig``                 ``peft/prompt.py``
prompt tuning              ``PromptTuningConfig``                 ``peft/prompt.py``
P-tuning                   ``PromptEncoderConfig``                ``peft/prompt.py``
QLoRA                      ``LoraConfig`` on ``quantize_model``   ``nn/quant.py`` + ``nn/lora.py``
=========================  =====================================  ===============================

One entry point for all of them: ``model = get_peft_model(model, config)``; then
``print_trainable_parameters()``, ``save_pretrained(dir)`` and ``PeftModel.from_pretrained(base, dir)``
(adapter_model.safetensors + adapter_config.json: data only, nothing executable).
``export_hf_adapter`` / ``import_hf_adapter`` (``peft/hf.py``) convert LoRA, prefix and prompt
adapters to and from Hugging Face ``peft``'s layout for the ``minillm.io.export_hf`` model.
"""
from ..nn.adapter import AdapterLinear, BottleneckConfig, bottleneck_param_formula
from ..nn.quant import Linear4bit, Linear8bit, NF4_CODE, quantize_model
from .model import (  # noqa: F401
    ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, LLAMA_ALL_LINEAR_TARGETS, LLAMA_ATTENTION_TARGETS, LoraConfig,
    LoRALinear, PeftModel, book_lora_param_count, find_target_modules, get_peft_model, inject_adapter_in_model,
    lora_param_formula,
)
from .quantize import load_quantized, save_quantized
from .hf import export_hf_adapter, import_hf_adapter
from .prompt import (  # noqa: F401
    PeftModelForCausalLM, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, prompt_param_formula,
)

__all__ = [
    "PeftModel", "PeftModelForCausalLM", "get_peft_model", "ADAPTER_WEIGHTS_NAME", "ADAPTER_CONFIG_NAME",
    "LoraConfig", "LoRALinear", "find_target_modules", "inject_adapter_in_model", "lora_param_formula",
    "book_lora_param_count", "LLAMA_ATTENTION_TARGETS", "LLAMA_ALL_LINEAR_TARGETS",
    "BottleneckConfig", "AdapterLinear", "bottleneck_param_formula",
    "PrefixTuningConfig", "PromptTuningConfig", "PromptEncoderConfig", "prompt_param_formula",
    "quantize_model", "Linear8bit", "Linear4bit", "NF4_CODE", "save_quantized", "load_quantized",
    "export_hf_adapter", "import_hf_adapter",
]

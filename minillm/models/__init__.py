"""Models of the book: ``llama`` (ch. 5.1, LLaMA2), ``gpt`` (ch. 3.3.1, GPT-2), ``t5`` (ch. 3.2.1)."""
from .gpt import GPT, GPTConfig  # noqa: F401
from .llama import ModelConfig, Transformer  # noqa: F401
from .t5 import T5Config, T5ForConditionalGeneration  # noqa: F401

#: Every model family ``minillm.io.save_model`` / ``load_model`` can write and read:
#: ``"model_type"`` (stored in config.json) -> (config class, model class). A new family adds
#: one line here; ``io`` (the layer above) never names a family's class itself.
MODEL_TYPES = {
    "minillm-llama": (ModelConfig, Transformer),
    "minillm-gpt": (GPTConfig, GPT),
    "minillm-t5": (T5Config, T5ForConditionalGeneration),
}

__all__ = ["ModelConfig", "Transformer", "GPTConfig", "GPT", "T5Config", "T5ForConditionalGeneration", "MODEL_TYPES"]

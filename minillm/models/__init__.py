"""Models of the book, one file per family: ``transformer`` (ch. 2), ``bert`` / ``roberta`` /
``albert`` (ch. 3.1), ``t5`` (ch. 3.2.1), ``gpt`` (ch. 3.3.1), ``glm`` (ch. 3.3.3), ``deepseek`` (ch. 3.3.4), ``llama`` (ch. 5.1, LLaMA2)."""
from .albert import AlbertConfig, AlbertForPreTraining
from .bert import BertConfig, BertForPreTraining
from .deepseek import DeepseekConfig, DeepseekForCausalLM
from .glm import GLM, GLMConfig
from .gpt import GPT, GPTConfig
from .llama import ModelConfig, Transformer
from .roberta import RobertaConfig, RobertaForMaskedLM
from .t5 import T5Config, T5ForConditionalGeneration

#: Every model family ``minillm.io.save_model`` / ``load_model`` can write and read:
#: ``"model_type"`` (stored in config.json) -> (config class, model class). A new family adds
#: one line here; ``io`` (the layer above) never names a family's class itself.
MODEL_TYPES = {
    "minillm-llama": (ModelConfig, Transformer),
    "minillm-gpt": (GPTConfig, GPT),
    "minillm-glm": (GLMConfig, GLM),
    "minillm-deepseek": (DeepseekConfig, DeepseekForCausalLM),
    "minillm-t5": (T5Config, T5ForConditionalGeneration),
    "minillm-bert": (BertConfig, BertForPreTraining),
    "minillm-roberta": (RobertaConfig, RobertaForMaskedLM),
    "minillm-albert": (AlbertConfig, AlbertForPreTraining),
}

__all__ = [
    "ModelConfig", "Transformer", "GPTConfig", "GPT", "GLMConfig", "GLM", "DeepseekConfig", "DeepseekForCausalLM", "T5Config", "T5ForConditionalGeneration", "BertConfig",
    "BertForPreTraining", "RobertaConfig", "RobertaForMaskedLM", "AlbertConfig", "AlbertForPreTraining", "MODEL_TYPES",
]

"""Models of the book: ``llama`` (ch. 5.1, LLaMA2)."""
from .albert import AlbertConfig, AlbertForPreTraining  # ch. 3.1.3
from .bert import BertConfig, BertForPreTraining  # ch. 3.1.1
from .llama import ModelConfig, Transformer  # noqa: F401
from .roberta import RobertaConfig, RobertaForMaskedLM  # ch. 3.1.2

#: Every model family ``minillm.io.save_model`` / ``load_model`` can write and read:
#: ``"model_type"`` (stored in config.json) -> (config class, model class). A new family adds
#: one line here; ``io`` (the layer above) never names a family's class itself.
MODEL_TYPES = {
    "minillm-llama": (ModelConfig, Transformer),
    "minillm-bert": (BertConfig, BertForPreTraining),
    "minillm-roberta": (RobertaConfig, RobertaForMaskedLM),
    "minillm-albert": (AlbertConfig, AlbertForPreTraining),
}

__all__ = ["ModelConfig", "Transformer", "MODEL_TYPES"]

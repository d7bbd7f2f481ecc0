"""Models of the book: ``llama`` (ch. 5.1, LLaMA2)."""
from .llama import ModelConfig, Transformer  # noqa: F401

__all__ = ["ModelConfig", "Transformer"]

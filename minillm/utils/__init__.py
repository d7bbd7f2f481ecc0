"""``minillm.utils``: helpers under ``torch.utils``'s names.

    checkpoint.py   checkpoint(fn, *args): recompute activations in backward (gradient checkpointing)
"""
from .checkpoint import checkpoint

__all__ = ["checkpoint"]

"""What every model's config dataclass shares: ``to_dict`` / ``from_dict`` (the JSON in a
model directory's ``config.json``) and ``preset`` (named CPU-friendly sizes).

    @dataclass
    class GPTConfig(ConfigMixin):
        PRESETS: ClassVar[dict] = {"tiny": dict(n_embd=128, n_layer=4, n_head=4)}
        n_embd: int = 768
        ...

Each config still validates its own fields in ``__post_init__`` (``ValueError`` naming the field).
"""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import ClassVar

__all__ = ["ConfigMixin"]


class ConfigMixin:
    #: name -> field overrides; a config class without named sizes leaves it empty
    PRESETS: ClassVar[dict] = {}

    @classmethod
    def preset(cls, name: str, **overrides):
        """A named size (see ``PRESETS``) with any field overridden."""
        if name not in cls.PRESETS:
            raise ValueError(f"{cls.__name__}.preset: unknown preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """The config from a dict such as ``to_dict()`` wrote; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)

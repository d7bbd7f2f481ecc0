"""Small JSON metadata files (model configs, checkpoint state, sidecars), read with errors
that name the file instead of a traceback from inside the json module."""
from __future__ import annotations

import json
import os

__all__ = ["read_json_object"]


def read_json_object(path, missing_hint: str = "") -> dict:
    """The JSON object stored in ``path``.

    Raises FileNotFoundError (``"<path>: no such file" + missing_hint``) when it does not
    exist, and ValueError naming the file when it is not valid UTF-8 JSON or not an object.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file{missing_hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got a JSON {type(data).__name__}")
    return data

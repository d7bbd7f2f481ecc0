"""Optimizer state to disk as data only: arrays for safetensors, the rest for JSON.

``optimizer.state_dict()`` mixes arrays (Adam's moments) with small values (step
counts, hyperparameters). ``flatten_state_dict`` splits them::

    arrays = {"state.0.exp_avg": ndarray, "state.0.exp_avg_sq": ndarray, ...}
    meta   = {"format": "minillm.optim/1",
              "param_groups": [{"lr": 0.001, "betas": [0.9, 0.999], ..., "params": [0, 1]}],
              "state": {"0": {"scalars": {"step": 3}, "arrays": ["exp_avg", "exp_avg_sq"]}, ...}}

    from safetensors.numpy import save_file, load_file
    save_file(arrays, "optimizer.safetensors"); json.dump(meta, f)
    ...
    optimizer.load_state_dict(unflatten_state_dict(load_file("optimizer.safetensors"), meta))

``unflatten_state_dict(*flatten_state_dict(sd))`` equals ``sd`` (tuples come back as
lists; ``load_state_dict`` turns ``betas`` back into a tuple).
"""
from __future__ import annotations

import numpy as np

__all__ = ["flatten_state_dict", "unflatten_state_dict", "to_json_value"]

FORMAT = "minillm.optim/1"


def to_json_value(value):
    """NumPy scalars -> Python numbers, tuples -> lists, recursively; refuses anything else exotic."""
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in JSON metadata: {value!r}")


def flatten_state_dict(state_dict: dict, prefix: str = "") -> tuple:
    """``state_dict`` -> ``(arrays, meta)``: ``dict[str, ndarray]`` for safetensors and a JSON-able dict.

    ``prefix`` is prepended to every array name (e.g. ``"optim."`` to share a file with
    the model's weights).
    """
    arrays: dict = {}
    state_meta: dict = {}
    for idx, pstate in state_dict["state"].items():
        scalars, names = {}, []
        for key, value in pstate.items():
            if "." in str(key):
                raise ValueError(f"state key {key!r} contains '.', which the flat array names use as separator")
            if isinstance(value, np.ndarray):
                arrays[f"{prefix}state.{int(idx)}.{key}"] = np.ascontiguousarray(value)
                names.append(key)
            else:
                scalars[key] = to_json_value(value)
        state_meta[str(int(idx))] = {"scalars": scalars, "arrays": names}
    meta = {
        "format": FORMAT,
        "param_groups": to_json_value(state_dict["param_groups"]),
        "state": state_meta,
    }
    return arrays, meta


def unflatten_state_dict(arrays: dict, meta: dict, prefix: str = "") -> dict:
    """Inverse of ``flatten_state_dict``; names a missing array clearly."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"optimizer metadata has format {meta.get('format')!r}, expected {FORMAT!r}")
    state = {}
    for idx, entry in meta["state"].items():
        pstate = dict(entry["scalars"])
        for key in entry["arrays"]:
            name = f"{prefix}state.{idx}.{key}"
            if name not in arrays:
                raise ValueError(f"optimizer checkpoint is missing array {name!r}")
            pstate[key] = np.asarray(arrays[name])
        state[int(idx)] = pstate
    return {"state": state, "param_groups": [dict(g) for g in meta["param_groups"]]}

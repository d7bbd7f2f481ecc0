"""The layer diagram in docs/ARCHITECTURE.md is the truth: every import in ``minillm/`` points
down it (or sideways, within one line of it), never up.

The test reads the diagram itself (the ```layers block), so the picture a learner reads and
the rule the code obeys cannot drift apart. Imports inside functions count too: a lazy
import is still a dependency.
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "minillm"
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def read_layers() -> list[list[str]]:
    """The diagram's lines, top first, each as the dotted module prefixes it names
    (``minillm/train/`` -> ``minillm.train``, ``minillm/cli.py`` -> ``minillm.cli``)."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"```layers\n(.*?)```", text, re.S)
    assert m, "docs/ARCHITECTURE.md must hold the layer diagram in a ```layers block"
    layers = []
    for line in m.group(1).splitlines():
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0].split()
        mods = [n.rstrip("/").removesuffix(".py").replace("/", ".") for n in names if n.startswith("minillm/")]
        if mods:
            layers.append(mods)
    return layers


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(node, current: str, is_pkg: bool) -> list[str]:
    """Dotted names of the minillm modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "minillm"]
    if node.level:
        base = current.split(".") if is_pkg else current.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    if mod.split(".")[0] != "minillm":
        return []
    out = []
    for a in node.names:  # `from pkg import sub` loads pkg.sub when sub is a module
        sub = f"{mod}.{a.name}"
        p = ROOT / sub.replace(".", os.sep)
        out.append(sub if (p.with_suffix(".py").exists() or (p / "__init__.py").exists()) else mod)
    return out


def layer_of(mod: str, layers) -> int | None:
    best, best_len = None, -1
    for i, names in enumerate(layers):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and len(n) > best_len:
                best, best_len = i, len(n)
    return best


def facade_layer(layers) -> int:
    """``minillm/__init__.py`` (``import minillm as mi``) re-exports the public API: it stands on
    the highest layer it imports, and a module may use ``mi.`` only from that layer or above."""
    init = PKG / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    targets = [t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
               for t in resolve(node, "minillm", is_pkg=True) if t != "minillm"]
    return min(layer_of(t, layers) for t in targets)


def library_modules():
    for path in sorted(PKG.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


def test_the_diagram_names_every_module():
    layers = read_layers()
    missing = [module_name(p) for p in library_modules() if module_name(p) != "minillm" and layer_of(module_name(p), layers) is None]
    assert not missing, f"modules missing from the layer diagram in docs/ARCHITECTURE.md: {missing}"


def test_every_import_points_down_the_diagram():
    layers = read_layers()
    facade = facade_layer(layers)
    upward = []
    for path in library_modules():
        current = module_name(path)
        if current == "minillm":  # the package facade re-exports the public API from every layer
            continue
        here = layer_of(current, layers)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in resolve(node, current, path.name == "__init__.py"):
                if target == "minillm":  # the facade sits as high as the highest layer it imports
                    if facade < here:
                        upward.append(f"{current}:{node.lineno} imports the package facade `minillm`, which imports {layers[facade]} above it")
                    continue
                there = layer_of(target, layers)
                if there is not None and here is not None and there < here:
                    upward.append(f"{current}:{node.lineno} -> {target} (layer {layers[here]} imports {layers[there]}, which is above it)")
    assert not upward, "imports that point up the layer diagram:\n" + "\n".join(upward)


def test_the_checker_catches_an_upward_import(tmp_path):
    """The rule itself can fail: a lazy import of a higher layer is reported."""
    layers = read_layers()
    node = ast.parse("def f():\n    from ..train import Trainer\n").body[0].body[0]
    (target,) = resolve(node, "minillm.nn.layers", is_pkg=False)
    assert target in ("minillm.train", "minillm.train.Trainer") or target.startswith("minillm.train")
    assert layer_of("minillm.train", layers) < layer_of("minillm.nn.layers", layers)

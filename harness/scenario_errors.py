"""One-line messages for mistakes in a scenario file: ``FILE: PATH: got VALUE; allowed: WHAT``.

PATH is written the way the user sees the YAML (``backends[2].options.sync``), the
value is shown shortened, and "allowed" comes from the model or the validator.
"""
from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import InvalidInput


def reject_duplicate_keys(path: Path, node: Any) -> None:
    """safe_load keeps the last of two equal keys silently; a scenario must not."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise InvalidInput(f"{path}: line {key.start_mark.line + 1}: key {key.value!r} "
                                       f"appears twice in one mapping; allowed: each key once")
                seen.add(key.value)
            reject_duplicate_keys(path, value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            reject_duplicate_keys(path, item)


def format_error(path: Path, data: Any, exc: ValidationError, root: type[BaseModel]) -> str:
    """The first validation error as ``FILE: PATH: got VALUE; allowed: WHAT``."""
    err = exc.errors()[0]
    loc = list(err["loc"])
    dotted = _dotted(loc, data)
    value = short(err.get("input"))
    msg = str(err.get("msg", "")).replace("\n", " ")
    kind = err.get("type")
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_at(root, loc[:-1]))
        return f"{path}: {dotted}: unknown key; allowed keys here: {allowed}"
    if kind == "missing":
        return f"{path}: {dotted}: required key is missing"
    msg = msg.removeprefix("Value error, ").removeprefix("Input should be ").split(", unable to")[0]
    if kind == "model_type" or kind == "dict_type":
        msg = "a mapping of keys"
    if kind == "value_error" and isinstance(err.get("input"), dict):
        return f"{path}: {dotted}: {msg}"  # a rule across keys: the whole mapping is no help
    return f"{path}: {dotted}: got {value}; allowed: {msg}"


def _dotted(loc: list[Any], data: Any) -> str:
    """``['backends', 2, 'options', 'sync']`` -> ``backends[2].options.sync``; list indexes
    that pydantic adds for a scalar the user wrote (``workers: x``) are dropped."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            if isinstance(node, list):
                out += f"[{part}]"
                node = node[part] if part < len(node) else None
            continue
        out += ("." if out else "") + str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _fields_at(root: type[BaseModel], loc: list[Any]) -> list[str]:
    """Field names of the model found at ``loc`` below ``root`` (for unknown-key messages)."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = next((a for a in _type_args(field.annotation) if isinstance(a, type)
                      and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _type_args(annotation: Any) -> list[Any]:
    out = [annotation]
    for arg in typing.get_args(annotation):
        out.extend(_type_args(arg))
    return out


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def type_name(annotation: Any) -> str:
    """``Optional[bool]`` -> ``true or false (or null)``; ``int`` -> ``an integer``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and type(None) in typing.get_args(annotation):
        return type_name(args[0]) + " (or null)"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))

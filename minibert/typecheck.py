"""The declared types of a configuration dataclass, checked against what a JSON or TOML file gave.

A config file can hold any JSON value where a number is expected; without a check, ``"0.1"`` as a
dropout rate or ``"abc"`` as a list of labels travels on and fails far away (or worse, runs). Every
configuration dataclass (model, pooling, tasks, training) calls ``check_types`` first.
"""

from __future__ import annotations

import types
from dataclasses import fields
from typing import Any, Union, get_args, get_origin, get_type_hints


def type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` declares (an int is as good as a float; a bool is neither)."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(type_ok(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        args = get_args(hint)
        return isinstance(value, (list, tuple)) and all(type_ok(v, args[0]) for v in value) if args else \
            isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_types(obj: Any, where: str = "", skip: tuple[str, ...] = ()) -> None:
    """Every field of the dataclass ``obj`` (but ``skip``) holds its declared type, else a ValueError that
    names ``where`` the setting is and what it should be."""
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name not in skip and not type_ok(value, hints[f.name]):
            raise ValueError(f"{where}{f.name} must be {type_name(hints[f.name])}, got {value!r}")

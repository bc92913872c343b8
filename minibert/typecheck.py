"""The declared types of a configuration dataclass, checked against what a JSON or TOML file gave, and the
checks of its keys and values that every configuration shares (a choice among names, a number in a range).

A config file can hold any JSON value where a number is expected; without a check, ``"0.1"`` as a
dropout rate or ``"abc"`` as a list of labels travels on and fails far away (or worse, runs). Every
configuration dataclass (model, pooling, tasks, training) calls ``check_types`` first.
"""

from __future__ import annotations

import math
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


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def in_range(name: str, value: float | None, low: float, high: float = math.inf, low_open: bool = False,
             high_open: bool = False) -> None:
    """A finite number in [low, high] (open at an end where asked); None, a default left to the model, passes."""
    if value is None:
        return
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (math.isfinite(value) and above and below):
        bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {bounds}, got {value!r}")


def check_keys(raw: dict, cls: type, where: str) -> None:
    """A table's keys are the fields of its dataclass: an unknown one (a typo) is an error naming it, not a
    setting silently dropped."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")

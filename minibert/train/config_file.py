"""Reading a training configuration: a TOML or JSON file (or a dict), ``KEY=VALUE`` overrides from the
command line, and a one-line error for settings that moved since the file was written."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from minibert.files import read_json, read_text
from minibert.train.config import TrainConfig
from minibert.train.recipe import moved_note, old_keys
from minibert.typecheck import check_keys


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if path.suffix != ".toml":
        return read_json(path, "config file")
    text = read_text(path, "config file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: {e}") from e


def apply_override(raw: dict, assignment: str) -> None:
    """'steps=200', 'tasks.sts.loss_weight=2', 'freeze=["embeddings"]' (values parsed as JSON when they can be)."""
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} is not KEY=VALUE")
    key, text = assignment.split("=", 1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    parts = key.strip().split(".")
    if parts[0] == "tasks" and len(parts) >= 3:
        tasks = raw.get("tasks", [])
        by_name = {t.get("name"): t for t in tasks if isinstance(t, dict)} if isinstance(tasks, list) else {}
        if parts[1] not in by_name:
            raise ValueError(f"override {assignment!r}: no task named {parts[1]!r} (tasks: {list(by_name)})")
        target, parts = by_name[parts[1]], parts[2:]
    else:
        target = raw
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ValueError(f"override {assignment!r}: {part} is not a table of settings")
    target[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    """A configuration file (TOML or JSON) or ``base`` (a dict), with ``KEY=VALUE`` overrides applied."""
    raw = read_config_file(path) if path else json.loads(json.dumps(base or {}))  # a deep copy
    where = str(path or "configuration")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a configuration is a table of settings, got {type(raw).__name__}")
    for assignment in overrides:
        apply_override(raw, assignment)
    moved = old_keys(raw)
    if moved:
        raise ValueError(f"{where}: settings moved into tables: " + ", ".join(moved_note(k, raw[k]) for k in moved))
    check_keys(raw, TrainConfig, where)
    if "tasks" not in raw:
        raise ValueError(f"{path or 'configuration'}: no [[tasks]]")
    try:
        return TrainConfig(**raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e

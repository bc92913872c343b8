"""Reading the small JSON files of a model folder, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path


def read_text(path: str | Path, what: str = "file") -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path.read_text(encoding="utf-8")


def read_json(path: str | Path, what: str = "file") -> dict | list:
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def optional_json(path: str | Path) -> dict:
    """The JSON object in `path`, or {} when the file does not exist."""
    return read_json(path) if Path(path).is_file() else {}

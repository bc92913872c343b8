"""Reading what minibert is given: a model folder's small JSON files, text files of lines, .npy embeddings;
every error names the file (and the line)."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import numpy as np


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
    """The JSON in `path` (any value: ``json_object`` checks for an object), or {} when there is no such file."""
    return read_json(path) if Path(path).is_file() else {}


def json_object(path: Path) -> dict:
    """The JSON object in ``path``, {} when there is no such file."""
    raw = optional_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def split_lines(data: bytes, name: str, errors: str = "strict") -> list[str]:
    """UTF-8 bytes as lines, one entry a line; blank lines are kept (row i of the output is line i).
    Bytes that are not UTF-8 are an error naming ``name`` and the line (``errors="replace"``: replaced)."""
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{name}:{line}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line does not start a new one
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_lines(path: str, errors: str = "strict", option: str = "--input") -> list[str]:
    """The lines of a text file, as ``split_lines`` reads them. ``-`` is standard input; a pipe or a
    device (``<(cmd)``, /dev/stdin) is read as a stream like it; a folder is an error of its own. ``option``:
    the command-line option that names the file, for the errors."""
    if path == "-":
        try:
            return split_lines(sys.stdin.buffer.read(), "<stdin>", errors)
        except (OSError, AttributeError) as e:  # no readable standard input
            raise ValueError(f"{option} -: standard input cannot be read ({e})") from e
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{option} {path}: file not found")
    if file.is_dir():
        raise ValueError(f"{option} {path} is a folder, not a text file")
    try:
        with open(file, "rb") as f:  # a regular file, or a stream
            return split_lines(f.read(), path, errors)
    except OSError as e:  # unreadable: permissions, a broken pipe
        raise ValueError(f"{option} {path}: cannot be read ({e.strerror or e})") from e


def done_records(out: Path) -> list[Path]:
    """The done-chunk records of a ``minibert encode --input --output`` run writing ``out`` (its name escaped: it may
    hold characters glob reads as patterns)."""
    return list(out.parent.glob(glob.escape(out.name) + ".done-*"))


def job_record(out: Path) -> Path:
    """Where a ``minibert encode --input --output`` run writing ``out`` records its job (``minibert.corpus``)."""
    return out.with_name(out.name + ".job")


def unfinished(out: Path) -> list[Path]:
    """The records of an unfinished ``minibert encode --input --output`` run beside ``out``: its job, its chunks."""
    return [p for p in (job_record(out), *done_records(out)) if p.exists()]


def read_embeddings(path: str) -> np.ndarray:
    """A .npy of embeddings saved by `minibert encode`, memory-mapped (it may be larger than memory)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"embeddings file not found: {path}")
    left = unfinished(Path(path))
    if left:  # rows of chunks not yet encoded are zeros
        raise ValueError(f"{path}: a `minibert encode` run that has not finished writes it ({left[0].name} is "
                         "beside it): run it again to finish it")
    try:
        emb = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:  # not a .npy, truncated, or pickled objects
        raise ValueError(f"{path}: not a readable .npy array of embeddings ({e})") from e
    if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"{path}: expected a (rows, dim) float array of embeddings, got {emb.dtype} {emb.shape}")
    return emb

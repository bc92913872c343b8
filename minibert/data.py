"""Readers for the standard dataset formats. A malformed line is an error naming file and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class PairExample:
    a: str
    b: str
    label: float | int  # STS: gold score; NLI: class id


def open_lines(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            yield lineno, line.rstrip("\n").rstrip("\r")


def read_sts_tsv(path: str | Path) -> list[PairExample]:
    """STS Benchmark TSV: genre, source, year, id, score (0-5), sentence1, sentence2[, extra fields].

    Split on tabs only: quotes are literal text in STS-B.
    """
    examples = []
    for lineno, line in open_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise ValueError(f"{path}:{lineno}: expected at least 7 tab-separated fields, got {len(fields)}")
        try:
            score = float(fields[4])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: score {fields[4]!r} is not a number") from None
        if not 0.0 <= score <= 5.0:
            raise ValueError(f"{path}:{lineno}: score {score} is outside 0..5")
        examples.append(PairExample(fields[5], fields[6], score))
    return examples

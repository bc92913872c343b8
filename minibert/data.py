"""Readers for the standard dataset formats.

A malformed line is an error naming the file and line. ``skip_bad=True`` skips such lines instead,
and the reader warns with how many it skipped: nothing is ever dropped silently.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PairExample:
    a: str
    b: str
    label: float | int | str | None = None  # STS: gold score; NLI: class id or name; None: unlabelled


@dataclass
class TextExample:
    text: str
    label: int | str | None = None  # a class id (for "0", "1", ...) or a label name


@dataclass
class RetrievalPair:
    anchor: str  # a query, say
    positive: str  # what the anchor should retrieve
    negative: str | None = None  # optional: a hard negative, close to the anchor but wrong


@dataclass
class MaskedText:
    text: str
    fill: bool = False  # True: a user's text whose mask tokens the model fills in; False: text to be masked


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str] | None = None  # one BIO tag per word


def default_data_dir() -> Path:
    """The datasets folder the scripts read by default: $MINIBERT_DATA, else ``shared/data`` beside this
    checkout (the layout of the project's machines)."""
    env = os.environ.get("MINIBERT_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


class BadLineError(ValueError):
    """A line that does not fit the format; the message names file and line."""


def open_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, start=1):
            yield lineno, line.rstrip("\n").rstrip("\r")


class Skipper:
    """Raises on a bad line, or counts it when the caller asked to skip bad lines."""

    def __init__(self, path: str | Path, skip_bad: bool) -> None:
        self.path, self.skip_bad, self.skipped, self.first = Path(path), skip_bad, 0, ""

    def bad(self, lineno: int, why: str) -> None:
        message = f"{self.path}:{lineno}: {why}"
        if not self.skip_bad:
            raise BadLineError(message)
        self.skipped += 1
        self.first = self.first or message

    def report(self) -> None:
        if self.skipped:
            warnings.warn(f"{self.path}: skipped {self.skipped} bad line(s); the first: {self.first}", stacklevel=3)


def is_integer(text: str) -> bool:
    """'3' and '-1' are integers; '--3', '3.0', '٣' (str.isdigit says yes) and 'World' are not."""
    return re.fullmatch(r"-?[0-9]+", text) is not None


def label_value(text: str) -> int | str:
    """'3' -> 3 (a class id); anything else stays a label name."""
    text = text.strip()
    return int(text) if is_integer(text) else text


def read_sts_tsv(path: str | Path, skip_bad: bool = False) -> list[PairExample]:
    """STS Benchmark TSV: genre, source, year, id, score (0-5), sentence1, sentence2[, extra fields].

    Split on tabs only: quotes are literal text in STS-B.
    """
    skipper, examples = Skipper(path, skip_bad), []
    for lineno, line in open_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            skipper.bad(lineno, f"expected at least 7 tab-separated fields, got {len(fields)}")
            continue
        try:
            score = float(fields[4])
        except ValueError:
            skipper.bad(lineno, f"score {fields[4]!r} is not a number")
            continue
        if not 0.0 <= score <= 5.0:
            skipper.bad(lineno, f"score {score} is outside 0..5")
            continue
        examples.append(PairExample(fields[5], fields[6], score))
    skipper.report()
    return examples


def read_nli(path: str | Path, skip_bad: bool = False) -> list[PairExample]:
    """NLI pairs: TSV (premise, hypothesis, label id or name) or SNLI/MultiNLI jsonl
    (sentence1, sentence2, gold_label). Pairs whose gold label is '-' (no annotator consensus) are
    skipped and counted, as is customary for SNLI."""
    path = Path(path)
    skipper, examples, no_consensus = Skipper(path, skip_bad), [], 0
    jsonl = path.suffix in (".jsonl", ".json")
    for lineno, line in open_lines(path):
        if not line.strip():
            continue
        if jsonl:
            try:
                row = json.loads(line)
                a, b, label = row["sentence1"], row["sentence2"], row["gold_label"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                skipper.bad(lineno, f"not an NLI json line with sentence1, sentence2, gold_label ({e!r})")
                continue
        else:
            fields = line.split("\t")
            if len(fields) != 3:
                skipper.bad(lineno, f"expected 3 tab-separated fields (premise, hypothesis, label), got {len(fields)}")
                continue
            a, b, label = fields
        if str(label).strip() == "-":
            no_consensus += 1
            continue
        examples.append(PairExample(a, b, label_value(str(label))))
    skipper.report()
    if no_consensus:
        warnings.warn(f"{path}: left out {no_consensus} pair(s) with gold label '-' (no consensus)", stacklevel=2)
    return examples


def read_classification(path: str | Path, skip_bad: bool = False) -> list[TextExample]:
    """Sentence classification: TSV or CSV (by extension), text then label (an id or a name).

    A first line whose last field is 'label' is a header and is skipped (SST-2 has one, AG News not).
    """
    path = Path(path)
    skipper, examples = Skipper(path, skip_bad), []
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            rows = [(i, row) for i, row in enumerate(csv.reader(f), start=1)]
    else:
        rows = [(i, line.split("\t")) for i, line in open_lines(path)]
    for lineno, fields in rows:
        if lineno == 1 and fields and fields[-1].strip().lower() == "label":
            continue
        if not fields or fields == [""]:
            continue
        if len(fields) != 2:
            skipper.bad(lineno, f"expected 2 fields (text, label), got {len(fields)}")
            continue
        text, label = fields
        if not label.strip():
            skipper.bad(lineno, "empty label")
            continue
        examples.append(TextExample(text.strip(), label_value(label)))
    skipper.report()
    return examples


def read_pairs_tsv(path: str | Path, skip_bad: bool = False) -> list[RetrievalPair]:
    """Training pairs for retrieval: anchor, positive[, hard negative], tab-separated, no header."""
    skipper, examples = Skipper(path, skip_bad), []
    for lineno, line in open_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) not in (2, 3) or not all(f.strip() for f in fields):
            skipper.bad(lineno, f"expected 2 or 3 non-empty tab-separated fields (anchor, positive[, negative]), "
                                f"got {len(fields)}")
            continue
        examples.append(RetrievalPair(*fields))
    skipper.report()
    return examples


def read_text(path: str | Path, skip_bad: bool = False) -> list[MaskedText]:
    """Plain text for masked-language modelling, one document (a sentence, a paragraph) a line; blank lines
    are skipped. Any UTF-8 line is good text: ``skip_bad`` has nothing to skip."""
    return [MaskedText(line.strip()) for _, line in open_lines(path) if line.strip()]


def read_conll(path: str | Path, skip_bad: bool = False) -> list[TaggedSentence]:
    """CoNLL-2003 style: one token per line, columns `token ... TAG` (the tag last), sentences
    separated by blank lines, -DOCSTART- lines between documents."""
    skipper, sentences = Skipper(path, skip_bad), []
    words: list[str] = []
    tags: list[str] = []
    for lineno, line in [*open_lines(path), (-1, "")]:  # the sentinel blank line ends the last sentence
        if not line.strip():
            if words:
                sentences.append(TaggedSentence(words, tags))
            words, tags = [], []
            continue
        if line.startswith("-DOCSTART-"):
            continue
        fields = line.split()
        tag = fields[-1]
        if len(fields) < 2:
            skipper.bad(lineno, f"expected a token and a tag, got {line!r}")
            continue
        if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
            skipper.bad(lineno, f"tag {tag!r} is not a BIO tag")
            continue
        words.append(fields[0])
        tags.append(tag)
    skipper.report()
    return sentences

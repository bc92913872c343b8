"""A tokenizer's vocabulary: from tokenizer.json where the folder has one, else from the files its class reads
(BERT's and MPNet's vocab.txt, RoBERTa's vocab.json and merges.txt), read as transformers reads them.
"""

from __future__ import annotations

import base64
from pathlib import Path

from tokenizers import models

# Unicode's White_Space characters, which the tokenizers library's trim drops (Python's rstrip() drops U+001C to
# U+001F too)
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + \
    "\u2028\u2029\u202f\u205f\u3000"


def read_vocab_txt(path: Path) -> dict[str, int]:
    """vocab.txt: line i holds token i (trailing whitespace dropped, as the tokenizers library reads it). A token
    on two lines is an error naming both (transformers would silently keep the later one)."""
    vocab: dict[str, int] = {}
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines[:-1] if lines[-1] == "" else lines):
        token = line.rstrip(WHITESPACE)
        if token in vocab:
            raise ValueError(f"{path}:{i + 1}: duplicate token {token!r} (first on line {vocab[token] + 1})")
        vocab[token] = i
    return vocab


def vocabulary(folder: Path, model: str, data: dict) -> tuple[dict | list, list, bytes | None]:
    """(vocab, merges, XLM-R's character map) from tokenizer.json (``data``, {} when there is none), else from
    the class's vocabulary files."""
    path = folder / "tokenizer.json"
    if data:
        spec = data.get("model")
        if not isinstance(spec, dict) or spec.get("type", model) != model or "vocab" not in spec:
            raise ValueError(f"{path}: expected a {model} model (what this folder's tokenizer class reads), "
                             f"got {spec.get('type') if isinstance(spec, dict) else spec!r:.80}")
        vocab, merges = spec["vocab"], spec.get("merges") or []
        wanted = list if model == "Unigram" else dict
        if not isinstance(vocab, wanted) or not isinstance(merges, list):
            raise ValueError(f"{path}: the {model} model's vocab must be a {wanted.__name__} (and merges a list)")
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
        charsmap = None
        norm = data.get("normalizer") or {}
        for part in norm.get("normalizers", [norm]) if isinstance(norm, dict) else []:
            if isinstance(part, dict) and part.get("type") == "Precompiled" and "precompiled_charsmap" in part:
                charsmap = base64.b64decode(part["precompiled_charsmap"])
                break
        if model == "Unigram":
            vocab = [tuple(piece) if isinstance(piece, list) else piece for piece in vocab]
        return vocab, merges, charsmap
    try:
        if model == "WordPiece" and (folder / "vocab.txt").is_file():
            return read_vocab_txt(folder / "vocab.txt"), [], None
        if model == "BPE" and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            vocab, merges = models.BPE.read_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
            return vocab, merges, None
    except Exception as e:  # the Rust readers raise plain Exceptions
        raise ValueError(f"{folder}: the vocabulary files cannot be read ({e})") from e
    wanted = {"WordPiece": "tokenizer.json or vocab.txt", "BPE": "tokenizer.json, or vocab.json and merges.txt",
              "Unigram": "tokenizer.json (minibert does not read sentencepiece.bpe.model)"}[model]
    raise FileNotFoundError(f"no tokenizer files in {folder}: its tokenizer needs {wanted}")

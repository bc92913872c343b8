"""WordPiece tokenization through the `tokenizers` library, plus padding into tensors.

A folder's ``tokenizer.json`` is used as is. A folder with only ``vocab.txt`` gets the standard BERT
pipeline built from it (BERT normaliser, BERT pre-tokenizer, WordPiece, [CLS] ... [SEP] template).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Encoding, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as BackendTokenizer

from minibert.files import optional_json

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")  # the first four must be in every vocabulary


# sentence-transformers' config of its Transformer module: the current name first, then the older
# per-family names it still reads.
MODULE_CONFIG_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                       "sentence_camembert_config.json", "sentence_albert_config.json",
                       "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")


def read_tokenizer_config(path: Path) -> dict:
    """``tokenizer_config.json`` (or {}), its settings that minibert reads checked; ``pad_token`` as a string
    (transformers may save a token as {"content": ...})."""
    raw = optional_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, got {type(raw).__name__}")
    for key, allowed in (("do_lower_case", (bool,)), ("tokenize_chinese_chars", (bool,)),
                         ("strip_accents", (bool, type(None)))):
        if not isinstance(raw.get(key, True), allowed):
            raise ValueError(f"{path}: {key} must be true or false, got {raw[key]!r}")
    pad = raw.get("pad_token", "[PAD]")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    if not isinstance(pad, str):
        raise ValueError(f"{path}: pad_token must be a token (a string), got {raw['pad_token']!r}")
    return {**raw, "pad_token": pad}


def module_config(folder: Path) -> tuple[dict, Path | None]:
    """The Transformer module's config (``sentence_bert_config.json`` or an older name) and its path."""
    for name in MODULE_CONFIG_FILES:
        if (folder / name).is_file():
            raw = optional_json(folder / name)
            if not isinstance(raw, dict):
                raise ValueError(f"{folder / name}: expected a JSON object, got {type(raw).__name__}")
            return raw, folder / name
    return {}, None


def read_max_length(folder: Path, max_positions: int | None = None) -> int:
    """The length (in tokens, specials included) at which sentence-transformers truncates this folder's
    inputs, read as it reads it, from every form of the folder:

    1. ``model_max_length`` among the module config's tokenizer arguments (``processor_kwargs``, or the
       older ``tokenizer_args``, which wins when both are there), if set;
    2. else the module config's ``max_seq_length`` (what sentence-transformers wrote before version 6);
    3. else ``tokenizer_config.json``'s ``model_max_length`` (where version 6 keeps it, and what a plain
       Hugging Face folder has), capped at the model's ``max_position_embeddings``.

    A limit of 1. or 2. beyond the model's positions is capped there, with a warning: sentence-transformers
    would fail on such inputs instead of cutting them. ``max_positions``: the tokens the model's position
    embeddings hold (fewer than max_position_embeddings for RoBERTa and MPNet), when the caller knows it.
    """
    config, config_path = module_config(folder)
    model_config = optional_json(folder / "config.json")
    positions = model_config.get("max_position_embeddings", 512) if isinstance(model_config, dict) else 512
    if not isinstance(positions, int) or isinstance(positions, bool):  # the model's own load rejects it
        positions = 512
    positions = max_positions or positions
    kwargs = (config["tokenizer_args"] if "tokenizer_args" in config else config.get("processor_kwargs")) or {}
    candidates = [(kwargs.get("model_max_length") if isinstance(kwargs, dict) else None, config_path,
                   "processor_kwargs.model_max_length"),
                  (config.get("max_seq_length"), config_path, "max_seq_length")]
    for value, source, key in candidates:
        if value is not None:
            return checked_length(value, source, key, positions)
    tok_config = read_tokenizer_config(folder / "tokenizer_config.json")
    value = tok_config.get("model_max_length")
    if value is None or (isinstance(value, (int, float)) and value > positions):  # "unlimited" is 1e30 there
        return checked_length(positions, folder / "config.json", "max_position_embeddings", positions)
    return checked_length(value, folder / "tokenizer_config.json", "model_max_length", positions)


def checked_length(value, source: Path, key: str, positions) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise ValueError(f"{source}: {key} must be an integer >= 2 (room for [CLS] and [SEP]), got {value!r}")
    if value > positions:
        warnings.warn(f"{source}: {key} {value} exceeds the model's max_position_embeddings {positions}; "
                      f"inputs are cut at {positions} tokens", stacklevel=3)
        return positions
    return value


class TruncationWarning(UserWarning):
    """Some inputs were longer than the tokenizer's max_length and were cut."""


@dataclass
class Batch:
    """Padded model inputs. ``word_ids[i][t]`` is the word of token t of text i (None for specials and pads)."""

    input_ids: torch.Tensor  # (B, L) int64
    attention_mask: torch.Tensor  # (B, L) int64, 1 = real token
    token_type_ids: torch.Tensor  # (B, L) int64, 0 = first segment, 1 = second
    word_ids: list[list[int | None]]

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device),
                     self.token_type_ids.to(device), self.word_ids)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The model inputs as a dict of tensors (what ``MultiTaskModel.forward`` reads)."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "token_type_ids": self.token_type_ids}


def wordpiece_from_vocab(vocab_path: Path, lowercase: bool = True, strip_accents: bool | None = None,
                         chinese_chars: bool = True) -> BackendTokenizer:
    """The BERT tokenizer pipeline, built from a plain ``vocab.txt`` (line i holds token i)."""
    vocab: dict[str, int] = {}
    for i, line in enumerate(vocab_path.read_text(encoding="utf-8").split("\n")):
        token = line.rstrip("\r")
        if not token and i == len(vocab):  # allow the trailing newline
            continue
        if token in vocab:
            raise ValueError(f"{vocab_path}:{i + 1}: duplicate token {token!r} (first on line {vocab[token] + 1})")
        vocab[token] = i
    for special in SPECIAL_TOKENS[:4]:
        if special not in vocab:
            raise ValueError(f"{vocab_path}: special token {special} is missing from the vocabulary")
    tok = BackendTokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    # Special tokens written in the text ("[CLS] a [SEP]") stay one token each, as tokenizer.json files
    # and transformers' BertTokenizer have it: matched before the normaliser (which would lower-case
    # them) and the pre-tokenizer (which would split off the brackets).
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS if t in vocab])
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=chinese_chars,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


class Tokenizer:
    """Turns text into padded ``Batch``es; truncates to ``max_length`` tokens (specials included)."""

    TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

    def __init__(self, backend: BackendTokenizer, max_length: int, pad_token: str = "[PAD]",
                 source: Path | None = None, lowercase_input: bool = False) -> None:
        pad_id = backend.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in the tokenizer's vocabulary")
        self.backend = backend
        self.pad_id = pad_id
        self.source = source  # the folder it was read from: `save` copies its files verbatim
        self.lowercase_input = lowercase_input  # sentence_bert_config.json's do_lower_case, applied to raw text
        # We pad ourselves (after sorting by length) and truncate to our own limit, whatever the
        # tokenizer.json was saved with.
        backend.no_padding()
        self.max_length = max_length

    @property
    def max_length(self) -> int:
        return self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        """Kept in one place: the limit we report and the backend's truncation must never disagree."""
        if value < 2:
            raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {value}")
        self._max_length = int(value)
        self.backend.enable_truncation(self._max_length)

    @classmethod
    def from_pretrained(cls, folder: str | Path, max_length: int | None = None,
                        max_positions: int | None = None) -> Tokenizer:
        """``max_length``: the limit (default: read as sentence-transformers reads it); ``max_positions``: the
        most the model holds, which the limit read from the folder never exceeds."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder not found: {folder}")
        tok_config = read_tokenizer_config(folder / "tokenizer_config.json")
        if (folder / "tokenizer.json").is_file():
            try:
                backend = BackendTokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as e:  # the Rust side raises plain Exceptions
                raise ValueError(f"{folder / 'tokenizer.json'}: cannot be read as a tokenizer ({e})") from e
        elif (folder / "vocab.txt").is_file():
            backend = wordpiece_from_vocab(folder / "vocab.txt", lowercase=tok_config.get("do_lower_case", True),
                                           strip_accents=tok_config.get("strip_accents"),
                                           chinese_chars=tok_config.get("tokenize_chinese_chars", True))
        else:
            raise FileNotFoundError(f"no tokenizer.json or vocab.txt in {folder}")
        sbert, sbert_path = module_config(folder)
        lowercase = sbert.get("do_lower_case", False)
        if not isinstance(lowercase, bool):
            raise ValueError(f"{sbert_path}: do_lower_case must be true or false, got {lowercase!r}")
        if max_length is None:
            max_length = read_max_length(folder, max_positions)
        return cls(backend, max_length, pad_token=tok_config["pad_token"], source=folder,
                   lowercase_input=lowercase)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @property
    def special_ids(self) -> set[int]:
        """The ids of the special tokens ([CLS], [SEP], <s>, </s>, [PAD], ...)."""
        return {i for i, token in self.backend.get_added_tokens_decoder().items() if token.special}

    def encode(self, texts: list[str] | list[tuple[str, str]] | list[list[str]], is_pretokenized: bool = False,
               warn_truncation: bool = True) -> list[Encoding]:
        """Tokenize without padding. Texts may be strings, (a, b) pairs, or word lists (pretokenized)."""
        if self.lowercase_input:  # as sentence-transformers does, before the tokenizer's own normaliser
            texts = [[w.lower() for w in t] if is_pretokenized else
                     (t.lower() if isinstance(t, str) else tuple(x.lower() for x in t)) for t in texts]
        encodings = self.backend.encode_batch(texts, is_pretokenized=is_pretokenized) if texts else []
        truncated = [i for i, e in enumerate(encodings) if e.overflowing]
        if truncated and warn_truncation:
            warnings.warn(f"{len(truncated)} input(s) longer than {self.max_length} tokens were truncated "
                          f"(first at index {truncated[0]})", TruncationWarning, stacklevel=2)
        return encodings

    def split_words(self, text: str) -> list[str]:
        """Words as BERT's pre-tokenizer sees them (split at whitespace and punctuation)."""
        return [w for w, _ in self.backend.pre_tokenizer.pre_tokenize_str(text)]

    def pad(self, encodings: list[Encoding]) -> Batch:
        """Right-pad a list of encodings to the longest one into int64 tensors."""
        L = max((len(e.ids) for e in encodings), default=0)
        ids = np.full((len(encodings), L), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), L), dtype=np.int64)
        types = np.zeros((len(encodings), L), dtype=np.int64)
        for i, e in enumerate(encodings):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = 1
            types[i, :n] = e.type_ids
        word_ids = [e.word_ids + [None] * (L - len(e.ids)) for e in encodings]
        return Batch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types), word_ids)

    def __call__(self, texts: list[str] | list[tuple[str, str]] | list[list[str]],
                 is_pretokenized: bool = False) -> Batch:
        return self.pad(self.encode(texts, is_pretokenized=is_pretokenized))

    def save(self, folder: str | Path) -> None:
        """Write the tokenizer files: the originals when we have them (so every library reads them
        exactly as before), else tokenizer.json from the backend."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        copied = [name for name in self.TOKENIZER_FILES if self.source and (self.source / name).is_file()]
        for name in copied:
            if (self.source / name).resolve() != (folder / name).resolve():
                shutil.copyfile(self.source / name, folder / name)
        if not copied:
            data = json.loads(self.backend.to_str())
            data["truncation"] = data["padding"] = None
            (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

"""Text to padded token ids, through the `tokenizers` library.

A folder's tokenizer files are read as transformers 5 reads them (``minibert.tokenizer_files``: the tokenizer
class rebuilds its pipeline from tokenizer_config.json around the vocabulary), and a sentence-transformers
folder's own settings (``sentence_bert_config.json``: the token limit, ``do_lower_case``) are laid on top,
as sentence-transformers lays them. We pad ourselves, on the right, after sorting by length.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Encoding, normalizers
from tokenizers import Tokenizer as BackendTokenizer

from minibert import tokenizer_files
from minibert.files import optional_json
from minibert.pipeline import TASKS, TransformerSettings, read_pipeline

# transformers' clean-up of decoded text (clean_up_tokenization_spaces), in its order
CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
UNLIMITED = 1e20  # transformers treats a model_max_length above this as "no limit" (its default is 1e30)


def token_limit(folder: Path, settings: TransformerSettings, spec: tokenizer_files.TokenizerSpec,
                capacity: int) -> int:
    """The length (in tokens, specials included) at which sentence-transformers truncates this folder's
    inputs, read as it reads it, from every form of the folder:

    1. ``model_max_length`` among the module config's tokenizer arguments (``processor_kwargs``, or the
       older ``tokenizer_args``), if the key is there (null: no limit);
    2. else the module config's ``max_seq_length`` (what sentence-transformers wrote before version 6);
    3. else ``tokenizer_config.json``'s ``model_max_length`` (where version 6 keeps it, and what a plain
       Hugging Face folder has), capped at config.json's ``max_position_embeddings``.

    A limit beyond what the model's positions hold (``capacity``, ``position_capacity``; fewer than
    max_position_embeddings for RoBERTa and MPNet) is cut there, with a warning for 1. and 2.:
    sentence-transformers would fail on such inputs instead of cutting them.
    """
    if "model_max_length" in settings.tokenizer:  # (then sentence-transformers does not read max_seq_length)
        value = settings.tokenizer["model_max_length"]
        value = int(UNLIMITED) if value is None else value  # null: transformers' default, no limit
        return checked_length(value, settings.path, "processor_kwargs.model_max_length", capacity)
    if settings.max_seq_length is not None:
        return checked_length(settings.max_seq_length, settings.path, "max_seq_length", capacity)
    value = spec.model_max_length
    if value is None or value > UNLIMITED or value > capacity:
        return checked_length(capacity, folder / "config.json", "max_position_embeddings", capacity)
    return checked_length(value, folder / "tokenizer_config.json", "model_max_length", capacity)


def position_capacity(folder: Path, max_positions: int | None = None) -> int:
    """The most tokens the model takes: config.json's max_position_embeddings, or fewer (``max_positions``)."""
    config = optional_json(folder / "config.json")
    positions = config.get("max_position_embeddings", 512) if isinstance(config, dict) else 512
    if not isinstance(positions, int) or isinstance(positions, bool):  # the model's own load rejects it
        positions = 512
    return min(positions, max_positions or positions)


def checked_length(value, source: Path | None, key: str, capacity: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise ValueError(f"{source}: {key} must be an integer >= 2 (room for [CLS] and [SEP]), got {value!r}")
    if value > capacity:
        warnings.warn(f"{source}: {key} {value} exceeds the {capacity} tokens the model's positions hold; "
                      f"inputs are cut at {capacity} tokens", stacklevel=3)
        return capacity
    return value


def has_lowercase(normalizer) -> bool:
    """Whether a Lowercase normaliser is at the top of the pipeline (sentence-transformers' test)."""
    if isinstance(normalizer, normalizers.Lowercase):
        return True
    return isinstance(normalizer, normalizers.Sequence) and any(isinstance(n, normalizers.Lowercase)
                                                                for n in normalizer)


def check_padding_side(tokenizer: Tokenizer, position_skip_id: int | None) -> None:
    """A folder whose tokenizer pads on the left, refused where that changes what the references compute.

    minibert pads every batch on the right. Where the model numbers its positions over the real tokens only,
    skipping the pad id (RoBERTa, XLM-R, MPNet: ``position_skip_id``), where the padding sits moves no token,
    and left padding gives the embeddings right padding does: taken. Where a position is a column of the
    padded batch (BERT, DistilBERT: ``position_skip_id`` None), or the tokenizer pads with another id than the
    one positions skip, left padding moves a shorter sentence's tokens to later positions, so what the
    references give for a sentence depends on the longest sentence batched with it: refused."""
    if tokenizer.padding_side != "left":
        return
    where = f"{tokenizer.padding_source or tokenizer.source or 'tokenizer'}: padding_side 'left'"
    if position_skip_id is None:
        raise ValueError(f"{where} in a model whose positions are the columns of the padded batch (BERT, "
                         "DistilBERT): a shorter sentence's tokens would sit at later positions, so its embedding "
                         "would depend on the longest sentence in its batch. minibert pads on the right; set "
                         "padding_side to 'right'")
    if tokenizer.pad_id != position_skip_id:
        raise ValueError(f"{where} in a model whose positions skip token id {position_skip_id} (config.json's "
                         f"pad_token_id; MPNet's is 1), but the tokenizer pads with id {tokenizer.pad_id} "
                         f"({tokenizer.pad_token!r}): its pads would take positions, "
                         "so a sentence's embedding would depend on the longest sentence in its batch. minibert "
                         "pads on the right; set padding_side to 'right'")


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


class Tokenizer:
    """Turns text into padded ``Batch``es; truncates to ``max_length`` tokens (specials included)."""

    TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                       "special_tokens_map.json", "added_tokens.json")

    def __init__(self, backend: BackendTokenizer, max_length: int, pad_token: str = "[PAD]",
                 source: Path | None = None, do_lower_case: bool = False, special_tokens: tuple[str, ...] = (),
                 truncation_side: str = "right", overrides: dict | None = None, mask_token: str | None = None,
                 padding_side: str = "right", padding_source: str = "", token_types: bool = True,
                 task_lengths: dict[str, int] | None = None, clean_up_spaces: bool = False) -> None:
        pad_id = backend.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in the tokenizer's vocabulary")
        self.backend = backend
        self.pad_id, self.pad_token = pad_id, pad_token
        self.source = source  # the folder it was read from: `save` copies its files verbatim
        self.overrides = dict(overrides or {})  # settings laid over tokenizer_config.json's (the module config's)
        # sentence_bert_config.json's do_lower_case: sentence-transformers puts a Lowercase before the tokenizer's
        # own normaliser (unless one is there already). Special tokens written in the text ("[SEP]") are matched
        # before any normaliser, so they keep their case.
        self.do_lower_case = do_lower_case
        if do_lower_case and not has_lowercase(backend.normalizer):
            rest = [] if backend.normalizer is None else list(backend.normalizer) \
                if isinstance(backend.normalizer, normalizers.Sequence) else [backend.normalizer]
            backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), *rest])
        self.special_tokens = tuple(special_tokens)
        self.mask_token = mask_token  # [MASK] or <mask>: what masked-language-model pretraining hides tokens with
        self.truncation_side = truncation_side
        # the folder's side and the file that names it; every Batch is padded on the right whatever it says
        # (check_padding_side: a model that loads takes left padding only where that changes nothing)
        self.padding_side, self.padding_source = padding_side, padding_source
        # whether the model is given the token types (a pair's second segment 1) or, as transformers does where
        # model_input_names leaves them out, zeros
        self.token_types = token_types
        self.clean_up_spaces = clean_up_spaces  # decode: " ." -> "." and the like (clean_up_tokenization_spaces)
        self.task_lengths = dict(task_lengths or {})  # "query" -> the limit of encode_query's texts (module config)
        # the same tokenizer with a task's limit, by (task, limit): made at its first use, from this tokenizer as it
        # is then (a change to its backend later does not reach it; setting a task's limit anew makes another)
        self.task_tokenizers: dict[tuple[str, int], Tokenizer] = {}
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
        self.backend.enable_truncation(self._max_length, direction=self.truncation_side)

    @classmethod
    def from_pretrained(cls, folder: str | Path, max_length: int | None = None,
                        max_positions: int | None = None, module_settings: bool = True) -> Tokenizer:
        """The tokenizer of a model folder (a sentence-transformers folder's Transformer module, with its
        settings, unless ``module_settings`` is off: then the tokenizer files alone, as transformers'
        AutoTokenizer reads them). ``max_length``: the limit (default: read as sentence-transformers reads it);
        ``max_positions``: the most the model holds, which the limit read from the folder never exceeds."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder not found: {folder}")
        pipeline = read_pipeline(folder) if module_settings else None
        where, settings = (pipeline.transformer, pipeline.settings) if pipeline else (folder, TransformerSettings())
        config = optional_json(where / "config.json")
        model_type = config.get("model_type") if isinstance(config, dict) else None
        backend, spec = tokenizer_files.build(where, model_type, settings.tokenizer, settings.path)
        if spec.pad_token is None:
            raise ValueError(f"{where}: the tokenizer has no pad token (tokenizer_config.json names none), so it "
                             "cannot pad a batch")
        capacity = position_capacity(where, max_positions)
        if max_length is None:
            max_length = token_limit(where, settings, spec, capacity)
        task_lengths = {task: checked_length(length, settings.path, f"{task}_length", capacity)
                        for task, length in settings.task_lengths.items()}
        return cls(backend, max_length, spec.pad_token, source=where, do_lower_case=settings.do_lower_case,
                   special_tokens=tuple(spec.special_tokens), truncation_side=spec.truncation_side,
                   overrides=settings.tokenizer, mask_token=spec.mask_token, padding_side=spec.padding_side,
                   padding_source=spec.padding_source, token_types=spec.token_types, task_lengths=task_lengths,
                   clean_up_spaces=spec.clean_up_spaces)

    def for_task(self, task: str | None) -> Tokenizer:
        """The tokenizer for texts of a task ("query", "document"; None: none): itself, or, where the folder gives
        the task a token limit of its own (``query_length``), a copy that truncates there, as sentence-transformers
        truncates them (its ``max_length``, over the model's limit)."""
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)} or None, got {task!r}")
        if task not in self.task_lengths:
            return self
        key = task, self.task_lengths[task]
        if key not in self.task_tokenizers:  # (two threads may both make it: the same tokenizer either way)
            twin = copy.copy(self)
            twin.backend, twin.task_tokenizers = copy.deepcopy(self.backend), {}
            twin.max_length = key[1]
            self.task_tokenizers[key] = twin
        return self.task_tokenizers[key]

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @property
    def special_ids(self) -> set[int]:
        """The ids of the special tokens ([CLS], [SEP], <s>, </s>, [PAD], ...): those the files name, else
        (a tokenizer built in code) the added tokens marked special."""
        if self.special_tokens:
            return {i for i in map(self.backend.token_to_id, self.special_tokens) if i is not None}
        return {i for i, token in self.backend.get_added_tokens_decoder().items() if token.special}

    def encode(self, texts: list[str] | list[tuple[str, str]] | list[list[str]], is_pretokenized: bool = False,
               warn_truncation: bool = True) -> list[Encoding]:
        """Tokenize without padding. Texts may be strings, (a, b) pairs, or word lists (pretokenized)."""
        encodings = self.backend.encode_batch(texts, is_pretokenized=is_pretokenized) if texts else []
        truncated = [i for i, e in enumerate(encodings) if e.overflowing]
        if truncated and warn_truncation:
            warnings.warn(f"{len(truncated)} input(s) longer than {self.max_length} tokens were truncated "
                          f"(first at index {truncated[0]})", TruncationWarning, stacklevel=2)
        return encodings

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Token ids back to text, as transformers' tokenizer decodes them (its clean-up of spaces included)."""
        text = self.backend.decode(ids, skip_special_tokens=skip_special_tokens)
        if not self.clean_up_spaces:
            return text
        for spaced, joined in CLEAN_UP:
            text = text.replace(spaced, joined)
        return text

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
            types[i, :n] = e.type_ids if self.token_types else 0
        word_ids = [e.word_ids + [None] * (L - len(e.ids)) for e in encodings]
        return Batch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types), word_ids)

    def __call__(self, texts: list[str] | list[tuple[str, str]] | list[list[str]],
                 is_pretokenized: bool = False) -> Batch:
        return self.pad(self.encode(texts, is_pretokenized=is_pretokenized))

    def save(self, folder: str | Path) -> None:
        """Write the tokenizer files: the originals when we have them (so every library reads them
        exactly as before), else tokenizer.json from the backend and a tokenizer_config.json that says
        to run it as it is."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        copied = [name for name in self.TOKENIZER_FILES if self.source and (self.source / name).is_file()]
        for name in copied:
            if (self.source / name).resolve() != (folder / name).resolve():
                shutil.copyfile(self.source / name, folder / name)
        if not copied:
            tokenizer_files.write_config(self.backend, folder, self.pad_token, self.max_length, self.token_types)
        tokenizer_files.pad_on_the_right(folder)  # where a file says left: minibert pads on the right

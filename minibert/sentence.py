"""SentenceEncoder: BERT + SBERT pooling (+ L2 normalisation) behind a one-call ``encode``.

A sentence-transformers folder is a pipeline listed in ``modules.json``: a Transformer (the BERT
folder), a Pooling module (``1_Pooling/config.json``) and, optionally, Normalize. We read that list
and rebuild the same pipeline from minibert's own modules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minibert.files import read_json
from minibert.hub import DEFAULT_MODEL, resolve_model
from minibert.model import AttnImplementation, BertModel, eval_mode
from minibert.paths import check_path, convert, default_path
from minibert.pooling import Pooling, PoolingConfig
from minibert.tokenizer import Batch, Tokenizer


def read_modules(folder: Path) -> tuple[Path, Path | None, bool]:
    """(transformer folder, pooling folder or None, normalize?) from a folder's modules.json."""
    path = folder / "modules.json"
    if not path.is_file():  # a plain BERT folder: mean pooling, as sentence-transformers defaults to
        return folder, None, False
    modules = read_json(path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{path}: expected a list of modules ({{\"idx\", \"path\", \"type\"}}), got {modules!r:.80}")
    for i, module in enumerate(modules):
        if not (isinstance(module.get("type"), str) and isinstance(module.get("path", ""), str)
                and type(module.get("idx", 0)) is int):
            raise ValueError(f"{path}: module {i} needs a string type and path and an integer idx, got {module!r}")
    transformer, pooling, normalize = None, None, False
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = module["type"].rsplit(".", 1)[-1]
        if kind in ("Transformer", "Pooling") and (transformer if kind == "Transformer" else pooling) is not None:
            raise ValueError(f"{path}: lists more than one {kind} module")
        if kind == "Transformer":
            transformer = folder / module.get("path", "")
        elif kind == "Pooling":
            pooling = folder / module.get("path", "")
        elif kind == "Normalize":
            normalize = True
        else:
            raise ValueError(f"{path}: module {module.get('type')!r} (path {module.get('path')!r}) "
                             "is not supported by minibert (supported: Transformer, Pooling, Normalize)")
    if transformer is None:
        raise ValueError(f"{path}: lists no Transformer module")
    return transformer, pooling, normalize


class SentenceFeatures(NamedTuple):
    """What the encoder computes for a batch: every token's state and the sentence embedding."""

    token_states: torch.Tensor  # (B, L, C), the last hidden states (padding rows included)
    embedding: torch.Tensor  # (B, D), pooled over the real tokens (and L2-normalised if the model is)


class SentenceEncoder(nn.Module):
    """Text in, one vector per text out."""

    def __init__(self, bert: BertModel, tokenizer: Tokenizer, pooling: Pooling | None = None,
                 normalize: bool = False) -> None:
        super().__init__()
        self.bert = bert
        self.tokenizer = tokenizer
        self.pooling = pooling or Pooling()
        self.normalize = normalize  # True when the model was trained with a Normalize module
        if tokenizer.vocab_size > bert.config.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the model only "
                             f"{bert.config.vocab_size} embeddings")

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, attn_implementation: AttnImplementation = "sdpa",
                        path: str | None = None) -> SentenceEncoder:
        """A model folder (or a known model's name), loaded strictly. ``path`` is the execution path
        (``minibert.paths``): by default the fastest one that equals the reference on the device ("fast"
        on the CPU and CUDA); ``path="reference"`` runs ``model.py`` as written."""
        folder = resolve_model(name_or_path)
        transformer, pooling_folder, normalize = read_modules(folder)
        bert = BertModel.from_pretrained(transformer, dtype=dtype, device=device,
                                         attn_implementation=attn_implementation)
        tokenizer = Tokenizer.from_pretrained(transformer)
        pooling_config = PoolingConfig.from_json(pooling_folder / "config.json") if pooling_folder else PoolingConfig()
        dim = pooling_config.embedding_dimension
        if dim is not None and dim != bert.config.hidden_size:
            raise ValueError(f"{pooling_folder / 'config.json'}: embedding dimension {dim} does not match the "
                             f"model's hidden_size {bert.config.hidden_size}")
        encoder = cls(bert, tokenizer, Pooling(pooling_config), normalize).eval()
        return encoder.to_path(path or default_path(encoder.device))

    @property
    def path(self) -> str:
        """The execution path the encoder runs: "reference", "fast", "int8" or "compiled"."""
        return self.bert.path

    def to_path(self, path: str, **options) -> SentenceEncoder:
        """This encoder on another execution path (``minibert.paths.convert``; ``options`` are its): the same
        tokenizer and pooling, the weights shared. Itself when it runs that path already."""
        if path == self.path:
            return self
        encoder = SentenceEncoder(convert(self.bert, path, **options), self.tokenizer, self.pooling, self.normalize)
        return encoder.train(self.training)

    @property
    def embedding_dim(self) -> int:
        return self.pooling.output_dim(self.bert.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, normalize: bool | None = None) -> SentenceFeatures:
        """Token states and sentence embeddings from one encoder pass; differentiable, for training.
        Token-level heads read the first, sentence-level heads the second."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        emb = self.pooling(hidden, attention_mask)
        if self.normalize if normalize is None else normalize:
            emb = F.normalize(emb, p=2, dim=-1)
        return SentenceFeatures(hidden, emb)

    def forward(self, batch: Batch, normalize: bool | None = None) -> torch.Tensor:
        """Embeddings (B, D) for a tokenized batch."""
        return self.features(batch.input_ids, batch.attention_mask, batch.token_type_ids, normalize).embedding

    @torch.inference_mode()
    def encode(self, sentences: str | list[str], batch_size: int = 32, normalize_embeddings: bool | None = None,
               convert_to: Literal["numpy", "torch"] = "numpy", show_progress_bar: bool = False,
               device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               path: str | None = None) -> np.ndarray | torch.Tensor:
        """Embed sentences; row i of the result belongs to ``sentences[i]``.

        Sentences are tokenized once, then batched longest-first, so each batch pads to a similar
        length and little compute is spent on padding. ``normalize_embeddings=None`` follows the
        model folder (its Normalize module). ``device``/``dtype`` move the model, as
        sentence-transformers does. A single string gives a 1-D vector. ``path`` runs this call on another
        execution path (``minibert.paths``: "reference", "fast", "int8", "compiled"), converted for this
        call only; by default the encoder's own (``to_path`` keeps a converted encoder).
        """
        single = isinstance(sentences, str)
        sentences = [sentences] if single else list(sentences)
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise TypeError(f"sentences[{i}] is {type(s).__name__}, expected str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if convert_to not in ("numpy", "torch"):
            raise ValueError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}")
        if device is not None or dtype is not None:
            check_path(path or self.path, device or self.device, dtype or next(self.parameters()).dtype)
            self.to(device=device, dtype=dtype)
        model = self if path is None else self.to_path(path)
        with eval_mode(model):
            encodings = self.tokenizer.encode(sentences)
            order = sorted(range(len(sentences)), key=lambda i: -len(encodings[i].ids))
            out = torch.empty(len(sentences), self.embedding_dim, dtype=next(self.parameters()).dtype)
            starts = range(0, len(sentences), batch_size)
            if show_progress_bar:
                from tqdm.auto import tqdm
                starts = tqdm(starts, desc="Batches", unit="batch")
            for start in starts:
                idx = order[start:start + batch_size]
                batch = self.tokenizer.pad([encodings[i] for i in idx]).to(self.device)
                out[idx] = model(batch, normalize=normalize_embeddings).to("cpu", out.dtype)

        result = out if convert_to == "torch" else out.float().numpy()  # numpy has no bfloat16
        return result[0] if single else result


def cos_sim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor | None = None) -> np.ndarray | torch.Tensor:
    """Cosine similarity matrix between the rows of ``a`` and ``b`` (default: ``a`` with itself)."""
    as_numpy = isinstance(a, np.ndarray)
    a_t = torch.as_tensor(a, dtype=torch.float32).reshape(-1, np.shape(a)[-1])
    b_t = a_t if b is None else torch.as_tensor(b, dtype=torch.float32).reshape(-1, np.shape(b)[-1])
    sim = F.normalize(a_t, dim=-1) @ F.normalize(b_t, dim=-1).T
    return sim.numpy() if as_numpy else sim


def save_sentence_transformers_folder(encoder: SentenceEncoder, folder: str | Path) -> None:
    """Write ``encoder`` as a sentence-transformers folder (Transformer at the root, 1_Pooling, Normalize)."""
    from minibert.weights import save_pretrained_bert

    folder = Path(folder)
    save_pretrained_bert(encoder.bert, folder)
    encoder.tokenizer.save(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = encoder.pooling.config
    pooling_json = PoolingConfig(pooling.modes, encoder.bert.config.hidden_size).to_json_dict()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_json, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": encoder.tokenizer.max_length,
                    "do_lower_case": encoder.tokenizer.lowercase_input}, indent=2) + "\n")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if encoder.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")

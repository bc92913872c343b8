"""SentenceEncoder: an encoder + SBERT pooling (+ Dense layers, L2 normalisation) behind one ``encode``.

A sentence-transformers folder is a pipeline listed in ``modules.json`` (``minibert.pipeline``): a
Transformer (the encoder's folder, of any family in ``minibert.families``), a Pooling module
(``1_Pooling/config.json``), Dense modules and Normalize. We read that list and rebuild the same
pipeline from minibert's own modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minibert.families import load_model
from minibert.hub import DEFAULT_MODEL, resolve_model
from minibert.model import AttnImplementation, BertModel, eval_mode
from minibert.paths import check_path, convert, default_path
from minibert.pipeline import Dense, Prompts, read_pipeline
from minibert.pooling import Pooling, PoolingConfig
from minibert.tokenizer import Batch, Tokenizer


class SentenceFeatures(NamedTuple):
    """What the encoder computes for a batch: every token's state and the sentence embedding."""

    token_states: torch.Tensor  # (B, L, C), the last hidden states (padding rows included)
    embedding: torch.Tensor  # (B, D), pooled over the real tokens (then Dense, then L2-normalised if the model is)


class SentenceEncoder(nn.Module):
    """Text in, one vector per text out."""

    def __init__(self, bert: BertModel, tokenizer: Tokenizer, pooling: Pooling | None = None,
                 normalize: bool = False, dense: Sequence[Dense] = (), prompts: Prompts | None = None) -> None:
        super().__init__()
        self.bert = bert
        self.tokenizer = tokenizer
        self.pooling = pooling or Pooling()
        self.dense = nn.ModuleList(dense)  # sentence-transformers' Dense modules, in order
        self.normalize = normalize  # True when the model was trained with a Normalize module
        self.prompts = prompts or Prompts()
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
        pipeline = read_pipeline(folder)
        bert = load_model(pipeline.transformer, dtype=dtype, device=device, attn_implementation=attn_implementation)
        tokenizer = Tokenizer.from_pretrained(pipeline.transformer, max_positions=bert.max_tokens)
        pooling_json = pipeline.pooling / "config.json" if pipeline.pooling else None
        pooling_config = PoolingConfig.from_json(pooling_json) if pooling_json else PoolingConfig()
        dim = pooling_config.embedding_dimension
        if dim is not None and dim != bert.config.hidden_size:
            raise ValueError(f"{pooling_json}: embedding dimension {dim} does not match the "
                             f"model's hidden_size {bert.config.hidden_size}")
        pooling, dense = Pooling(pooling_config), []
        dim = pooling.output_dim(bert.config.hidden_size)
        for dense_folder in pipeline.dense:
            dense.append(Dense.from_folder(dense_folder))
            if dense[-1].linear.in_features != dim:
                raise ValueError(f"{dense_folder / 'config.json'}: in_features {dense[-1].linear.in_features}, but "
                                 f"the module before gives {dim} dimensions")
            dim = dense[-1].linear.out_features
        bert_param = next(bert.parameters())
        encoder = cls(bert, tokenizer, pooling, pipeline.normalize, dense, Prompts.from_folder(folder))
        encoder = encoder.to(bert_param.device, bert_param.dtype).eval()
        return encoder.to_path(path or default_path(encoder.device))

    @property
    def path(self) -> str:
        """The execution path the encoder runs: "reference", "fast", "int8" or "compiled"."""
        return self.bert.path

    def to_path(self, path: str, **options) -> SentenceEncoder:
        """This encoder on another execution path (``minibert.paths.convert``; ``options`` are its): the same
        tokenizer, pooling and Dense modules, the weights shared. Itself when it runs that path already."""
        if path == self.path:
            return self
        encoder = SentenceEncoder(convert(self.bert, path, **options), self.tokenizer, self.pooling, self.normalize,
                                  self.dense, self.prompts)
        return encoder.train(self.training)

    @property
    def embedding_dim(self) -> int:
        return self.dense[-1].linear.out_features if len(self.dense) else \
            self.pooling.output_dim(self.bert.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, normalize: bool | None = None,
                 prompt_length: int = 0) -> SentenceFeatures:
        """Token states and sentence embeddings from one encoder pass; differentiable, for training.
        Token-level heads read the first, sentence-level heads the second. ``prompt_length``: the first
        tokens of every row are a prompt ([CLS] included), left out of the pooling when the folder's
        pooling says ``include_prompt = false``, as sentence-transformers does."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        pool_mask = attention_mask
        if prompt_length and not self.pooling.config.include_prompt:
            pool_mask = attention_mask.clone()
            pool_mask[:, :prompt_length] = 0
        emb = self.pooling(hidden, pool_mask)
        for dense in self.dense:
            emb = dense(emb)
        if self.normalize if normalize is None else normalize:
            emb = F.normalize(emb, p=2, dim=-1)
        return SentenceFeatures(hidden, emb)

    def forward(self, batch: Batch, normalize: bool | None = None, prompt_length: int = 0) -> torch.Tensor:
        """Embeddings (B, D) for a tokenized batch."""
        return self.features(batch.input_ids, batch.attention_mask, batch.token_type_ids, normalize,
                             prompt_length).embedding

    def prompt_length(self, prompt: str) -> int:
        """The prompt's tokens at the start of a text's tokens: all of its own but a closing special token."""
        if not prompt:
            return 0
        ids = self.tokenizer.encode([prompt], warn_truncation=False)[0].ids
        return len(ids) - (ids[-1] in self.tokenizer.special_ids)

    @torch.inference_mode()
    def encode(self, sentences: str | list[str], batch_size: int = 32, normalize_embeddings: bool | None = None,
               convert_to: Literal["numpy", "torch"] = "numpy", show_progress_bar: bool = False,
               device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               path: str | None = None, prompt_name: str | None = None, prompt: str | None = None,
               truncate_dim: int | None = None) -> np.ndarray | torch.Tensor:
        """Embed sentences; row i of the result belongs to ``sentences[i]``.

        Sentences are tokenized once, then batched longest-first, so each batch pads to a similar
        length and little compute is spent on padding. ``normalize_embeddings=None`` follows the
        model folder (its Normalize module). ``device``/``dtype`` move the model, as
        sentence-transformers does. A single string gives a 1-D vector. ``path`` runs this call on another
        execution path (``minibert.paths``: "reference", "fast", "int8", "compiled"), converted for this
        call only; by default the encoder's own (``to_path`` keeps a converted encoder). ``prompt`` (or
        one of the folder's ``prompts`` by ``prompt_name``; by default its ``default_prompt_name``) goes
        before every sentence. ``truncate_dim`` keeps the first dimensions (Matryoshka models), before
        ``normalize_embeddings=True`` normalises, as in sentence-transformers.
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
        if truncate_dim is not None and not (type(truncate_dim) is int and 1 <= truncate_dim <= self.embedding_dim):
            raise ValueError(f"truncate_dim must be in 1..{self.embedding_dim}, got {truncate_dim!r}")
        prefix = self.prompts.text(prompt_name, prompt)
        sentences, prompt_length = [prefix + s for s in sentences], self.prompt_length(prefix)
        if device is not None or dtype is not None:
            check_path(path or self.path, device or self.device, dtype or next(self.parameters()).dtype)
            self.to(device=device, dtype=dtype)
        model = self if path is None else self.to_path(path)
        with eval_mode(model):
            encodings = self.tokenizer.encode(sentences)
            order = sorted(range(len(sentences)), key=lambda i: -len(encodings[i].ids))
            out = torch.empty(len(sentences), truncate_dim or self.embedding_dim, dtype=next(self.parameters()).dtype)
            starts = range(0, len(sentences), batch_size)
            if show_progress_bar:
                from tqdm.auto import tqdm
                starts = tqdm(starts, desc="Batches", unit="batch")
            for start in starts:
                idx = order[start:start + batch_size]
                batch = self.tokenizer.pad([encodings[i] for i in idx]).to(self.device)
                emb = model(batch, normalize=False if normalize_embeddings is False else None,
                            prompt_length=prompt_length)[:, :truncate_dim]
                if normalize_embeddings:
                    emb = F.normalize(emb, p=2, dim=-1)
                out[idx] = emb.to("cpu", out.dtype)

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
    """Write ``encoder`` as a sentence-transformers folder: the encoder at the root (its family's Hugging Face
    layout), 1_Pooling, the Dense modules (2_Dense, ...), Normalize, and the prompts."""
    import json

    from minibert.weights import save_pretrained

    folder = Path(folder)
    save_pretrained(encoder.bert, folder)
    encoder.tokenizer.save(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = encoder.pooling.config
    pooling_json = PoolingConfig(pooling.modes, encoder.bert.config.hidden_size, pooling.include_prompt).to_json_dict()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_json, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": encoder.tokenizer.max_length,
                    "do_lower_case": encoder.tokenizer.lowercase_input}, indent=2) + "\n")
    kind = "sentence_transformers.models."
    modules = [{"path": "", "type": kind + "Transformer"}, {"path": "1_Pooling", "type": kind + "Pooling"}]
    for i, dense in enumerate(encoder.dense):
        dense.save(folder / f"{i + 2}_Dense")
        modules.append({"path": f"{i + 2}_Dense", "type": kind + "Dense"})
    if encoder.normalize:
        modules.append({"path": f"{len(modules)}_Normalize", "type": kind + "Normalize"})
    listed = [{"idx": i, "name": str(i), **m} for i, m in enumerate(modules)]
    (folder / "modules.json").write_text(json.dumps(listed, indent=2) + "\n")
    if encoder.prompts.prompts:
        (folder / "config_sentence_transformers.json").write_text(
            json.dumps(encoder.prompts.to_json_dict(), indent=2) + "\n")

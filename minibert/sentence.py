"""SentenceEncoder: an encoder + SBERT pooling (+ Dense layers, L2 normalisation) behind one ``encode``.

A sentence-transformers folder is a pipeline listed in ``modules.json`` (``minibert.pipeline``): a
Transformer (the encoder's folder, of any family in ``minibert.families``), a Pooling module
(``1_Pooling/config.json``), Dense modules and Normalize. We read that list and rebuild the same
pipeline from minibert's own modules.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minibert import inputs, similarity
from minibert.dense import Dense
from minibert.embedding_precision import checked_precision, quantize_embeddings
from minibert.encode_settings import EncodeSettings
from minibert.families import load_model
from minibert.hub import DEFAULT_MODEL, resolve_model
from minibert.model import AttnImplementation, BertModel, eval_mode
from minibert.paths import cast, check_path, convert, default_path
from minibert.pipeline import plain_folder_pooling, read_pipeline
from minibert.pooling import Pooling, PoolingConfig
from minibert.tokenizer import Batch, Tokenizer, check_padding_side


class SentenceFeatures(NamedTuple):
    """What the encoder computes for a batch: every token's state and the sentence embedding."""

    token_states: torch.Tensor  # (B, L, C), the last hidden states (padding rows included)
    embedding: torch.Tensor  # (B, D), pooled over the real tokens (then Dense, then L2-normalised if the model is)
    word_embeddings: torch.Tensor  # (V, C), the input embedding table: a head tied to it (MLM) reads it here


class SentenceEncoder(nn.Module):
    """Text in, one vector per text out."""

    def __init__(self, bert: BertModel, tokenizer: Tokenizer, pooling: Pooling | None = None,
                 normalize: bool = False, dense: Sequence[Dense] = (), settings: EncodeSettings | None = None) -> None:
        super().__init__()
        self.bert = bert
        self.tokenizer = tokenizer
        self.pooling = pooling or Pooling()
        self.dense = nn.ModuleList(dense)  # sentence-transformers' Dense modules, in order
        self.normalize = normalize  # True when the folder lists a Normalize module: it always runs, as there
        self.settings = settings or EncodeSettings()  # prompts, similarity function, truncate_dim
        if tokenizer.vocab_size > bert.config.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the model only "
                             f"{bert.config.vocab_size} embeddings")

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, attn_implementation: AttnImplementation = "sdpa",
                        path: str | None = None) -> SentenceEncoder:
        """A model folder (or a known model's name), loaded strictly. ``path`` is the execution path
        (``minibert.paths``): by default the fastest one held to the reference on the device ("fast"
        on the CPU, ``paths.default_path``); ``path="reference"`` runs ``model.py`` as written. ``dtype``: by
        default the one the folder names (config.json's, or its module config's), else the one its weights have."""
        folder = resolve_model(name_or_path)
        pipeline = read_pipeline(folder)
        bert = load_model(pipeline.transformer, dtype=dtype or pipeline.settings.dtype, device=device,
                          attn_implementation=attn_implementation, config_overrides=pipeline.settings.config)
        tokenizer = Tokenizer.from_pretrained(folder, max_positions=bert.max_tokens)
        check_padding_side(tokenizer, bert.position_skip_id)
        pooling_json = pipeline.pooling / "config.json" if pipeline.pooling else None
        pooling_config = PoolingConfig.from_json(pooling_json) if pooling_json else \
            PoolingConfig(plain_folder_pooling(pipeline.transformer))  # (a plain Hugging Face folder)
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
        settings = EncodeSettings.from_folder(folder) if pipeline.sentence_transformers else EncodeSettings()
        bert_param = next(bert.parameters())
        encoder = cls(bert, tokenizer, pooling, pipeline.normalize, dense, settings)
        encoder = encoder.to(bert_param.device, bert_param.dtype).eval()  # Dense in the encoder's dtype, as in ST
        return encoder.to_path(path or default_path(encoder.device))

    @property
    def path(self) -> str:
        """The execution path the encoder runs: "reference", "fast", "int8" or "compiled"."""
        return self.bert.path

    def twin(self, bert: BertModel, dense: Sequence[Dense] | None = None) -> SentenceEncoder:
        """This encoder around another encoder model (and Dense modules): the same tokenizer, pooling and
        settings, in the same train/eval mode."""
        encoder = SentenceEncoder(bert, self.tokenizer, self.pooling, self.normalize,
                                  self.dense if dense is None else dense, self.settings)
        return encoder.train(self.training)

    def to_path(self, path: str, **options) -> SentenceEncoder:
        """This encoder on another execution path (``minibert.paths.convert``; ``options`` are its): the same
        tokenizer, pooling and Dense modules, the weights shared. Itself when it runs that path already."""
        return self if path == self.path else self.twin(convert(self.bert, path, **options))

    def in_dtype(self, dtype: torch.dtype) -> SentenceEncoder:
        """This encoder computing in ``dtype`` on its path: copies of its weights in that dtype, so that its own
        stay as they are (``encode(dtype=...)``). Itself when it has that dtype."""
        if dtype == next(self.parameters()).dtype:
            return self
        return self.twin(cast(self.bert, dtype), [copy.deepcopy(d).to(dtype) for d in self.dense])

    @property
    def embedding_dim(self) -> int:
        return self.dense[-1].linear.out_features if len(self.dense) else \
            self.pooling.output_dim(self.bert.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, prompt_length: int = 0) -> SentenceFeatures:
        """Token states and sentence embeddings from one encoder pass; differentiable, for training.
        Token-level heads read the first, sentence-level heads the second. ``prompt_length``: the first
        tokens of every row are a prompt ([CLS] included), left out of the pooling when the folder's
        pooling says ``include_prompt = false``, as sentence-transformers does."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids, pool=False).last_hidden_state
        return self.pool_states(hidden, attention_mask, prompt_length)

    def pool_states(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                    prompt_length: int = 0) -> SentenceFeatures:
        """The features of given token states: the pipeline after the transformer (pooling, Dense, Normalize).
        A task's branch or adapter (``minibert.branch``, ``minibert.adapter``) changes the states between the two."""
        emb = self.pooling(hidden, attention_mask, prompt_length)
        for dense in self.dense:
            emb = dense(emb)
        if self.normalize:
            emb = F.normalize(emb, p=2, dim=-1)
        return SentenceFeatures(hidden, emb, self.bert.embeddings.word.weight)

    def forward(self, batch: Batch, prompt_length: int = 0) -> torch.Tensor:
        """Embeddings (B, D) for a tokenized batch."""
        return self.features(batch.input_ids, batch.attention_mask, batch.token_type_ids, prompt_length).embedding

    def prompt_length(self, prompt: str) -> int:
        """The prompt's tokens at the start of a text's tokens: all of its own but a closing special token."""
        if not prompt:
            return 0
        ids = self.tokenizer.encode([prompt], warn_truncation=False)[0].ids
        return len(ids) - (ids[-1] in self.tokenizer.special_ids)

    @torch.inference_mode()
    def encode(self, sentences: str | Sequence[str], *, batch_size: int = 32, normalize_embeddings: bool = False,
               convert_to: Literal["numpy", "torch"] = "numpy", show_progress_bar: bool = False,
               device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               path: str | None = None, prompt_name: str | None = None, prompt: str | None = None,
               truncate_dim: int | None = None, precision: str | None = "float32",
               output_value: Literal["sentence_embedding", "token_embeddings"] = "sentence_embedding",
               convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               task: Literal["query", "document"] | None = None) -> np.ndarray | torch.Tensor | list:
        """Embed sentences; row i of the result belongs to ``sentences[i]``, as sentence-transformers'
        ``encode`` computes it (every argument but the texts by name: their order differs there). Sentences
        are tokenized once, then batched longest-first, so each batch pads to a similar length and little
        compute is spent on padding. The folder's modules all run (its Normalize too);
        then ``truncate_dim`` (by default the folder's) keeps the first dimensions (Matryoshka models), and
        ``normalize_embeddings=True`` L2-normalises what is left. A single string gives a 1-D vector.
        ``output_value="token_embeddings"`` gives, for each text, its tokens' last hidden states instead (a
        list of (tokens, C) tensors, prompt tokens included; no truncation or normalisation).

        ``device`` moves the model, as sentence-transformers does. ``dtype`` and ``path`` hold for this call
        only: ``dtype`` computes with copies of the weights in that dtype, ``path`` converts to another
        execution path (``minibert.paths``: "reference", "fast", "int8", "compiled"; ``to_path`` keeps one).
        ``prompt`` (or one of the folder's ``prompts`` by ``prompt_name``; by default its
        ``default_prompt_name``) goes before every sentence. ``precision`` ("int8", "uint8", "binary", "ubinary")
        quantizes the embeddings last, int8 and uint8 on ranges taken from these embeddings
        (``minibert.embedding_precision``; for a corpus, quantize with ranges of your own). The result is
        ``convert_to``'s form, or as sentence-transformers' flags ask (``minibert.inputs``). ``task``
        ("query", "document") cuts the texts at the folder's ``query_length`` or ``document_length``, where it
        sets one (``encode_query`` and ``encode_document`` set it).
        """
        sentences, single = inputs.texts(sentences)
        tokenizer = self.tokenizer.for_task(task)
        batch_size = inputs.whole_number("batch_size", batch_size)
        precision = checked_precision(precision)  # (before any work)
        form = inputs.output_form(convert_to, convert_to_numpy, convert_to_tensor, output_value, precision)
        tokens = output_value == "token_embeddings"
        if truncate_dim is not None:
            truncate_dim = inputs.whole_number("truncate_dim", truncate_dim, 1, self.embedding_dim)
        truncate_dim = truncate_dim or self.settings.truncate_dim  # (the folder's may exceed the dimensions: all kept)
        truncate_dim = truncate_dim if truncate_dim and truncate_dim < self.embedding_dim else None
        prefix = self.settings.prompt(prompt_name, prompt)
        sentences, prompt_length = [prefix + s for s in sentences], self.prompt_length(prefix)
        if prompt_length and prompt_length >= tokenizer.max_length - 1:  # (as in sentence-transformers: warned here)
            warnings.warn(f"the prompt takes {prompt_length} of the {tokenizer.max_length} tokens texts are cut at: "
                          "no token of the texts is left", stacklevel=3)  # (the caller, past inference_mode's)
        if isinstance(device, (list, tuple)):
            raise ValueError(f"device must be one device, got {device!r} (sentence-transformers' list of devices, "
                             "for several processes, is not run here: see minibert.corpus)")
        if device is not None:
            check_path(path or self.path, device, dtype or next(self.parameters()).dtype)
            self.to(device=device)
        model = self if path is None else self.to_path(path)
        model = model if dtype is None else model.in_dtype(dtype)
        with eval_mode(model):
            encodings = tokenizer.encode(sentences)
            order = sorted(range(len(sentences)), key=lambda i: -len(encodings[i].ids))
            on = self.device if form != "numpy" and precision == "float32" else "cpu"  # (numpy: on the CPU)
            out = torch.empty(len(sentences), truncate_dim or self.embedding_dim,
                              dtype=next(model.parameters()).dtype, device=on)
            token_states = [None] * len(sentences)
            starts = range(0, len(sentences), batch_size)
            if show_progress_bar:
                from tqdm.auto import tqdm
                starts = tqdm(starts, desc="Batches", unit="batch")
            for start in starts:
                idx = order[start:start + batch_size]
                batch = tokenizer.pad([encodings[i] for i in idx]).to(self.device)
                if tokens:  # each text's real tokens: its row of the states, where the mask says
                    states = model.features(batch.input_ids, batch.attention_mask, batch.token_type_ids).token_states
                    for i, row, mask in zip(idx, states, batch.attention_mask.bool(), strict=True):
                        token_states[i] = row[mask]
                    continue
                emb = model(batch, prompt_length=prompt_length)[:, :truncate_dim]
                if normalize_embeddings:
                    emb = F.normalize(emb, p=2, dim=-1)
                out[idx] = emb.to(out.device, out.dtype)
        if tokens:
            return token_states[0] if single else token_states
        if precision != "float32":
            out = quantize_embeddings(out, precision)
            out = out if form == "numpy" else torch.from_numpy(out)
        elif form == "numpy":  # numpy has no bfloat16
            out = out.float() if out.dtype == torch.bfloat16 else out
            out = out.numpy()
        out = list(out) if form == "list" else out
        return out[0] if single else out

    def encode_query(self, sentences: str | Sequence[str], **options) -> np.ndarray | torch.Tensor | list:
        """``encode`` with the folder's "query" prompt (empty unless it sets one) where no prompt is given, not its
        ``default_prompt_name``, and its ``query_length``, as sentence-transformers' ``encode_query``."""
        options["prompt_name"] = inputs.task_prompt_name("query", options.get("prompt_name"), options.get("prompt"))
        return self.encode(sentences, task="query", **options)

    def encode_document(self, sentences: str | Sequence[str], **options) -> np.ndarray | torch.Tensor | list:
        """``encode`` with the folder's "document" prompt where no prompt is given, as sentence-transformers'
        ``encode_document`` (it would take "passage" or "corpus" where "document" is missing, but "document"
        is never missing: empty unless the folder sets it), and its ``document_length``."""
        options["prompt_name"] = inputs.task_prompt_name("document", options.get("prompt_name"), options.get("prompt"))
        return self.encode(sentences, task="document", **options)

    def similarity(self, a, b, name: str | None = None) -> torch.Tensor:
        """(len(a), len(b)) scores between embeddings, by the folder's ``similarity_fn_name`` (cosine unless it
        says dot, euclidean or manhattan) or ``name``, as sentence-transformers' ``similarity``."""
        return similarity.similarity(a, b, name or self.settings.similarity_fn_name)

    def similarity_pairwise(self, a, b, name: str | None = None) -> torch.Tensor:
        """(n,) scores of row i of ``a`` with row i of ``b``, by the folder's similarity function or ``name``."""
        return similarity.pairwise(a, b, name or self.settings.similarity_fn_name)


def save_sentence_transformers_folder(encoder: SentenceEncoder, folder: str | Path) -> None:
    """Write ``encoder`` as a sentence-transformers folder: the encoder at the root (its family's Hugging Face
    layout), 1_Pooling, the Dense modules (2_Dense, ...), Normalize, and config_sentence_transformers.json."""
    from minibert.weights import save_pretrained

    folder = Path(folder)
    save_pretrained(encoder.bert, folder)
    encoder.tokenizer.save(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = encoder.pooling.config
    pooling_json = PoolingConfig(pooling.modes, encoder.bert.config.hidden_size, pooling.include_prompt).to_json_dict()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_json, indent=2) + "\n")
    module_config = {"max_seq_length": encoder.tokenizer.max_length, "do_lower_case": encoder.tokenizer.do_lower_case,
                     **{f"{task}_length": length for task, length in encoder.tokenizer.task_lengths.items()}}
    overrides = {k: v for k, v in encoder.tokenizer.overrides.items() if k != "model_max_length"}
    if "padding_side" in overrides:  # minibert pads on the right (Tokenizer.save): its folders say so
        overrides["padding_side"] = "right"
    if overrides:  # settings that were laid over the tokenizer files, kept with them
        module_config["tokenizer_args"] = overrides
    (folder / "sentence_bert_config.json").write_text(json.dumps(module_config, indent=2) + "\n")
    kind = "sentence_transformers.models."
    modules = [{"path": "", "type": kind + "Transformer"}, {"path": "1_Pooling", "type": kind + "Pooling"}]
    for i, dense in enumerate(encoder.dense):
        dense.save(folder / f"{i + 2}_Dense")
        modules.append({"path": f"{i + 2}_Dense", "type": kind + "Dense"})
    if encoder.normalize:
        modules.append({"path": f"{len(modules)}_Normalize", "type": kind + "Normalize"})
    listed = [{"idx": i, "name": str(i), **m} for i, m in enumerate(modules)]
    (folder / "modules.json").write_text(json.dumps(listed, indent=2) + "\n")
    encoder.settings.save(folder)

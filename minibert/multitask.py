"""One shared encoder, several named task heads.

    sentences ─▶ Tokenizer ─▶ BertModel ─┬─ token states ──▶ TokenClassificationHead     (NER tags)
                                         └─ Pooling ─▶ u ─┬─ SentenceClassificationHead (topic, sentiment)
                          (second sentence ─▶ ... ─▶ v) ──┴─ NLIHead(u, v, |u-v|)  /  STSHead cos(u, v)
    "[CLS] a [SEP] b [SEP]" ─▶ Tokenizer ─▶ BertModel ─▶ [CLS] state ─▶ CrossEncoderHead    (pair score)

Tasks are described by plain ``TaskSpec``s (``task_spec.py``: name, type, label names, head
options), saved next to the weights as ``tasks.json``; the heads are in ``heads.py``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from minibert.files import read_json
from minibert.heads import (
    IGNORE_INDEX,
    CrossEncoderHead,
    NLIHead,
    SentenceClassificationHead,
    STSHead,
    TokenClassificationHead,
)
from minibert.model import eval_mode
from minibert.ner import align_labels, bio_to_entities, first_piece_index
from minibert.sentence import SentenceEncoder, save_sentence_transformers_folder
from minibert.task_spec import TaskSpec
from minibert.tokenizer import Batch

SPEC_FILE, HEADS_FILE = "tasks.json", "heads.safetensors"
BATCH_KEYS = {"classification": ("texts",), "token_classification": ("words",), "nli": ("a", "b"), "sts": ("a", "b"),
              "cross_sts": ("a", "b")}


def build_head(spec: TaskSpec, dim: int, hidden_size: int) -> nn.Module:
    if spec.type == "classification":
        return SentenceClassificationHead(dim, len(spec.labels), spec.dropout, spec.hidden_layer)
    if spec.type == "token_classification":
        return TokenClassificationHead(hidden_size, len(spec.labels), spec.dropout)
    if spec.type == "nli":
        return NLIHead(dim, len(spec.labels), spec.concat_rep, spec.concat_difference, spec.concat_multiplication)
    if spec.type == "cross_sts":
        return CrossEncoderHead(hidden_size, spec.dropout, spec.max_score)
    return STSHead(spec.loss, spec.max_score)


class TaskOutput(NamedTuple):
    loss: torch.Tensor | None  # None when the batch has no labels
    logits: torch.Tensor  # classification/nli: (B, labels); token: (B, L, labels); sts: cosine (B,); cross_sts: (B,)
    num_tokens: int = 0  # real (unpadded) tokens the encoder processed, for throughput figures


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: SentenceEncoder, tasks: list[TaskSpec]) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks: dict[str, TaskSpec] = {}
        for spec in tasks:
            if spec.name in self.tasks:
                raise ValueError(f"task name {spec.name!r} is used twice")
            self.tasks[spec.name] = spec
        dim, hidden = encoder.embedding_dim, encoder.bert.config.hidden_size
        self.heads = nn.ModuleDict({spec.name: build_head(spec, dim, hidden) for spec in tasks})
        self.freeze_pooler()

    def freeze_pooler(self) -> None:
        """SBERT pooling replaces BERT's pooler: we keep its weights (for export) but never train them."""
        if self.encoder.bert.pooler is not None:
            self.encoder.bert.pooler.requires_grad_(False)

    @classmethod
    def from_encoder(cls, name_or_path: str | Path, tasks: list[TaskSpec | dict], seed: int = 0,
                     **kwargs) -> MultiTaskModel:
        """A pretrained encoder with freshly initialised heads."""
        encoder = SentenceEncoder.from_pretrained(name_or_path, **kwargs)
        torch.manual_seed(seed)
        specs = [t if isinstance(t, TaskSpec) else TaskSpec.from_dict(t) for t in tasks]
        model = cls(encoder, specs)
        # eval, like every from_pretrained: call .train() to fine-tune
        return model.to(encoder.device, next(encoder.parameters()).dtype).eval()

    # ---- inputs ----------------------------------------------------------------------------------

    def spec(self, task: str) -> TaskSpec:
        if task not in self.tasks:
            raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(self.tasks) or '(none)'}")
        return self.tasks[task]

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def label_ids(self, task: str, labels) -> torch.Tensor:
        """Label names (or ids) -> a tensor of ids; an unknown label names the task, label and example."""
        spec = self.spec(task)
        if isinstance(labels, torch.Tensor):
            labels = labels.tolist()
        ids = []
        for i, label in enumerate(labels):
            if isinstance(label, str):
                if label not in spec.labels:
                    raise ValueError(f"task {task!r}: label {label!r} (example {i}) is not one of {spec.labels}")
                ids.append(spec.labels.index(label))
            elif isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(spec.labels):
                ids.append(int(label))
            else:
                raise ValueError(f"task {task!r}: label {label!r} (example {i}) is not a label name or an id "
                                 f"in 0..{len(spec.labels) - 1}")
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def tokenize_words(self, words: list[list[str]]) -> Batch:
        return self.encoder.tokenizer(words, is_pretokenized=True).to(self.device)

    def token_labels(self, task: str, batch: Batch, words: list[list[str]], labels: list[list]) -> torch.Tensor:
        spec = self.spec(task)
        inside_of = {spec.labels.index(t): spec.labels.index("I-" + t[2:]) for t in spec.labels
                     if t.startswith("B-") and "I-" + t[2:] in spec.labels}
        rows = []
        for i, (sentence_words, sentence_labels) in enumerate(zip(words, labels, strict=True)):
            if len(sentence_words) != len(sentence_labels):
                raise ValueError(f"task {task!r}: sentence {i} has {len(sentence_words)} words but "
                                 f"{len(sentence_labels)} labels")
            ids = self.label_ids(task, sentence_labels).tolist()
            rows.append(align_labels(batch.word_ids[i], ids, spec.label_all_pieces, inside_of))
        return torch.tensor(rows, dtype=torch.long, device=self.device).view(len(rows), -1)

    # ---- forward ---------------------------------------------------------------------------------

    def forward(self, task: str, batch: dict) -> TaskOutput:
        """One task's logits and (when the batch has labels) loss.

        batch keys by task type: classification ``texts`` [+ ``labels``]; token_classification ``words``
        (a list of words per sentence) [+ ``labels``, one per word]; nli ``a``, ``b`` [+ ``labels``];
        sts and cross_sts ``a``, ``b`` [+ ``scores``, gold 0..max_score]. Labels may be names or ids.
        """
        spec, head = self.spec(task), self.heads[task]
        needed = BATCH_KEYS[spec.type]
        if not all(k in batch for k in needed):
            raise ValueError(f"task {task!r} ({spec.type}) needs batch keys {list(needed)}, got {sorted(batch)}")
        tokenizer = self.encoder.tokenizer
        if spec.type == "classification":
            tokens = tokenizer(batch["texts"]).to(self.device)
            logits = head(self.encoder(tokens))
            target = self.label_ids(task, batch["labels"]) if "labels" in batch else None
            num_tokens = int(tokens.attention_mask.sum())
        elif spec.type == "token_classification":
            tokens = self.tokenize_words(batch["words"])
            hidden = self.encoder.bert(tokens.input_ids, tokens.attention_mask, tokens.token_type_ids)
            logits = head(hidden.last_hidden_state)
            target = self.token_labels(task, tokens, batch["words"], batch["labels"]) if "labels" in batch else None
            num_tokens = int(tokens.attention_mask.sum())
        else:
            if len(batch["a"]) != len(batch["b"]):
                raise ValueError(f"task {task!r}: {len(batch['a'])} first sentences but {len(batch['b'])} second")
            if spec.type == "cross_sts":
                # one input per pair; token_type_ids mark which sentence each token belongs to
                tokens = tokenizer(list(zip(batch["a"], batch["b"], strict=True))).to(self.device)
                hidden = self.encoder.bert(tokens.input_ids, tokens.attention_mask, tokens.token_type_ids)
                logits = head(hidden.last_hidden_state)
                num_tokens = int(tokens.attention_mask.sum())
            else:  # a bi-encoder: each sentence on its own, then the head compares u and v
                tokens_a, tokens_b = tokenizer(batch["a"]).to(self.device), tokenizer(batch["b"]).to(self.device)
                u, v = self.encoder(tokens_a), self.encoder(tokens_b)
                logits = head(u, v)
                num_tokens = int(tokens_a.attention_mask.sum() + tokens_b.attention_mask.sum())
            if spec.type == "nli":
                target = self.label_ids(task, batch["labels"]) if "labels" in batch else None
            else:
                target = torch.as_tensor(batch["scores"], dtype=torch.float32, device=self.device) \
                    if "scores" in batch else None
        return TaskOutput(head.loss(logits, target) if target is not None else None, logits, num_tokens)

    # ---- prediction ------------------------------------------------------------------------------

    def split_words(self, text: str) -> list[str]:
        """Words as BERT's pre-tokenizer sees them (whitespace and punctuation split)."""
        return [w for w, _ in self.encoder.tokenizer.backend.pre_tokenizer.pre_tokenize_str(text)]

    @torch.inference_mode()
    def predict_tags(self, task: str, words: list[list[str]], batch_size: int = 32) -> list[list[str]]:
        """One tag per word (from the word's first piece; 'O' for words cut off by truncation)."""
        spec = self.spec(task)
        if spec.type != "token_classification":
            raise ValueError(f"task {task!r} is {spec.type}, not token_classification")
        tags = []
        with eval_mode(self):
            for start in range(0, len(words), batch_size):
                chunk = words[start:start + batch_size]
                tokens = self.tokenize_words(chunk)
                hidden = self.encoder.bert(tokens.input_ids, tokens.attention_mask, tokens.token_type_ids)
                tag_ids = self.heads[task](hidden.last_hidden_state).argmax(-1).cpu()
                tags += [words_to_tags(spec.labels, tag_ids[i], tokens.word_ids[i], len(w))
                         for i, w in enumerate(chunk)]
        return tags

    @torch.inference_mode()
    def predict(self, sentences: list[str], batch_size: int = 32) -> list[dict]:
        """Every single-sentence task's prediction and the embedding, for each sentence (one encoder pass)."""
        results = []
        with eval_mode(self):
            for start in range(0, len(sentences), batch_size):
                chunk = sentences[start:start + batch_size]
                words = [self.split_words(s) for s in chunk]
                tokens = self.tokenize_words(words)
                hidden = self.encoder.bert(tokens.input_ids, tokens.attention_mask,
                                           tokens.token_type_ids).last_hidden_state
                emb = self.encoder.pooling(hidden, tokens.attention_mask)
                if self.encoder.normalize:
                    emb = nn.functional.normalize(emb, dim=-1)
                rows = [{"text": s, "embedding": emb[i].float().cpu().numpy()} for i, s in enumerate(chunk)]
                for name, spec in self.tasks.items():
                    if spec.type == "classification":
                        probs = self.heads[name](emb).float().softmax(-1).cpu()
                        for i, row in enumerate(rows):
                            row[name] = label_result(spec.labels, probs[i])
                    elif spec.type == "token_classification":
                        tag_ids = self.heads[name](hidden).argmax(-1).cpu()
                        for i, row in enumerate(rows):
                            tags = words_to_tags(spec.labels, tag_ids[i], tokens.word_ids[i], len(words[i]))
                            row[name] = {"words": words[i], "tags": tags,
                                         "entities": [e.as_dict() for e in bio_to_entities(tags, words[i])]}
                results.extend(rows)
        return results

    @torch.inference_mode()
    def predict_pairs(self, a: list[str], b: list[str], batch_size: int = 32) -> list[dict]:
        """For each pair: every NLI task's label and probabilities, the cosine similarity, and every
        cross-encoder's score."""
        if len(a) != len(b):
            raise ValueError(f"predict_pairs: {len(a)} first sentences but {len(b)} second")
        with eval_mode(self):
            u = self.encoder.encode(a, batch_size=batch_size, convert_to="torch").to(self.device)
            v = self.encoder.encode(b, batch_size=batch_size, convert_to="torch").to(self.device)
            cosine = nn.functional.cosine_similarity(u.float(), v.float(), dim=-1).cpu()
            rows = [{"a": x, "b": y, "similarity": float(cosine[i])} for i, (x, y) in enumerate(zip(a, b, strict=True))]
            for name, spec in self.tasks.items():
                if spec.type == "nli":
                    probs = self.heads[name](u, v).float().softmax(-1).cpu()
                    for i, row in enumerate(rows):
                        row[name] = label_result(spec.labels, probs[i])
                elif spec.type == "sts":
                    for i, row in enumerate(rows):
                        row[name] = {"score": float(cosine[i]) * spec.max_score}
                elif spec.type == "cross_sts":
                    scores = self.cross_scores(name, a, b, batch_size)
                    for i, row in enumerate(rows):
                        row[name] = {"score": float(scores[i])}
        return rows

    @torch.inference_mode()
    def cross_scores(self, task: str, a: list[str], b: list[str], batch_size: int = 32) -> torch.Tensor:
        """A cross_sts task's predicted score (0..max_score) for each pair (a[i], b[i]), on the CPU."""
        if self.spec(task).type != "cross_sts":
            raise ValueError(f"task {task!r} is {self.spec(task).type}, not cross_sts")
        with eval_mode(self):
            logits = [self(task, {"a": a[i:i + batch_size], "b": b[i:i + batch_size]}).logits
                      for i in range(0, len(a), batch_size)]
        return self.heads[task].score(torch.cat(logits)).cpu()

    # ---- freezing --------------------------------------------------------------------------------

    def parts(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of parameters, in the order a batch meets them."""
        bert = self.encoder.bert
        groups = {"embeddings": list(bert.embeddings.parameters())}
        for i, block in enumerate(bert.blocks):
            groups[f"layer.{i}"] = list(block.parameters())
        if bert.pooler is not None:
            groups["pooler"] = list(bert.pooler.parameters())
        for name, head in self.heads.items():
            groups[f"head:{name}"] = list(head.parameters())
        return groups

    def select(self, part: str) -> list[nn.Parameter]:
        """'embeddings', 'encoder' (everything below the heads), 'layers:K' (the first K blocks), 'layer.I',
        'head:NAME' or 'heads'."""
        groups = self.parts()
        if part in groups:
            return groups[part]
        if part == "encoder":
            return list(self.encoder.parameters())
        if part == "heads":
            return list(self.heads.parameters())
        if part.startswith("layers:"):
            k = int(part.split(":", 1)[1])
            if not 0 <= k <= len(self.encoder.bert.blocks):
                raise ValueError(f"layers:{k}: the encoder has {len(self.encoder.bert.blocks)} layers")
            return [p for i in range(k) for p in groups[f"layer.{i}"]]
        if part.startswith("head:"):
            self.spec(part[5:])  # raises, listing the known tasks
        raise ValueError(f"unknown part {part!r}; use embeddings, encoder, layers:K, layer.I, heads, or one of "
                         f"{', '.join(groups)}")

    def freeze(self, *parts: str) -> None:
        for part in parts:
            for p in self.select(part):
                p.requires_grad_(False)

    def unfreeze(self, *parts: str) -> None:
        for part in parts:
            for p in self.select(part):
                p.requires_grad_(True)
        self.freeze_pooler()

    def trainable_report(self) -> str:
        lines = [f"{'part':22}{'trainable':>12}{'total':>12}"]
        trainable_sum = total_sum = 0
        for name, params in self.parts().items():
            trainable = sum(p.numel() for p in params if p.requires_grad)
            total = sum(p.numel() for p in params)
            trainable_sum, total_sum = trainable_sum + trainable, total_sum + total
            lines.append(f"{name:22}{trainable:12,}{total:12,}")
        lines.append(f"{'all':22}{trainable_sum:12,}{total_sum:12,}")
        return "\n".join(lines)

    # ---- saving ----------------------------------------------------------------------------------

    def export_sentence_transformers(self, folder: str | Path) -> None:
        """The encoder + pooling (+ Normalize) as a folder that sentence-transformers loads."""
        save_sentence_transformers_folder(self.encoder, folder)

    def save(self, folder: str | Path) -> None:
        """Encoder in Hugging Face / sentence-transformers layout, every head in heads.safetensors,
        and the task specifications in tasks.json."""
        folder = Path(folder)
        self.export_sentence_transformers(folder)
        heads = {f"{name}.{k}": t.detach().contiguous().cpu() for name, head in self.heads.items()
                 for k, t in head.state_dict().items()}
        save_file(heads, str(folder / HEADS_FILE), metadata={"format": "pt"})
        spec = {"format": "minibert-multitask", "version": 1, "tasks": [asdict(t) for t in self.tasks.values()]}
        (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None) -> MultiTaskModel:
        folder = Path(folder)
        spec_path = folder / SPEC_FILE
        if not spec_path.is_file():
            raise FileNotFoundError(f"no {SPEC_FILE} in {folder}: not a saved multi-task model")
        raw = read_json(spec_path)
        try:
            tasks = [TaskSpec.from_dict(t) for t in raw["tasks"]]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{spec_path}: not a valid task specification ({e!r})") from e
        model = cls(SentenceEncoder.from_pretrained(folder), tasks)
        heads_path = folder / HEADS_FILE
        if not heads_path.is_file():
            raise FileNotFoundError(f"head weights not found: {heads_path}")
        try:
            saved = load_file(heads_path)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{heads_path}: not a readable safetensors file ({e})") from e
        expected = {f"{name}.{k}": t for name, head in model.heads.items() for k, t in head.state_dict().items()}
        missing = sorted(set(expected) - set(saved))
        unexpected = sorted(set(saved) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{heads_path} does not match {spec_path}: missing {missing}, unexpected {unexpected}")
        for key, tensor in saved.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(f"{heads_path}: {key} has shape {tuple(tensor.shape)} but {spec_path} implies "
                                 f"{tuple(expected[key].shape)} (label count changed?)")
        for name, head in model.heads.items():
            head.load_state_dict({k[len(name) + 1:]: t for k, t in saved.items() if k.startswith(name + ".")})
        return model.to(device=device, dtype=dtype).eval()


def words_to_tags(labels: list[str], tag_ids: torch.Tensor, word_ids: list[int | None], num_words: int) -> list[str]:
    return [labels[tag_ids[p]] if p is not None else "O" for p in first_piece_index(word_ids, num_words)]


def label_result(labels: list[str], probs: torch.Tensor) -> dict:
    best = int(probs.argmax())
    return {"label": labels[best], "probability": float(probs[best]),
            "probabilities": {label: float(p) for label, p in zip(labels, probs, strict=True)}}


__all__ = ["IGNORE_INDEX", "MultiTaskModel", "TaskOutput", "TaskSpec"]

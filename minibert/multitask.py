"""One shared encoder, several named task heads.

    sentences ─▶ Tokenizer ─▶ BertModel ─┬─ token states ──▶ token_classification head  (NER tags)
                                         └─ Pooling ─▶ u ─┬─ classification head       (topic, sentiment)
                          (second sentence ─▶ ... ─▶ v) ──┴─ nli head(u, v, |u-v|)  /  sts: cos(u, v)
    "[CLS] a [SEP] b [SEP]" ─▶ Tokenizer ─▶ BertModel ─▶ [CLS] state ─▶ cross_sts head  (pair score)

A task with a ``branch`` (``minibert.branch``: its own copy of the encoder's top layers) or an ``adapter``
(``minibert.adapter``) reads the token states through them before its pooling and head; the head owns
them, so they are saved with it.

The model only computes: ``forward(task, batch)`` takes tensors (what the task's ``collate`` made) and
runs encoder, head, loss. Everything that depends on the kind of task, from reading its files to
scoring its predictions, lives in its task type (``minibert/tasks/``). Saved next to the encoder:
``tasks.json`` (each task's name, type, labels and options) and ``heads.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from minibert.adapter import Adapter, scale_gradient
from minibert.branch import Branch
from minibert.files import read_json
from minibert.model import BertOutput
from minibert.paths import default_path
from minibert.pooling import Pooling, PoolingConfig
from minibert.sentence import SentenceEncoder, SentenceFeatures, save_sentence_transformers_folder
from minibert.tasks import TASK_TYPES, Task, make_task
from minibert.weights import check_tensors, save_tensors

TASKS_FILE, HEADS_FILE = "tasks.json", "heads.safetensors"
INPUT_KEYS = ("input_ids", "attention_mask")


class TaskOutput(NamedTuple):
    loss: torch.Tensor | None  # None when the batch has no labels
    logits: torch.Tensor  # what the head gives: class logits, tag logits (B, L, n), cosines, ...
    embedding: torch.Tensor | None = None  # (B, D): each input row's sentence embedding, as the head reads it
    # (through the task's branch and adapter, when it has them)
    encoder_embedding: torch.Tensor | None = None  # (B, D): the shared encoder's own (the exported model's), when
    # asked for; the same tensor as ``embedding`` for a task without branch or adapter. Distillation pulls on one


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: SentenceEncoder, tasks: list[Task]) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks: dict[str, Task] = {}
        for task in tasks:
            if task.name in self.tasks:
                raise ValueError(f"task name {task.name!r} is used twice")
            self.tasks[task.name] = task
        self.heads = nn.ModuleDict({task.name: task.build_head(encoder) for task in tasks})
        for task in tasks:
            if task.branch:  # before the adapter: a head meets its branch first; in the head's dtype
                dtype = next(self.heads[task.name].parameters()).dtype  # (types that take one have weights)
                self.heads[task.name].branch = Branch(encoder.bert, task.branch).to(dtype)
            if task.adapter:
                self.heads[task.name].adapter = Adapter(encoder.bert.config.hidden_size, task.adapter)
        # SBERT pooling replaces BERT's pooler: its weights are kept (they are saved with the encoder)
        # but never trained.
        if encoder.bert.pooler is not None:
            encoder.bert.pooler.requires_grad_(False)

    @classmethod
    def from_encoder(cls, name_or_path: str | Path, tasks: list[Task | dict], seed: int = 0,
                     pooling: list[str] | None = None, random_encoder: bool = False, path: str | None = None,
                     **kwargs) -> MultiTaskModel:
        """A pretrained encoder with freshly initialised heads (``seed`` fixes their initial weights);
        ``pooling`` replaces the folder's pooling modes (``["cls"]``, ``["max"]``, ...).
        ``random_encoder``: the folder's architecture and tokenizer, but weights drawn afresh (from
        ``seed``) before the heads are built, since some heads start from encoder weights. Everything is
        drawn on the reference path (the same numbers whatever the path); then the encoder moves to
        ``path`` (default: the device's, ``minibert.paths.default_path``)."""
        encoder = SentenceEncoder.from_pretrained(name_or_path, path="reference", **kwargs)
        if pooling:
            encoder.pooling = Pooling(PoolingConfig(tuple(pooling), encoder.bert.config.hidden_size))
        if random_encoder:
            torch.manual_seed(seed)
            encoder.bert.init_weights()
        torch.manual_seed(seed)
        model = cls(encoder, [t if isinstance(t, Task) else make_task(t) for t in tasks])
        model.to(encoder.device, next(encoder.parameters()).dtype)
        model.encoder = encoder.to_path(path or default_path(encoder.device))
        return model.eval()  # eval, like every from_pretrained: call .train() to fine-tune

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(self.tasks) or '(none)'}")
        return self.tasks[name]

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def collate(self, task: str, examples: list) -> dict[str, torch.Tensor]:
        """``examples`` (``minibert.data`` records) as the tensors ``forward`` takes, on the model's device."""
        return to_device(self.task(task).collate(examples, self.encoder.tokenizer), self.device)

    def forward(self, task: str, batch: dict[str, torch.Tensor], encoder_grad: float = 1.0,
                encoder_embedding: bool = False) -> TaskOutput:
        """One task's logits and, when the batch has ``labels``, its loss: encoder, (branch, adapter,) head,
        loss. ``encoder_grad``: the share of this task's gradient that reaches the encoder's transformer
        (``minibert.adapter.scale_gradient``); its branch, adapter, head and the pipeline's Dense modules get
        all of it. ``encoder_embedding``: also return the shared encoder's own embedding, which only a
        distillation term reads (``optim.distill_at = "encoder"``)."""
        spec = self.task(task)
        missing = [k for k in INPUT_KEYS if k not in batch]
        if missing:
            raise ValueError(f"task {task!r}: the batch lacks {missing} (got {sorted(batch)}); "
                             f"make it with model.collate({task!r}, examples)")
        hidden = self.encoder.bert(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                                   output_hidden_states=bool(spec.branch), pool=False)
        features = self.task_features(task, hidden, batch["attention_mask"], encoder_grad)
        head = self.heads[task]
        logits = head(features, batch) if getattr(head, "reads_batch", False) else head(features)
        loss = spec.compute_loss(logits, batch) if "labels" in batch else None
        shared = None  # the encoder's own embedding, what the export reads: the head's unless the task has layers
        if encoder_embedding:  # of its own between them
            shared = features.embedding if not (spec.adapter or spec.branch) else \
                self.task_features(task, hidden, batch["attention_mask"], encoder_grad, own=False).embedding
        return TaskOutput(loss, logits, features.embedding, shared)

    def task_features(self, task: str, hidden: BertOutput, attention_mask: torch.Tensor,
                      encoder_grad: float = 1.0, own: bool = True) -> SentenceFeatures:
        """What ``task``'s head reads from the encoder's output: through the task's branch and adapter when it
        has them (and ``own``), then the pipeline's pooling; the gradient back into the encoder scaled by
        ``encoder_grad``."""
        head = self.heads[task]
        if own and self.task(task).branch:  # the task's own top layers, on the shared states below them
            below = scale_gradient(hidden.hidden_states[head.branch.start], encoder_grad)
            bias = self.encoder.bert.attention_bias(below.shape[1])  # MPNet's: from a table the encoder owns
            bias = scale_gradient(bias, encoder_grad) if bias is not None else None
            token_states = head.branch(below, attention_mask, bias)
        else:
            token_states = scale_gradient(hidden.last_hidden_state, encoder_grad)
        if own and self.task(task).adapter:
            token_states = head.adapter(token_states)
        features = self.encoder.pool_states(token_states, attention_mask)
        if encoder_grad == 1.0:
            return features
        # a masked-LM head decodes with the word embeddings themselves: they are encoder weights too
        return features._replace(word_embeddings=scale_gradient(features.word_embeddings, encoder_grad))

    # ---- saving ----------------------------------------------------------------------------------

    def export_sentence_transformers(self, folder: str | Path) -> None:
        """The encoder + pooling (+ Normalize) as a folder that sentence-transformers loads."""
        save_sentence_transformers_folder(self.encoder, folder)

    def save(self, folder: str | Path) -> None:
        """Encoder in Hugging Face / sentence-transformers layout, every head in heads.safetensors,
        and the tasks in tasks.json."""
        folder = Path(folder)
        self.export_sentence_transformers(folder)
        heads = {f"{name}.{k}": t for name, head in self.heads.items() for k, t in head.state_dict().items()}
        save_tensors(heads, folder / HEADS_FILE)
        spec = {"format": "minibert-multitask", "version": 2, "tasks": [t.to_dict() for t in self.tasks.values()]}
        (folder / TASKS_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None, path: str | None = None) -> MultiTaskModel:
        """A saved model, strictly: every head tensor that tasks.json implies, of the right shape. ``path``:
        the encoder's execution path (default: the device's)."""
        folder = Path(folder)
        specs, version, spec_path = read_task_specs(folder)
        if version not in (1, 2):
            raise ValueError(f"{spec_path}: format version {version!r} is not one this minibert reads (1, 2)")
        if version == 1:  # version 1 listed every type's options on every task: keep each type's own
            if any(t["type"] == "cross_sts" for t in specs):
                raise ValueError(f"{spec_path}: a version-1 cross_sts head (a linear layer on [CLS]) cannot be "
                                 "loaded into today's (pooler layer + linear); train the cross-encoder again")
            specs = [{k: v for k, v in t.items() if k in ("name", "type", "labels")
                      or k in TASK_TYPES.get(t["type"], Task).option_names()} for t in specs]
        try:
            tasks = [make_task(t) for t in specs]
        except (ValueError, TypeError) as e:
            raise ValueError(f"{spec_path}: {e}") from e
        # built on the reference path, as from_encoder (a branch copies reference blocks), then moved to ``path``
        encoder = SentenceEncoder.from_pretrained(folder, device=device, dtype=dtype, path="reference")
        model = cls(encoder, tasks)
        model.load_heads(folder)
        model.to(device=device, dtype=dtype)
        model.encoder = encoder.to_path(path or default_path(encoder.device))
        return model.eval()

    def masked_lm(self, task: str | None = None):
        """The encoder with a masked_lm task's head (the only one when ``task`` is None), weights shared: a
        ``minibert.mlm.MaskedLanguageModel`` that fills in masks and saves in transformers' layout."""
        from minibert.mlm import MaskedLanguageModel, masked_lm_tokenizer

        mlm = [n for n, t in self.tasks.items() if t.type == "masked_lm"]
        names = mlm if task is None else [task]
        if len(names) != 1 or names[0] not in mlm:
            raise ValueError(f"name one masked_lm task of this model, one of {mlm}" if mlm else
                             "this model has no masked_lm task")
        tokenizer = self.encoder.tokenizer  # read from its files as transformers reads them, where it has files
        tokenizer = tokenizer if tokenizer.source is None else masked_lm_tokenizer(tokenizer.source, self.encoder.bert)
        return MaskedLanguageModel(self.encoder.bert, self.heads[names[0]].mlm_head, tokenizer).eval()

    def head_shapes(self, names) -> dict[str, tuple[int, ...]]:
        """heads.safetensors key -> shape, for the heads of the tasks ``names``."""
        return {f"{name}.{k}": tuple(t.shape) for name in names for k, t in self.heads[name].state_dict().items()}

    def load_heads(self, folder: str | Path) -> None:
        """Every head's weights from a saved model's heads.safetensors, strictly: each tensor this model's
        tasks imply, nothing else, every shape checked."""
        saved, heads_path = read_heads(folder)
        check_tensors(saved, self.head_shapes(self.heads), str(heads_path), str(Path(folder) / TASKS_FILE))
        self.assign_heads(saved, self.heads)

    def transfer_heads(self, folder: str | Path, source: str = "this run's configuration") -> list[str]:
        """The heads of the tasks this model shares with a saved model (a task added to a trained model):
        each shared task must have the same type, labels and weights there; the others keep their fresh
        heads. ``source`` names where this model's tasks come from, for the errors. Returns the names loaded."""
        specs, _, spec_path = read_task_specs(Path(folder))
        theirs = {t["name"]: t for t in specs}
        shared = [name for name in self.tasks if name in theirs]
        saved, heads_path = read_heads(folder)
        for name in shared:
            ours = self.tasks[name].to_dict()
            for key in ("type", "labels"):
                if theirs[name].get(key) != ours.get(key):
                    raise ValueError(f"{spec_path}: task {name!r} has {key} {theirs[name].get(key)!r}, "
                                     f"{source} has {ours.get(key)!r}")
            their_weights = {k: t for k, t in saved.items() if k.startswith(name + ".")}  # other options: other keys
            check_tensors(their_weights, self.head_shapes([name]), f"{heads_path} (task {name!r})", source)
        self.assign_heads(saved, shared)
        return shared

    def assign_heads(self, saved: dict[str, torch.Tensor], names) -> None:
        for name in names:
            prefix = name + "."
            self.heads[name].load_state_dict({k[len(prefix):]: t for k, t in saved.items() if k.startswith(prefix)})


def read_task_specs(folder: Path) -> tuple[list[dict], object, Path]:
    """(each task's dict, the format version, the path) of a saved model's tasks.json, each task checked
    to have a string name (used once) and type."""
    spec_path = folder / TASKS_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"no {TASKS_FILE} in {folder}: not a saved multi-task model")
    raw = read_json(spec_path)
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list):
        raise ValueError(f"{spec_path}: not a task specification (expected {{'tasks': [...]}})")
    for i, t in enumerate(raw["tasks"]):
        if not isinstance(t, dict) or not isinstance(t.get("type"), str) or not isinstance(t.get("name"), str):
            raise ValueError(f"{spec_path}: task {i} needs a string name and type, got {t!r}")
    names = [t["name"] for t in raw["tasks"]]
    if len(set(names)) != len(names):
        raise ValueError(f"{spec_path}: a task name is used twice: {names}")
    return raw["tasks"], raw.get("version"), spec_path


def read_heads(folder: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors of a saved model's heads.safetensors, and its path."""
    heads_path = Path(folder) / HEADS_FILE
    if not heads_path.is_file():
        raise FileNotFoundError(f"head weights not found: {heads_path}")
    try:
        return load_file(heads_path), heads_path
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{heads_path}: not a readable safetensors file ({e})") from e

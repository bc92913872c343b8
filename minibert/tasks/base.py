"""What a task type is: one class that holds everything minibert knows about one kind of task.

A ``Task`` is a dataclass: its fields are the task's name, its label names and its head options, and
``tasks.json`` stores exactly those. Its methods cover the task's whole life:

    read(path)                      the data file format          -> examples (minibert.data)
    collate(examples, tokenizer)    tokenization and label ids    -> a dict of tensors
    build_head(encoder)             the small module on the encoder
    compute_loss(logits, batch)     the training objective
    predict(logits, batch, examples)  logits -> what a user reads, one dict per example
    metrics(predictions, examples)  the scores (``main_metric`` picks the best checkpoint)

A subclass decorated with ``@register`` is a task type: the registry maps its ``type`` name to it.
``LabelTask`` holds what the one-label-per-example types (classification, NLI) share.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minibert.data import is_integer
from minibert.metrics import accuracy, macro_f1, pearson, spearman
from minibert.typecheck import check_types, type_ok

TASK_TYPES: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` the task type called ``cls.type``."""
    if cls.type in TASK_TYPES and TASK_TYPES[cls.type] is not cls:
        raise ValueError(f"task type {cls.type!r} is taken by {TASK_TYPES[cls.type].__name__}")
    TASK_TYPES[cls.type] = cls
    return cls


def task_type(name: str, task: str = "?") -> type[Task]:
    if name not in TASK_TYPES:
        raise ValueError(f"task {task!r}: unknown type {name!r}; choose from {tuple(TASK_TYPES)}")
    return TASK_TYPES[name]


def check_options(task: str, type_name: str, options: dict | list) -> None:
    """Every option is one that this task type reads: a misspelt or misplaced option is an error,
    never silently ignored (the training configuration checks its ``head`` table through here)."""
    cls = task_type(type_name, task)
    wrong = sorted(set(options) - set(cls.option_names()))
    if wrong:
        raise ValueError(f"task {task!r}: option(s) {wrong} do not apply to task type {type_name!r}; "
                         f"its options are {cls.option_names()}")


def make_task(raw: dict) -> Task:
    """A task from its ``tasks.json`` form: ``{"name", "type", "labels", **options}``."""
    if not isinstance(raw, dict) or "name" not in raw or "type" not in raw:
        raise ValueError(f"task specification {raw!r} needs at least 'name' and 'type'")
    name, cls = raw["name"], task_type(raw["type"], raw["name"])
    check_options(name, raw["type"], [k for k in raw if k not in ("name", "type", "labels")])
    return cls(**{k: v for k, v in raw.items() if k != "type"})


@dataclass
class Task:
    type: ClassVar[str]
    main_metric: ClassVar[str]  # the metric that chooses the best checkpoint
    input: ClassVar[str]  # "sentence" or "pair": what `predict` feeds it
    saved_as: ClassVar[str | None] = None  # a form this type's model is also saved in: no adapter or branch

    name: str
    labels: list[str] = field(default_factory=list)
    adapter: int = 0  # width of a task adapter on the encoder's token states (minibert.adapter); 0: none
    branch: int = 0  # the task's own copy of the encoder's top ``branch`` layers (minibert.branch); 0: none

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ValueError(f"task name {self.name!r}: use letters, digits, '_' and '-' only")
        if not type_ok(self.labels, list[str | int]):
            raise ValueError(f"task {self.name!r}: labels must be a list of names, got {self.labels!r}")
        check_types(self, f"task {self.name!r}: ", skip=("labels",))
        if self.adapter < 0:
            raise ValueError(f"task {self.name!r}: adapter is a width (0 for none), got {self.adapter}")
        if self.branch < 0:
            raise ValueError(f"task {self.name!r}: branch is a number of layers (0 for none), got {self.branch}")
        for option in ("adapter", "branch"):
            if getattr(self, option) and self.saved_as:
                raise ValueError(f"task {self.name!r} ({self.type}) takes no {option}: its model is saved as a "
                                 f"{self.saved_as}, which has no place for one")
        self.labels = [str(label) for label in self.labels]
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"task {self.name!r}: duplicate label names in {self.labels}")
        self.check()

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in ("name", "labels")]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, **{k: v for k, v in asdict(self).items() if k != "name"}}

    # ---- what each type defines ------------------------------------------------------------------

    def check(self) -> None:
        """Validate the options and labels (called when the task is made)."""

    @staticmethod
    def read(path, skip_bad: bool = False) -> list:
        raise NotImplementedError

    @staticmethod
    def infer_labels(examples: list) -> list[str]:
        """Label names for a task whose configuration does not list them (default: none)."""
        return []

    def example(self, text: str | tuple[str, str], tokenizer) -> Any:
        """An unlabelled example from what a user typed (a sentence, or a pair for pair tasks)."""
        raise NotImplementedError

    def collate(self, examples: list, tokenizer) -> dict[str, torch.Tensor]:
        """Examples -> model inputs (and ``labels`` when every example has one), all tensors."""
        raise NotImplementedError

    def build_head(self, encoder) -> nn.Module:
        raise NotImplementedError

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> int:
        """How many terms the loss averages over; the trainer weights micro-batches by it."""
        return len(batch["labels"])

    def predict(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], examples: list) -> list[dict]:
        raise NotImplementedError

    def metrics(self, predictions: list[dict], examples: list) -> dict[str, float]:
        raise NotImplementedError

    def label_ids(self, labels: list) -> torch.Tensor:
        """Label names, or ids 0..n-1, -> a tensor of ids. A name is looked up first; an integer is an id
        only when the names are not numbers themselves (names "1".."4" read from a file mean 1 is "1")."""
        numeric_names = all(is_integer(name) for name in self.labels)
        ids = []
        for i, label in enumerate(labels):
            is_int = isinstance(label, (int, np.integer)) and not isinstance(label, bool)
            if str(label) in self.labels:
                ids.append(self.labels.index(str(label)))
            elif is_int and not numeric_names and 0 <= label < len(self.labels):
                ids.append(int(label))
            else:
                raise ValueError(f"task {self.name!r}: label {label!r} (example {i}) is not one of {self.labels}"
                                 + ("" if numeric_names or isinstance(label, str) else
                                    f" nor an id in 0..{len(self.labels) - 1}"))
        return torch.tensor(ids, dtype=torch.long)


@dataclass
class LabelTask(Task):
    """A task with one label per example (classification, NLI): logits -> cross-entropy, softmax
    probabilities, accuracy and macro-F1."""

    main_metric = "accuracy"

    def check(self) -> None:
        if len(self.labels) < 2:
            raise ValueError(f"task {self.name!r}: needs at least two label names, got {self.labels}")

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])

    def predict(self, logits: torch.Tensor, batch: dict, examples: list) -> list[dict]:
        rows = []
        for probs in logits.float().softmax(-1).cpu():
            best = int(probs.argmax())
            rows.append({"label": self.labels[best], "probability": float(probs[best]),
                         "probabilities": {label: float(p) for label, p in zip(self.labels, probs, strict=True)}})
        return rows

    def metrics(self, predictions: list[dict], examples: list) -> dict[str, float]:
        pred = [self.labels.index(p["label"]) for p in predictions]
        gold = self.label_ids([e.label for e in examples]).tolist()
        return {"accuracy": accuracy(pred, gold), "macro_f1": macro_f1(pred, gold, len(self.labels))}


def check_score_task(task: Task, max_score: float) -> None:
    """Pair scoring tasks (sts, cross_sts) take gold numbers, not label names, on a 0..max_score scale."""
    if task.labels:
        raise ValueError(f"task {task.name!r} ({task.type}) scores pairs and takes no label names, got {task.labels}")
    if not max_score > 0:
        raise ValueError(f"task {task.name!r}: max_score must be positive, got {max_score}")


def collate_pairs(examples: list, tokenizer) -> dict[str, torch.Tensor]:
    """A bi-encoder batch: the B first sentences, then the B second ones, as one (2B, L) batch, so the
    encoder runs once; the head splits the embeddings back into u and v."""
    return tokenizer([e.a for e in examples] + [e.b for e in examples]).tensors()


def score_metrics(predicted: list[float], gold: list[float]) -> dict[str, float]:
    """Spearman and Pearson correlation of predicted and gold similarity scores."""
    p, g = np.asarray(predicted, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    return {"spearman": spearman(p, g), "pearson": pearson(p, g)}


def has_labels(examples: list, attribute: str = "label") -> bool:
    return bool(examples) and all(getattr(e, attribute) is not None for e in examples)

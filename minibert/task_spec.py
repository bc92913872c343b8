"""What a task is: its type, label names and head options, checked when the spec is made.

A ``TaskSpec`` is plain data: ``MultiTaskModel`` builds a head from it, saves it as ``tasks.json``
next to the weights, and the training configuration checks its ``head`` table against the same
``HEAD_OPTIONS``, so a misspelt or misplaced option fails before any data is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from minibert.heads import STS_LOSSES
from minibert.ner import check_bio_labels

# The head options each task type reads; setting any other one is an error, not silently ignored.
HEAD_OPTIONS = {
    "classification": ("dropout", "hidden_layer"),
    "token_classification": ("dropout", "label_all_pieces"),
    "nli": ("concat_rep", "concat_difference", "concat_multiplication"),
    "sts": ("loss", "max_score"),
    "cross_sts": ("dropout", "max_score"),
}
TASK_TYPES = tuple(HEAD_OPTIONS)
SCORE_TASKS = ("sts", "cross_sts")  # gold is a number (0..max_score), not a label
NLI_LABELS = ["entailment", "neutral", "contradiction"]


def check_head_options(name: str, task_type: str, options: Iterable[str]) -> None:
    """The task type exists and reads every one of these head options (TaskSpec and the training
    configuration both check through here)."""
    if task_type not in HEAD_OPTIONS:
        raise ValueError(f"task {name!r}: unknown type {task_type!r}; choose from {TASK_TYPES}")
    wrong = sorted(set(options) - set(HEAD_OPTIONS[task_type]))
    if wrong:
        raise ValueError(f"task {name!r}: option(s) {wrong} do not apply to task type {task_type!r}; "
                         f"its options are {list(HEAD_OPTIONS[task_type])}")


@dataclass
class TaskSpec:
    """What a task is: its name, type, label names and head options."""

    name: str
    type: str
    labels: list[str] = field(default_factory=list)
    dropout: float = 0.1
    hidden_layer: bool = False  # classification: an extra linear + GELU + LayerNorm
    label_all_pieces: bool = False  # token_classification: label every word piece, not just the first
    concat_rep: bool = True  # nli: the SoftmaxLoss flags
    concat_difference: bool = True
    concat_multiplication: bool = False
    loss: str = "cosine_mse"  # sts: "cosine_mse" (CosineSimilarityLoss) or "cosent"
    max_score: float = 5.0  # sts, cross_sts: gold scores run 0..max_score

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(self.name)):
            raise ValueError(f"task name {self.name!r}: use letters, digits, '_' and '-' only")
        set_options = [f.name for f in fields(self)
                       if f.name not in ("name", "type", "labels") and getattr(self, f.name) != f.default]
        check_head_options(self.name, self.type, set_options)  # saved specs hold every option, at its default
        if self.type in SCORE_TASKS and self.labels:
            raise ValueError(f"task {self.name!r} ({self.type}) scores pairs and takes no label names, "
                             f"got {self.labels}")
        if self.type == "sts" and self.loss not in STS_LOSSES:
            raise ValueError(f"task {self.name!r}: loss {self.loss!r} is not one of {STS_LOSSES}")
        if self.type in SCORE_TASKS and not self.max_score > 0:
            raise ValueError(f"task {self.name!r}: max_score must be positive, got {self.max_score}")
        if self.type == "nli" and not self.labels:
            self.labels = list(NLI_LABELS)
        if self.type not in SCORE_TASKS and len(self.labels) < 2:
            raise ValueError(f"task {self.name!r}: needs at least two label names, got {self.labels}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"task {self.name!r}: duplicate label names in {self.labels}")
        if self.type == "token_classification":
            check_bio_labels(self.labels, self.name)

    @classmethod
    def from_dict(cls, raw: dict) -> TaskSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"task {raw.get('name')!r}: unknown option(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("name", "type") if k not in raw]
        if missing:
            raise ValueError(f"task specification {raw} lacks {missing}")
        return cls(**raw)

"""Distillation: a multi-task run that keeps what a teacher knows, in two kinds.

**From a teacher's embeddings** (``optim.distill_from``). Training the heads of several tasks moves the shared
encoder, and with it the sentence embedding that cosine similarity (STS) and retrieval read: a task trained
alone on that embedding keeps it where it serves that task, the multi-task run lets the other tasks drag it
away. A term pulls the student's embedding of every training input towards a frozen teacher's
(sentence-transformers' MSE distillation, as a cosine):

    loss = task loss + distill_weight * mean over the batch of (1 - cos(student(x), teacher(x)))

The teacher is any sentence-encoder folder: the pretrained model itself (keep the general embedding
while the heads train), or a model trained on one task alone.

Which student embedding (``optim.distill_at``): for a task with layers of its own (an adapter,
``minibert.adapter``, or a branch, ``minibert.branch``) there are two. "head" pulls the embedding the task's
head reads, through those layers, so they are held near where they started too; "encoder" pulls the shared
encoder's own embedding, the one STS and the exported model read, and leaves the task's own layers free to
serve it. Without them the two are the same.

**From a task's own teacher's predictions** (a task's ``teacher``: "born-again" multi-task networks, Clark
et al., 2019). The model that task was trained alone into teaches the shared model its class
probabilities, which say more than the gold label does (how close the second-best class came). The task's
cross-entropy is taken against a mix of the two, with teacher annealing: the teacher's share falls
linearly from all at the first step towards none at the end, so the student starts by imitating the
teacher and ends on the gold labels, free to pass it:

    target = g * one_hot(gold) + (1 - g) * softmax(teacher logits),   g = step / steps
    loss   = mean over the task's terms (examples, or labelled word pieces) of -sum_c target_c log p_c

For the types whose loss is a cross-entropy over the head's classes (classification, NLI, token
classification); at g = 1 the formula is that loss exactly.

With ``teacher_gold`` the share g is held from the first step to the last instead (knowledge distillation as
Hinton et al., 2015, mix it): the student keeps imitating the teacher to the end, so where the aim is to
lose nothing to that task trained alone, it is pulled towards the very model it is measured against.

Either teacher runs without gradients, in eval mode, on the same input rows as the student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minibert.multitask import MultiTaskModel
from minibert.ner import IGNORE_INDEX
from minibert.sentence import SentenceEncoder
from minibert.tasks import Task

TEACHABLE = ("classification", "nli", "token_classification")  # losses: cross-entropy over the classes


def check_teachable(where: str, task_type: str) -> None:
    if task_type not in TEACHABLE:
        raise ValueError(f"{where}: the loss of a task of type {task_type!r} is not a cross-entropy over classes; "
                         f"a teacher teaches {', '.join(TEACHABLE)} tasks")

DISTILL_AT = ("head", "encoder")


class EmbeddingTeacher:
    """A frozen sentence encoder whose embeddings the student is pulled towards (not a module of the model:
    it is never trained, saved or wrapped by DDP)."""

    def __init__(self, name_or_path: str, student: SentenceEncoder, path: str) -> None:
        try:
            self.encoder = SentenceEncoder.from_pretrained(name_or_path, device=student.device, path=path).eval()
        except (OSError, ValueError) as e:
            raise ValueError(f"optim.distill_from = {name_or_path!r}: {e}") from e
        self.encoder.requires_grad_(False)
        if self.encoder.tokenizer.backend.get_vocab() != student.tokenizer.backend.get_vocab():
            raise ValueError(f"optim.distill_from = {name_or_path!r}: its vocabulary differs from the model's; the "
                             "teacher reads the model's token ids, so it must share the model's tokenizer")
        if self.encoder.embedding_dim != student.embedding_dim:
            raise ValueError(f"optim.distill_from = {name_or_path!r}: its embeddings are {self.encoder.embedding_dim}"
                             f"-wide, the model's {student.embedding_dim}: distil from a model of the same width")

    @torch.no_grad()
    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder.features(batch["input_ids"], batch["attention_mask"],
                                     batch.get("token_type_ids")).embedding

    def loss(self, student: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cosine distance of the student's embeddings (B, D) from the teacher's of the same rows."""
        return (1 - F.cosine_similarity(student.float(), self.embed(batch).float(), dim=-1)).mean()


class TaskTeacher:
    """A frozen multi-task model (a folder ``MultiTaskModel.save`` wrote: the run of a task alone, say) whose
    head for ``task`` teaches the student's head for it: same task name and type, same labels in the same
    order, same tokenizer."""

    def __init__(self, folder: str, task: Task, student: MultiTaskModel, path: str, held: float | None = None) -> None:
        where = f"task {task.name!r}: teacher = {folder!r}"
        check_teachable(where, task.type)
        try:
            self.model = MultiTaskModel.load(folder, device=student.device, path=path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from e
        self.model.requires_grad_(False)
        own = self.model.tasks.get(task.name)
        if own is None or own.type != task.type:
            raise ValueError(f"{where}: it has no {task.type} task named {task.name!r} "
                             f"(it has: {', '.join(f'{n} ({t.type})' for n, t in self.model.tasks.items())})")
        if list(own.labels) != list(task.labels):
            raise ValueError(f"{where}: its labels {own.labels} are not this task's {task.labels} (in this order)")
        if self.model.encoder.tokenizer.backend.get_vocab() != student.encoder.tokenizer.backend.get_vocab():
            raise ValueError(f"{where}: its vocabulary differs from the model's; the teacher reads the model's "
                             "token ids, so it must share the model's tokenizer")
        self.task = task.name
        self.held = held  # the gold labels' share of the targets throughout (teacher_gold), or None: annealed

    @torch.no_grad()
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's head's logits for the student's batch (the same token ids), without its labels."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.model(self.task, inputs).logits

    def loss(self, student_logits: torch.Tensor, batch: dict[str, torch.Tensor], step: int, steps: int) -> torch.Tensor:
        """The student's loss on ``batch`` at ``step`` of ``steps``: against targets that are the gold labels'
        share (``gold_share``) gold label, the rest the teacher's."""
        gold = gold_share(step, steps, self.held)
        return soft_target_loss(student_logits, self.logits(batch), batch["labels"], gold)


def gold_share(step: int, steps: int, held: float | None = None) -> float:
    """The gold label's share of the target at ``step`` (0-based) of ``steps``: ``held`` throughout where it is
    given, else teacher annealing, 0 at the first step, rising linearly towards 1."""
    return held if held is not None else step / steps


def soft_target_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                     gold: float) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (..., C) against ``gold`` * one-hot(labels) + (1 - gold) * the
    teacher's softmax, over the positions whose label is not ``IGNORE_INDEX``."""
    classes = logits.shape[-1]
    log_p = logits.float().reshape(-1, classes).log_softmax(-1)
    labels = labels.reshape(-1)
    kept = labels != IGNORE_INDEX
    target = teacher_logits.float().reshape(-1, classes).softmax(-1) * (1 - gold)
    target[kept, labels[kept]] += gold
    per_term = -(target * log_p).sum(-1)[kept]
    return per_term.mean() if len(per_term) else log_p.sum() * 0.0

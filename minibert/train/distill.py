"""Distillation from a teacher's embeddings: a multi-task run that keeps what a single-task model knows.

Training the heads of several tasks moves the shared encoder, and with it the sentence embedding that
cosine similarity (STS) and retrieval read: a task trained alone on that embedding keeps it where it
serves that task, the multi-task run lets the other tasks drag it away. Distillation ("born-again"
multi-task networks, Clark et al., 2019, and sentence-transformers' MSE distillation) adds a term that
pulls the student's embedding of every training input towards a frozen teacher's:

    loss = task loss + distill_weight * mean over the batch of (1 - cos(student(x), teacher(x)))

The teacher is any sentence-encoder folder: the pretrained model itself (keep the general embedding
while the heads train), or a model trained on one task alone (teach the shared model what it learned).
It runs without gradients, in eval mode, on the same input rows as the student.

Which student embedding (``optim.distill_at``): for a task with layers of its own (an adapter,
``minibert.adapter``, or a branch, ``minibert.branch``) there are two. "head" pulls the embedding the task's
head reads, through those layers, so they are held near where they started too; "encoder" pulls the shared
encoder's own embedding, the one STS and the exported model read, and leaves the task's own layers free to
serve it. Without them the two are the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minibert.sentence import SentenceEncoder

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

"""Sentence classification (topic, sentiment): the pooled sentence embedding -> one label."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minibert.data import TextExample, read_classification
from minibert.tasks.base import LabelTask, has_labels, register


class SentenceClassificationHead(nn.Module):
    """embedding -> dropout -> [linear -> GELU -> LayerNorm] -> linear -> class logits.

    Without the hidden layer the softmax reads the embedding directly, so its gradient reshapes the
    very space that cosine similarity is measured in; the hidden layer gives the classifier a space
    of its own, which matters when the same encoder also serves STS.
    """

    def __init__(self, dim: int, num_labels: int, dropout: float = 0.1, hidden_layer: bool = False) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim)) if hidden_layer else None
        self.out = nn.Linear(dim, num_labels)

    def forward(self, features) -> torch.Tensor:
        x = self.dropout(features.embedding)
        if self.hidden is not None:
            x = self.hidden(x)
        return self.out(x)


@register
@dataclass
class Classification(LabelTask):
    type = "classification"
    input = "sentence"

    dropout: float = 0.1
    hidden_layer: bool = False  # an extra linear + GELU + LayerNorm before the output layer

    read = staticmethod(read_classification)

    @staticmethod
    def infer_labels(examples: list[TextExample]) -> list[str]:
        """The distinct labels of the data, in sorted order (numbers by value: "2" before "10")."""
        values = {e.label for e in examples}
        return [str(v) for v in sorted(values, key=lambda v: (isinstance(v, str), v))]

    def example(self, text: str, tokenizer) -> TextExample:
        return TextExample(text)

    def collate(self, examples: list[TextExample], tokenizer) -> dict[str, torch.Tensor]:
        batch = tokenizer([e.text for e in examples]).tensors()
        if has_labels(examples):
            batch["labels"] = self.label_ids([e.label for e in examples])
        return batch

    def build_head(self, encoder) -> nn.Module:
        return SentenceClassificationHead(encoder.embedding_dim, len(self.labels), self.dropout, self.hidden_layer)

"""Token classification (NER): every word-piece state -> a BIO tag; one prediction per word.

Labels are per word, the encoder's states per word piece. The first piece of a word carries the
word's label and the others are ignored (IGNORE_INDEX), so each word counts once in the loss; with
``label_all_pieces`` every piece is labelled. A word's prediction is read off its first piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minibert.data import TaggedSentence, read_conll
from minibert.metrics import entity_prf
from minibert.ner import IGNORE_INDEX, align_labels, bio_to_entities, check_bio_labels, first_piece_index
from minibert.tasks.base import Task, has_labels, register


class TokenClassificationHead(nn.Module):
    """per-token hidden state -> dropout -> linear -> tag logits (B, L, num_labels)."""

    def __init__(self, dim: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, num_labels)

    def forward(self, features) -> torch.Tensor:
        return self.out(self.dropout(features.token_states))


@register
@dataclass
class TokenClassification(Task):
    type = "token_classification"
    main_metric = "f1"
    input = "sentence"

    dropout: float = 0.1
    label_all_pieces: bool = False  # label every word piece (B-X continuation pieces get I-X)

    def check(self) -> None:
        if len(self.labels) < 2:
            raise ValueError(f"task {self.name!r}: needs at least two label names, got {self.labels}")
        check_bio_labels(self.labels, self.name)

    read = staticmethod(read_conll)

    @staticmethod
    def infer_labels(examples: list[TaggedSentence]) -> list[str]:
        types = sorted({t[2:] for ex in examples for t in ex.tags if t != "O"})
        return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]

    def example(self, text: str, tokenizer) -> TaggedSentence:
        return TaggedSentence(tokenizer.split_words(text))

    def collate(self, examples: list[TaggedSentence], tokenizer) -> dict[str, torch.Tensor]:
        """Input tensors plus ``word_ids`` (the word of each piece, -1 for specials and padding) and
        ``num_words``; with tags, ``labels`` (B, L) aligned to the pieces."""
        tokens = tokenizer([e.words for e in examples], is_pretokenized=True)
        batch = tokens.tensors()
        batch["word_ids"] = torch.tensor([[-1 if w is None else w for w in row] for row in tokens.word_ids],
                                         dtype=torch.long).view(tokens.input_ids.shape)
        batch["num_words"] = torch.tensor([len(e.words) for e in examples], dtype=torch.long)
        if has_labels(examples, "tags"):
            inside_of = {self.labels.index(t): self.labels.index("I-" + t[2:]) for t in self.labels
                         if t.startswith("B-") and "I-" + t[2:] in self.labels}
            rows = []
            for i, e in enumerate(examples):
                if len(e.words) != len(e.tags):
                    raise ValueError(f"task {self.name!r}: sentence {i} has {len(e.words)} words but "
                                     f"{len(e.tags)} labels")
                ids = self.label_ids(e.tags).tolist()
                rows.append(align_labels(tokens.word_ids[i], ids, self.label_all_pieces, inside_of))
            batch["labels"] = torch.tensor(rows, dtype=torch.long).view(tokens.input_ids.shape)
        return batch

    def build_head(self, encoder) -> nn.Module:
        return TokenClassificationHead(encoder.bert.config.hidden_size, len(self.labels), self.dropout)

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean over the labelled pieces (specials, padding and non-first pieces do not count); 0, not
        NaN, for a batch without any, so that it adds nothing to an accumulated step."""
        labels = batch["labels"].flatten()
        total = F.cross_entropy(logits.float().flatten(0, 1), labels, ignore_index=IGNORE_INDEX, reduction="sum")
        return total / (labels != IGNORE_INDEX).sum().clamp(min=1)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def predict(self, logits: torch.Tensor, batch: dict, examples: list[TaggedSentence]) -> list[dict]:
        """One tag per word, from its first piece ('O' for words that truncation cut off), and the spans."""
        tag_ids = logits.argmax(-1).cpu()
        word_ids, num_words = batch["word_ids"].cpu(), batch["num_words"].tolist()
        rows = []
        for i, example in enumerate(examples):
            pieces = [w if w >= 0 else None for w in word_ids[i].tolist()]
            tags = [self.labels[tag_ids[i, p]] if p is not None else "O"
                    for p in first_piece_index(pieces, num_words[i])]
            entities = [e.as_dict() for e in bio_to_entities(tags, example.words)]
            rows.append({"words": example.words, "tags": tags, "entities": entities})
        return rows

    def metrics(self, predictions: list[dict], examples: list[TaggedSentence]) -> dict[str, float]:
        return entity_prf([p["tags"] for p in predictions], [e.tags for e in examples])

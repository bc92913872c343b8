"""Natural language inference, SBERT style: each sentence embedded on its own (u and v), then a
linear classifier over (u, v, |u-v|) decides entailment / neutral / contradiction.

The SBERT paper's classification objective (Reimers & Gurevych 2019, section 3): softmax(W (u, v, |u - v|))
trained with cross-entropy, u the premise's embedding and v the hypothesis's. The paper's u and v were mean
pooled token states; on a model whose folder ends in a Normalize module (all-MiniLM-L6-v2) they are unit
vectors, so |u - v| only tells directions apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minibert.data import PairExample, read_nli
from minibert.tasks.base import LabelTask, collate_pairs, has_labels, register

NLI_LABELS = ["entailment", "neutral", "contradiction"]  # ids 0, 1, 2, as SNLI and MultiNLI number them


class NLIHead(nn.Module):
    """SBERT's classifier (Reimers & Gurevych 2019): linear(concat(u, v, |u-v| [, u * v])), where u * v is the
    element-wise product.

    The flags are sentence-transformers' SoftmaxLoss flags; |u-v| tells the classifier *where* the
    two sentences differ, which the concatenation alone makes hard to learn. With ``projection``, u and
    v first pass through one shared linear + GELU + LayerNorm: the classifier then compares them in a
    space of its own instead of reshaping the embedding space that cosine similarity reads.
    """

    def __init__(self, dim: int, num_labels: int = 3, concat_rep: bool = True, concat_difference: bool = True,
                 concat_multiplication: bool = False, projection: bool = False) -> None:
        super().__init__()
        n_vectors = 2 * concat_rep + concat_difference + concat_multiplication
        if n_vectors == 0:
            raise ValueError("NLIHead needs at least one of concat_rep, concat_difference, concat_multiplication")
        self.concat_rep, self.concat_difference, self.concat_multiplication = (
            concat_rep, concat_difference, concat_multiplication)
        self.projection = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim)) if projection else None
        self.classifier = nn.Linear(n_vectors * dim, num_labels)

    def forward(self, features) -> torch.Tensor:
        # collate_pairs put the B premises before the B hypotheses: the first half is u, the second v
        u, v = features.embedding.chunk(2)
        if self.projection is not None:
            u, v = self.projection(u), self.projection(v)
        parts = [u, v] if self.concat_rep else []
        if self.concat_difference:
            parts.append(torch.abs(u - v))
        if self.concat_multiplication:
            parts.append(u * v)
        return self.classifier(torch.cat(parts, dim=-1))


@register
@dataclass
class NLI(LabelTask):
    type = "nli"
    input = "pair"

    concat_rep: bool = True  # sentence-transformers' SoftmaxLoss flags
    concat_difference: bool = True
    concat_multiplication: bool = False
    projection: bool = False  # u and v through a shared linear + GELU + LayerNorm before they are compared

    def check(self) -> None:
        if not self.labels:
            self.labels = list(NLI_LABELS)
        super().check()

    read = staticmethod(read_nli)

    @staticmethod
    def infer_labels(examples: list[PairExample]) -> list[str]:
        return list(NLI_LABELS)

    def example(self, pair: tuple[str, str], tokenizer) -> PairExample:
        return PairExample(*pair)

    def collate(self, examples: list[PairExample], tokenizer) -> dict[str, torch.Tensor]:
        batch = collate_pairs(examples, tokenizer)
        if has_labels(examples):
            batch["labels"] = self.label_ids([e.label for e in examples])
        return batch

    def build_head(self, encoder) -> nn.Module:
        return NLIHead(encoder.embedding_dim, len(self.labels), self.concat_rep, self.concat_difference,
                       self.concat_multiplication, self.projection)

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the classifier's three logits against each pair's gold label (as SoftmaxLoss)."""
        return F.cross_entropy(logits.float(), batch["labels"])

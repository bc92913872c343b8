"""Retrieval pairs with in-batch negatives: embed (anchor, positive[, hard negative]) and train each
anchor to pick its own positive among every candidate of the batch: the multiple-negatives ranking
loss of sentence-transformers (InfoNCE over scaled cosine similarities).

One labelled pair gives B - 1 negatives for free: the other anchors' positives (and hard negatives).
A candidate whose text equals the anchor's own positive is masked out, since it is not a negative.
The negatives are those of the batch one process sees, so accumulation and several processes train
with fewer negatives than one big batch would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minibert.data import RetrievalPair, read_pairs_tsv
from minibert.tasks.base import Task, register


class Embeddings(nn.Module):
    """No weights of its own: the loss compares the embeddings of anchors and candidates."""

    def forward(self, features) -> torch.Tensor:
        return features.embedding


@register
@dataclass
class Pairs(Task):
    type = "pairs"
    main_metric = "mrr@10"
    input = "pair"

    scale: float = 20.0  # the cosines are multiplied by this before the softmax (a temperature of 1/20)

    def check(self) -> None:
        if self.labels:
            raise ValueError(f"task {self.name!r} (pairs) takes no label names, got {self.labels}")
        if not self.scale > 0:
            raise ValueError(f"task {self.name!r}: scale must be positive, got {self.scale}")

    read = staticmethod(read_pairs_tsv)

    def example(self, pair: tuple[str, str], tokenizer) -> RetrievalPair:
        return RetrievalPair(*pair)

    def collate(self, examples: list[RetrievalPair], tokenizer) -> dict[str, torch.Tensor]:
        """Anchors, then positives, then (when every example has one) hard negatives, as one batch.
        ``labels[i] = i``: anchor i's positive is candidate i; ``same_text`` marks the other candidates
        whose text is anchor i's positive."""
        candidates = [e.positive for e in examples]
        if all(e.negative is not None for e in examples):
            candidates += [e.negative for e in examples]
        batch = tokenizer([e.anchor for e in examples] + candidates).tensors()
        batch["labels"] = torch.arange(len(examples))
        same = torch.tensor([[c == e.positive for c in candidates] for e in examples], dtype=torch.bool)
        batch["same_text"] = same & ~torch.eye(len(examples), len(candidates), dtype=torch.bool)
        return batch

    def build_head(self, encoder) -> nn.Module:
        return Embeddings()

    def scores(self, embeddings: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, candidates) scaled cosines of each anchor with every candidate; duplicates of the positive masked."""
        n = len(batch["labels"])
        emb = F.normalize(embeddings.float(), dim=-1)
        scores = self.scale * emb[:n] @ emb[n:].T
        return scores.masked_fill(batch["same_text"], float("-inf"))

    def compute_loss(self, embeddings: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self.scores(embeddings, batch), batch["labels"])

    def predict(self, embeddings: torch.Tensor, batch: dict, examples: list) -> list[dict]:
        """The anchor-positive cosine, and both embeddings (for ranking a whole evaluation set)."""
        n = len(examples)
        emb = F.normalize(embeddings.float(), dim=-1).cpu()
        return [{"score": float(emb[i] @ emb[n + i]), "anchor": emb[i].numpy(), "positive": emb[n + i].numpy()}
                for i in range(n)]

    def metrics(self, predictions: list[dict], examples: list) -> dict[str, float]:
        """Retrieval over the evaluation set: each anchor ranks every positive of the set (its own is the
        one relevant), ties counted against it. MRR@10 and recall@1 and @10."""
        anchors = np.stack([p["anchor"] for p in predictions])
        positives = np.stack([p["positive"] for p in predictions])
        sims = anchors @ positives.T
        own = np.diag(sims)[:, None]
        rank = (sims >= own).sum(axis=1)  # 1 = its own positive scores highest
        return {"mrr@10": float(np.mean(np.where(rank <= 10, 1.0 / rank, 0.0))),
                "recall@1": float(np.mean(rank <= 1)), "recall@10": float(np.mean(rank <= 10))}

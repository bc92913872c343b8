"""Retrieval pairs: embed (anchor, positive[, hard negative]) and train the anchor to be closer to its
positive than to what it should not retrieve. Two losses (``loss``):

- ``"mnrl"`` (default): each anchor picks its own positive among every candidate of the batch, the
  multiple-negatives ranking loss of sentence-transformers (InfoNCE over scaled cosine similarities; van den
  Oord 2018, Henderson 2017). One labelled pair gives B - 1 negatives for free: the other anchors'
  positives (and hard negatives). A candidate whose text equals the anchor's own positive is masked out,
  since it is not a negative. Under DDP the candidates of every process are gathered (with their gradients),
  so each anchor sees the whole global batch, as in one process; accumulation micro-batches still see only
  their own.
- ``"triplet"``: the SBERT paper's third objective (Reimers & Gurevych 2019, section 3), on (anchor,
  positive, negative) triplets: max(|a - p| - |a - n| + margin, 0), Euclidean distances, margin 5 by default
  as sentence-transformers' ``TripletLoss`` (the paper used 1). Each triplet sees its own negative only. The
  paper's embeddings were not normalised; on a model with a Normalize module every distance is at most 2, so a
  margin of 5 is never met and the loss is simply |a - p| - |a - n| + 5.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import nn

from minibert.data import RetrievalPair, read_pairs_tsv
from minibert.tasks.base import Task, register


def text_id(text: str) -> int:
    """A hash of the text that is the same in every process (Python's own hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def gathering() -> bool:
    """True in a DDP training step: several processes, and gradients on (evaluation runs on one process)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 and torch.is_grad_enabled()


class EmbeddingHead(nn.Module):
    """No weights of its own: the loss compares the embeddings of anchors and candidates."""

    def forward(self, features) -> torch.Tensor:
        return features.embedding


@register
@dataclass
class Pairs(Task):
    type = "pairs"
    saved_as = "sentence-transformers folder (what it predicts is the encoder's own embedding)"
    main_metric = "mrr@10"
    input = "pair"

    scale: float = 20.0  # mnrl: the cosines are multiplied by this before the softmax (a temperature of 1/20)
    loss: str = "mnrl"  # "mnrl" (in-batch negatives) or "triplet" (each anchor's own negative, with a margin)
    margin: float = 5.0  # triplet: how much further the negative must be than the positive

    def check(self) -> None:
        if self.labels:
            raise ValueError(f"task {self.name!r} (pairs) takes no label names, got {self.labels}")
        if not self.scale > 0 or not self.margin >= 0:
            raise ValueError(f"task {self.name!r}: scale must be positive and margin >= 0, got {self.scale}, "
                             f"{self.margin}")
        if self.loss not in ("mnrl", "triplet"):
            raise ValueError(f"task {self.name!r}: loss must be 'mnrl' or 'triplet', got {self.loss!r}")

    read = staticmethod(read_pairs_tsv)

    def example(self, pair: tuple[str, str], tokenizer) -> RetrievalPair:
        return RetrievalPair(*pair)

    def collate(self, examples: list[RetrievalPair], tokenizer) -> dict[str, torch.Tensor]:
        """Anchors, then positives, then (when every example has one) hard negatives, as one batch.
        ``labels[i] = i``: anchor i's positive is candidate i. The texts' ids let the loss recognise a
        candidate that repeats an anchor's positive."""
        candidates = [e.positive for e in examples]
        with_negatives = all(e.negative is not None for e in examples)
        if with_negatives:
            candidates += [e.negative for e in examples]
        batch = tokenizer([e.anchor for e in examples] + candidates).tensors()
        if self.loss == "mnrl" or with_negatives:  # (triplet pairs without negatives can only be scored)
            batch["labels"] = torch.arange(len(examples))
        batch["positive_ids"] = torch.tensor([text_id(e.positive) for e in examples], dtype=torch.long)
        batch["candidate_ids"] = torch.tensor([text_id(c) for c in candidates], dtype=torch.long)
        return batch

    def build_head(self, encoder) -> nn.Module:
        return EmbeddingHead()

    def scores(self, embeddings: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, candidates) scaled cosines of each anchor with every candidate, duplicates of its positive
        masked, and the column of each anchor's own positive. Under DDP the candidates are every process's:
        all processes' batches have the same shape, and the gathered candidates keep their gradients."""
        n, labels = len(batch["labels"]), batch["labels"]
        emb = F.normalize(embeddings.float(), dim=-1)
        anchors, candidates, candidate_ids = emb[:n], emb[n:], batch["candidate_ids"]
        if gathering():
            labels = labels + dist.get_rank() * len(candidates)
            candidates = torch.cat(dist_fn.all_gather(candidates))
            ids = [torch.empty_like(candidate_ids) for _ in range(dist.get_world_size())]
            dist.all_gather(ids, candidate_ids)
            candidate_ids = torch.cat(ids)
        scores = self.scale * anchors @ candidates.T
        repeats = candidate_ids[None, :] == batch["positive_ids"][:, None]
        repeats[torch.arange(n), labels] = False  # the positive itself stays
        return scores.masked_fill(repeats, float("-inf")), labels

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> int:
        if "labels" not in batch:
            raise ValueError(f"task {self.name!r}: the triplet loss needs a negative for every anchor (a third "
                             "tab-separated field on every line of its training file)")
        return len(batch["labels"])

    def compute_loss(self, embeddings: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.loss == "triplet":  # rows: the B anchors, then their positives, then their negatives
            anchor, positive, negative = embeddings.float().chunk(3)
            # Euclidean, as TripletLoss's: pairwise_distance adds 1e-6 to the difference (a gradient where a = p)
            distance = F.pairwise_distance
            return F.relu(distance(anchor, positive) - distance(anchor, negative) + self.margin).mean()
        return F.cross_entropy(*self.scores(embeddings, batch))

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

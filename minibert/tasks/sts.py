"""Semantic textual similarity, bi-encoder style: cos(u, v) of the two sentence embeddings is the
prediction, trained to follow the gold score (0..max_score).

The SBERT paper's regression objective (Reimers & Gurevych 2019, section 3): each sentence embedded on its
own, u for the first and v for the second, and the mean squared error between cos(u, v) and the gold score
scaled to [0, 1]. CoSENT (Su 2022) came later: it trains only the order of the pairs' cosines.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minibert.data import PairExample, read_sts_tsv
from minibert.tasks.base import Task, check_score_task, collate_pairs, has_labels, register, score_metrics

STS_LOSSES = ("cosine_mse", "cosent")


class CosineHead(nn.Module):
    """cos(u, v): no weights of its own; all the learning happens in the encoder."""

    def forward(self, features) -> torch.Tensor:
        # collate_pairs put the B first sentences before the B second ones: the halves are u and v
        u, v = features.embedding.chunk(2)
        return F.cosine_similarity(u.float(), v.float(), dim=-1)


@register
@dataclass
class STS(Task):
    """``loss="cosine_mse"`` is sentence-transformers' CosineSimilarityLoss: MSE between the cosine and
    the gold score scaled to [0, 1]. ``loss="cosent"`` is CoSENT: only the *ranking* of the pairs in a
    batch counts. CoSENT compares every pair with every other pair of its batch, so a batch split into
    micro-batches (accumulation, several processes) ranks pairs within each part only."""

    type = "sts"
    saved_as = "sentence-transformers folder (what it predicts is the encoder's own embedding)"
    main_metric = "spearman"
    input = "pair"

    loss: str = "cosine_mse"
    max_score: float = 5.0  # gold scores run 0..max_score
    cosent_scale: float = 20.0

    def check(self) -> None:
        check_score_task(self, self.max_score)
        if self.loss not in STS_LOSSES:
            raise ValueError(f"task {self.name!r}: loss {self.loss!r} is not one of {STS_LOSSES}")

    read = staticmethod(read_sts_tsv)

    def example(self, pair: tuple[str, str], tokenizer) -> PairExample:
        return PairExample(*pair)

    def collate(self, examples: list[PairExample], tokenizer) -> dict[str, torch.Tensor]:
        batch = collate_pairs(examples, tokenizer)
        if has_labels(examples):
            batch["labels"] = torch.tensor([float(e.label) for e in examples], dtype=torch.float32)
        return batch

    def build_head(self, encoder) -> nn.Module:
        return CosineHead()

    def compute_loss(self, cosine: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The cosine of each pair (what the head computed) against its gold score."""
        target = batch["labels"].float() / self.max_score  # gold 0..5 -> 0..1
        if self.loss == "cosine_mse":
            return F.mse_loss(cosine, target)
        # CoSENT: log(1 + sum over pairs (i, j) with target_i > target_j of exp(s * (cos_j - cos_i)))
        s = cosine * self.cosent_scale
        diff = s[None, :] - s[:, None]  # diff[i, j] = s_j - s_i
        wrong_order = diff[target[:, None] > target[None, :]]
        return torch.logsumexp(torch.cat([wrong_order.new_zeros(1), wrong_order]), dim=0)

    def predict(self, logits: torch.Tensor, batch: dict, examples: list) -> list[dict]:
        return [{"score": float(c) * self.max_score, "cosine": float(c)} for c in logits.float().cpu()]

    def metrics(self, predictions: list[dict], examples: list[PairExample]) -> dict[str, float]:
        return score_metrics([p["cosine"] for p in predictions], [e.label for e in examples])

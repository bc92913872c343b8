"""Task heads: small modules on top of the shared encoder, each with its own loss.

Sentence tasks read the pooled sentence embedding; token tasks read the per-token hidden states;
pair tasks (NLI, STS) read the embeddings u and v of the two sentences, as in SBERT; a cross-encoder
reads both sentences as one input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # label of word pieces that carry no label (cross_entropy skips them)


class SentenceClassificationHead(nn.Module):
    """pooled embedding -> dropout -> [linear -> GELU -> LayerNorm] -> linear -> class logits.

    The optional hidden layer gives the head a little capacity of its own when the encoder is frozen.
    """

    def __init__(self, dim: int, num_labels: int, dropout: float = 0.1, hidden_layer: bool = False) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim)) if hidden_layer else None
        self.out = nn.Linear(dim, num_labels)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = self.dropout(embeddings)
        if self.hidden is not None:
            x = self.hidden(x)
        return self.out(x)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)


class TokenClassificationHead(nn.Module):
    """per-token hidden state -> dropout -> linear -> tag logits (BIO tags for NER)."""

    def __init__(self, dim: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(hidden))  # (B, L, num_labels)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # pieces labelled IGNORE_INDEX (specials, padding, non-first pieces) do not count
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


class NLIHead(nn.Module):
    """SBERT's classifier (Reimers & Gurevych 2019): linear(concat(u, v, |u-v| [, u*v])) -> 3 labels.

    The flags are sentence-transformers' SoftmaxLoss flags; |u-v| tells the classifier *where* the
    two sentences differ, which the concatenation alone makes hard to learn.
    """

    def __init__(self, dim: int, num_labels: int = 3, concat_rep: bool = True, concat_difference: bool = True,
                 concat_multiplication: bool = False) -> None:
        super().__init__()
        n_vectors = 2 * concat_rep + concat_difference + concat_multiplication
        if n_vectors == 0:
            raise ValueError("NLIHead needs at least one of concat_rep, concat_difference, concat_multiplication")
        self.concat_rep, self.concat_difference, self.concat_multiplication = (
            concat_rep, concat_difference, concat_multiplication)
        self.classifier = nn.Linear(n_vectors * dim, num_labels)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        parts = [u, v] if self.concat_rep else []
        if self.concat_difference:
            parts.append(torch.abs(u - v))
        if self.concat_multiplication:
            parts.append(u * v)
        return self.classifier(torch.cat(parts, dim=-1))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)


STS_LOSSES = ("cosine_mse", "cosent")


class STSHead(nn.Module):
    """Similarity regression: cosine(u, v) is the prediction; it has no weights of its own.

    ``loss="cosine_mse"`` is sentence-transformers' CosineSimilarityLoss: MSE between the cosine and
    the gold score scaled to [0, 1]. ``loss="cosent"`` is CoSENT: only the *ranking* of pairs counts.
    """

    def __init__(self, loss: str = "cosine_mse", max_score: float = 5.0, cosent_scale: float = 20.0) -> None:
        super().__init__()
        if loss not in STS_LOSSES:
            raise ValueError(f"STS loss must be one of {STS_LOSSES}, got {loss!r}")
        self.loss_name, self.max_score, self.cosent_scale = loss, max_score, cosent_scale

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(u.float(), v.float(), dim=-1)

    def loss(self, cosine: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        target = scores.float() / self.max_score  # gold 0..5 -> 0..1
        if self.loss_name == "cosine_mse":
            return F.mse_loss(cosine, target)
        # CoSENT: log(1 + sum over pairs (i, j) with target_i > target_j of exp(s * (cos_j - cos_i)))
        s = cosine * self.cosent_scale
        diff = s[None, :] - s[:, None]  # diff[i, j] = s_j - s_i
        wrong_order = diff[target[:, None] > target[None, :]]
        return torch.logsumexp(torch.cat([wrong_order.new_zeros(1), wrong_order]), dim=0)


class CrossEncoderHead(nn.Module):
    """Both sentences in one input, "[CLS] a [SEP] b [SEP]": the [CLS] state -> dropout -> linear -> one logit.

    Every token of a attends to every token of b, a comparison that cosine(u, v) cannot make; with
    enough training that usually makes it the better scorer (not from all-MiniLM-L6-v2 on STS-B alone:
    see the README). It runs the encoder once per *pair*, which makes it too slow to search with.
    AugSBERT (Thakur et al., 2021) uses it to label extra pairs for a bi-encoder. The loss is
    sentence-transformers' CrossEncoder default for one label: binary cross-entropy against the gold
    score scaled to [0, 1]; sigmoid(logit) * max_score is the predicted score.
    """

    def __init__(self, hidden_size: int, dropout: float = 0.1, max_score: float = 5.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, 1)
        self.max_score = max_score

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(hidden[:, 0])).squeeze(-1)  # (B,) logits, from the [CLS] position

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float()) * self.max_score

    def loss(self, logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), scores.float() / self.max_score)

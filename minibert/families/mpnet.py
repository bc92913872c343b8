"""MPNet = BERT + a relative position bias on the attention scores, with RoBERTa's positions.

What differs from BERT:

- **A relative position bias.** Every layer adds ``b[h, bucket(j - i)]`` to head h's score of query i
  for key j: one learnt number per head and distance bucket. Distances up to 7 each get a bucket of
  their own, longer ones share logarithmically wider buckets up to 128, and the sign (key before or
  after the query) doubles the count: 32 buckets, T5's scheme. The bias is computed once per forward
  (``attention_bias``) and shared by every layer; its table is ``encoder.relative_attention_bias``.
- **RoBERTa's absolute positions** (``padding_idx + 1``, ... with padding_idx 1) and no token types.
- **Its own names**: ``attention.attn.q/k/v/o``, ``attention.LayerNorm``, under ``mpnet.`` in task
  checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from minibert.config import BertConfig
from minibert.families.roberta import fairseq_positions
from minibert.model import BertModel, embedding_table

BUCKETS, MAX_DISTANCE = 32, 128  # transformers buckets with 32 whatever the table's size (as MPNet was trained)
PADDING_IDX = 1  # MPNet's embeddings fix it, whatever config.json's pad_token_id says


@dataclass
class MPNetConfig(BertConfig):
    model_types: ClassVar[tuple[str, ...]] = ("mpnet",)
    architecture: ClassVar[str] = "MPNetModel"
    min_token_types: ClassVar[int] = 0
    reads_is_causal: ClassVar[bool] = False  # (transformers' MPNet runs its bidirectional mask whatever it says)
    reads_decoder_keys: ClassVar[bool] = False  # (nor does it read is_decoder or add_cross_attention)
    hf_types: ClassVar[dict[str, str]] = {
        **{k: t for k, t in BertConfig.hf_types.items()
           if k not in ("type_vocab_size", "use_cache", "classifier_dropout", "is_decoder", "add_cross_attention")},
        "relative_attention_num_buckets": "int"}

    vocab_size: int = 30527  # transformers' defaults (released checkpoints set 514 positions, eps 1e-5)
    type_vocab_size: int = 0
    pad_token_id: int | None = 1
    model_type: str = "mpnet"
    relative_attention_num_buckets: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.relative_attention_num_buckets < BUCKETS:  # transformers fails too, at the first long enough input
            raise ValueError(f"MPNetConfig.relative_attention_num_buckets must be at least {BUCKETS} (the buckets "
                             f"relative positions fall in), got {self.relative_attention_num_buckets}")

    @classmethod
    def from_hf(cls, raw: dict) -> dict:
        # MPNet has no token type embeddings, and its padding id is fixed, whatever config.json says
        return {**raw, "type_vocab_size": 0, "pad_token_id": PADDING_IDX}


def relative_bucket(distance: torch.Tensor) -> torch.Tensor:
    """Bucket of each key-minus-query distance: 0..15 for keys at or before the query, 16..31 after it;
    within a half, distances 0..7 exactly, then log-spaced up to MAX_DISTANCE, the last bucket beyond."""
    half = BUCKETS // 2
    n = -distance
    bucket = (n < 0).long() * half
    n = n.abs()
    exact = half // 2
    far = exact + (torch.log(n.float() / exact) / math.log(MAX_DISTANCE / exact) * (half - exact)).long()
    return bucket + torch.where(n < exact, n, far.clamp(max=half - 1))


class MPNetEmbeddings(nn.Module):
    """word + position (RoBERTa's numbering), then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word = embedding_table(config.vocab_size, config.hidden_size, padding_idx=PADDING_IDX)
        self.position = embedding_table(config.max_position_embeddings, config.hidden_size, padding_idx=PADDING_IDX)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.max_tokens = config.max_position_embeddings - PADDING_IDX - 1
        self.position_skip_id = PADDING_IDX  # pads take no position: where they sit moves no token

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.shape[1] > self.max_tokens:
            raise ValueError(f"sequence length {input_ids.shape[1]} exceeds the {self.max_tokens} tokens MPNet's "
                             "position embeddings hold")
        x = self.word(input_ids) + self.position(fairseq_positions(input_ids, PADDING_IDX))
        return self.dropout(self.norm(x))


class MPNetModel(BertModel):
    """MPNet: BERT's blocks and pooler, RoBERTa-style embeddings, and a relative position bias."""

    config_class = MPNetConfig
    embeddings_class = MPNetEmbeddings
    hf_prefix = "mpnet."

    def __init__(self, config: MPNetConfig, add_pooler: bool = True, attn_implementation: str = "sdpa") -> None:
        super().__init__(config, add_pooler, attn_implementation)
        self.relative_attention_bias = embedding_table(config.relative_attention_num_buckets,
                                                       config.num_attention_heads)
        if not self.relative_attention_bias.weight.is_meta:
            nn.init.normal_(self.relative_attention_bias.weight, std=config.init_std())

    def attention_bias(self, length: int) -> torch.Tensor:
        """(1, H, L, L): head h's bias for query i and key j, from the bucket of j - i."""
        positions = torch.arange(length, device=self.relative_attention_bias.weight.device)
        buckets = relative_bucket(positions[None, :] - positions[:, None])  # (L, L)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]

    @classmethod
    def key_map(cls, config: BertConfig, with_pooler: bool) -> dict[str, str]:
        names = {"embeddings.word.weight": "embeddings.word_embeddings.weight",
                 "embeddings.position.weight": "embeddings.position_embeddings.weight",
                 "embeddings.norm.weight": "embeddings.LayerNorm.weight",
                 "embeddings.norm.bias": "embeddings.LayerNorm.bias",
                 "relative_attention_bias.weight": "encoder.relative_attention_bias.weight"}
        per_layer = {"attention.query": "attention.attn.q", "attention.key": "attention.attn.k",
                     "attention.value": "attention.attn.v", "attention_out": "attention.attn.o",
                     "attention_norm": "attention.LayerNorm", "ffn_in": "intermediate.dense",
                     "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}
        for i in range(config.num_hidden_layers):
            for ours, theirs in per_layer.items():
                for p in ("weight", "bias"):
                    names[f"blocks.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
        if with_pooler:
            names |= {"pooler.dense.weight": "pooler.dense.weight", "pooler.dense.bias": "pooler.dense.bias"}
        return names

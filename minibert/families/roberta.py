"""RoBERTa and XLM-RoBERTa = BERT with positions counted from ``padding_idx + 1``, skipping padding.

The blocks, the pooler and the parameter names are BERT's (under ``roberta.`` in task checkpoints).
What differs is the embeddings:

- **Positions.** fairseq numbers a sentence's tokens ``padding_idx + 1, padding_idx + 2, ...`` and gives
  every pad token position ``padding_idx``. With ``padding_idx = 1`` and 514 position embeddings, a
  sentence holds at most 512 tokens (``max_tokens``).
- **One token type, as released.** ``type_vocab_size`` is 1 and RoBERTa's tokenizer gives no segment ids,
  even for pairs (``<s> a </s></s> b </s>``), so every token gets type 0. Types that a folder's tokenizer does
  give (``model_input_names``) are embedded as BERT embeds them, as transformers does.

XLM-RoBERTa is the same model with a SentencePiece vocabulary of 250k pieces; only ``model_type`` differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from minibert.config import BertConfig
from minibert.model import BertModel, embedding_table


@dataclass
class RobertaConfig(BertConfig):
    model_types: ClassVar[tuple[str, ...]] = ("roberta", "xlm-roberta")
    architecture: ClassVar[str] = "RobertaModel"

    # transformers' defaults for a key config.json leaves out; released checkpoints set 514 positions, one
    # token type and layer_norm_eps 1e-5 explicitly.
    vocab_size: int = 50265
    type_vocab_size: int = 2
    pad_token_id: int = 1
    model_type: str = "roberta"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pad_token_id < -1:  # (an int: the field says so; -1 matches no token: positions 0, 1, ...)
            raise ValueError(f"RobertaConfig.pad_token_id must be a token id or -1: positions count from it + 1, "
                             f"got {self.pad_token_id}")
        if self.pad_token_id > self.max_position_embeddings - 2:  # positions start after padding_idx
            raise ValueError(f"RobertaConfig.pad_token_id {self.pad_token_id} leaves no position: positions count "
                             f"from pad_token_id + 1, and max_position_embeddings is {self.max_position_embeddings}")

    @classmethod
    def from_hf(cls, raw: dict) -> dict:
        if raw.get("model_type") == "xlm-roberta":  # XLMRobertaConfig's own default
            return {"vocab_size": 30522, **raw}
        return raw

    def to_dict(self) -> dict:
        out = super().to_dict()
        if self.model_type == "xlm-roberta":
            out["architectures"] = ["XLMRobertaModel"]
        return out


def fairseq_positions(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """padding_idx + 1, + 2, ... for the real tokens of each row, padding_idx for its pad tokens."""
    real = input_ids.ne(padding_idx).int()
    return torch.cumsum(real, dim=1) * real + padding_idx


class RobertaEmbeddings(nn.Module):
    """word + token type (type 0 unless given) + position (fairseq numbering), then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word = embedding_table(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = embedding_table(config.max_position_embeddings, config.hidden_size,
                                        padding_idx=self.padding_idx)
        self.token_type = embedding_table(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.max_tokens = config.max_position_embeddings - self.padding_idx - 1  # the rest are below the first
        # pads take no position: where they sit moves no token (with -1 no token is skipped: positions are columns)
        self.position_skip_id = self.padding_idx if self.padding_idx >= 0 else None

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.shape[1] > self.max_tokens:
            raise ValueError(f"sequence length {input_ids.shape[1]} exceeds the {self.max_tokens} tokens that "
                             f"{self.max_tokens + self.padding_idx + 1} position embeddings hold")
        types = self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids)
        x = self.word(input_ids) + types  # (none given: type 0 for every token); transformers' order of adds
        x = x + self.position(fairseq_positions(input_ids, self.padding_idx))
        return self.dropout(self.norm(x))


class RobertaModel(BertModel):
    """RoBERTa / XLM-RoBERTa: BERT's model, keys and pooler with RoBERTa's embeddings."""

    config_class = RobertaConfig
    embeddings_class = RobertaEmbeddings
    hf_prefix = "roberta."

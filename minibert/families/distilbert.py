"""DistilBERT = BERT without token types and without a pooler, under names of its own.

The blocks are BERT's post-LN blocks (attention, add, LayerNorm; feed-forward, add, LayerNorm), so
minibert runs them as they are, but for one thing: in training, DistilBERT applies no dropout to the
attention's output before its residual add (``attention_out_dropout``). Otherwise three things differ:

- **No token types.** The embeddings are word + position, then LayerNorm (eps 1e-12) and dropout.
- **Fixed sinusoidal positions** when ``sinusoidal_pos_embds`` is set: the position table is the
  Transformer paper's sin/cos one. It is loaded from the checkpoint like any tensor (computed where the
  checkpoint lacks it, as transformers does) and kept as a buffer, so no optimizer moves it, as the paper
  intends (recent transformers releases leave it trainable).
- **Its own names**, in ``config.json`` (``dim``, ``n_layers``, ``hidden_dim``, ``activation``, ...) and
  in the checkpoint (``q_lin``, ``out_lin``, ``sa_layer_norm``, ``ffn.lin1``, ``output_layer_norm``, ...,
  under ``transformer.layer.I`` and, in task checkpoints, ``distilbert.``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from minibert.config import BertConfig
from minibert.model import BertModel, embedding_table

# config.json name -> BertConfig field, where DistilBERT's differ
HF_NAMES = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
            "hidden_dim": "intermediate_size", "activation": "hidden_act", "dropout": "hidden_dropout_prob",
            "attention_dropout": "attention_probs_dropout_prob"}
# BERT's names that transformers' DistilBertConfig reads too (its attribute_map), over its own; BERT's other
# names (hidden_act, intermediate_size, ...) it keeps unread
BERT_NAMES_READ = ("hidden_size", "num_hidden_layers", "num_attention_heads")


@dataclass
class DistilBertConfig(BertConfig):
    model_types: ClassVar[tuple[str, ...]] = ("distilbert",)
    architecture: ClassVar[str] = "DistilBertModel"
    min_token_types: ClassVar[int] = 0
    attention_out_dropout: ClassVar[bool] = False  # the attention's output goes straight into the residual add
    reads_decoder_keys: ClassVar[bool] = False  # transformers reads neither is_decoder nor add_cross_attention here
    hf_types: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("vocab_size", "max_position_embeddings", "n_layers", "n_heads", "dim", "hidden_dim"), "int"),
        **dict.fromkeys(("dropout", "attention_dropout", "qa_dropout", "seq_classif_dropout"), "float | int"),
        "sinusoidal_pos_embds": "bool", "activation": "str", "initializer_range": "float", "pad_token_id": "int | None",
        "eos_token_id": "int | list[int] | None", "bos_token_id": "int | None", "tie_word_embeddings": "bool"}

    num_hidden_layers: int = 6
    type_vocab_size: int = 0
    model_type: str = "distilbert"
    sinusoidal_pos_embds: bool = False

    @classmethod
    def from_hf(cls, raw: dict) -> dict:
        unread = {"type_vocab_size", "layer_norm_eps"} | set(HF_NAMES.values()) - set(BERT_NAMES_READ)
        raw = {k: v for k, v in raw.items() if k not in unread}
        # DistilBERT's name, unless BERT's is there too (e.g. "hidden_size" beside "dim"): then BERT's wins
        renamed = {HF_NAMES.get(k, k): v for k, v in raw.items() if HF_NAMES.get(k) not in raw}
        return {**renamed, "type_vocab_size": 0, "layer_norm_eps": 1e-12}  # fixed in DistilBERT

    def to_dict(self) -> dict:
        ours = {field: hf for hf, field in HF_NAMES.items()}
        out = {ours.get(k, k): v for k, v in super().to_dict().items()
               if k not in ("type_vocab_size", "layer_norm_eps", "position_embedding_type")}
        return {**out, "architectures": [self.architecture]}


def sinusoidal_table(positions: int, dim: int) -> torch.Tensor:
    """Row p: sin(p / 10000^(2i/dim)) in the even columns 2i, cos of the same angle in the odd ones."""
    exponent = torch.arange(dim, dtype=torch.float64).div(2, rounding_mode="floor") * 2 / dim
    angles = torch.arange(positions, dtype=torch.float64)[:, None] / 10000 ** exponent[None]
    table = torch.empty(positions, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = angles[:, 0::2].sin(), angles[:, 1::2].cos()
    return table.float()


class FixedPositions(nn.Module):
    """A position table that is not learnt: a buffer named like nn.Embedding's weight."""

    def __init__(self, positions: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", sinusoidal_table(positions, dim))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return F.embedding(positions, self.weight)


class DistilBertEmbeddings(nn.Module):
    """word + position, then LayerNorm and dropout: BERT's embeddings without the token types."""

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.word = embedding_table(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = FixedPositions(config.max_position_embeddings, config.hidden_size) \
            if config.sinusoidal_pos_embds else embedding_table(config.max_position_embeddings, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.max_tokens = config.max_position_embeddings
        self.position_skip_id = None  # a position is a column of the batch, as in BERT

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        L = input_ids.shape[1]
        if L > self.max_tokens:
            raise ValueError(f"sequence length {L} exceeds max_position_embeddings {self.max_tokens}")
        x = self.word(input_ids) + self.position(torch.arange(L, device=input_ids.device))[None]
        return self.dropout(self.norm(x))  # token_type_ids: DistilBERT has none, whatever the tokenizer says


class DistilBertModel(BertModel):
    """DistilBERT: BERT's blocks (no pooler) with DistilBERT's embeddings and names."""

    config_class = DistilBertConfig
    embeddings_class = DistilBertEmbeddings
    hf_prefix = "distilbert."
    draws_missing_pooler = False  # (it has none)

    def __init__(self, config: DistilBertConfig, add_pooler: bool = False, attn_implementation: str = "sdpa") -> None:
        if add_pooler:
            raise ValueError("DistilBERT has no pooler")
        super().__init__(config, add_pooler=False, attn_implementation=attn_implementation)

    @classmethod
    def fixed_tensors(cls, config: DistilBertConfig) -> dict[str, Callable[[], torch.Tensor]]:
        """The sinusoidal table, where config.json asks for one: transformers computes it where a checkpoint
        lacks it (a stored one is read, whatever it holds)."""
        if not config.sinusoidal_pos_embds:
            return {}
        return {"embeddings.position_embeddings.weight":
                lambda: sinusoidal_table(config.max_position_embeddings, config.hidden_size)}

    @classmethod
    def key_map(cls, config: BertConfig, with_pooler: bool) -> dict[str, str]:
        names = {"embeddings.word.weight": "embeddings.word_embeddings.weight",
                 "embeddings.position.weight": "embeddings.position_embeddings.weight",
                 "embeddings.norm.weight": "embeddings.LayerNorm.weight",
                 "embeddings.norm.bias": "embeddings.LayerNorm.bias"}
        per_layer = {"attention.query": "attention.q_lin", "attention.key": "attention.k_lin",
                     "attention.value": "attention.v_lin", "attention_out": "attention.out_lin",
                     "attention_norm": "sa_layer_norm", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2",
                     "ffn_norm": "output_layer_norm"}
        for i in range(config.num_hidden_layers):
            for ours, theirs in per_layer.items():
                for p in ("weight", "bias"):
                    names[f"blocks.{i}.{ours}.{p}"] = f"transformer.layer.{i}.{theirs}.{p}"
        return names

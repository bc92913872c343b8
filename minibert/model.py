"""The BERT encoder, written out in one file.

A batch flows: token ids -> Embeddings -> N x EncoderBlock -> last hidden states (-> Pooler).
Every module here keeps its own readable names; ``minibert.weights`` holds the explicit map from
Hugging Face checkpoint keys to these names, and ``BertModel.from_pretrained`` loads through it.

The other families (``minibert/families/``: DistilBERT, RoBERTa/XLM-R, MPNet) are subclasses that
change only what differs: the embeddings (``embeddings_class``), a bias on the attention scores
(``attention_bias``), the config and the key map.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from minibert import weights
from minibert.activations import activation
from minibert.config import BertConfig, declared_dtype

AttnImplementation = Literal["eager", "sdpa"]
log = logging.getLogger(__name__)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Dropout off for inference; afterwards (even after an error) the module's mode is what it was,
    so predicting in the middle of training does not leave training without dropout."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def embedding_table(rows: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """An ``nn.Embedding`` left to ``BertModel.init_weights`` to draw. (nn.Embedding's own N(0, 1) draw,
    run on the meta device where models are built for loading, would import torch._dynamo, which is slow
    to import and which no path but the compiled one needs.)"""
    return nn.Embedding.from_pretrained(torch.empty(rows, dim), freeze=False, padding_idx=padding_idx)


class Embeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word = embedding_table(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = embedding_table(config.max_position_embeddings, config.hidden_size)
        self.token_type = embedding_table(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.max_tokens = config.max_position_embeddings
        self.position_skip_id = None  # no token id is left out of the positions: a position is a column

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        B, L = input_ids.shape
        if L > self.max_tokens:
            raise ValueError(f"sequence length {L} exceeds max_position_embeddings {self.max_tokens}")
        # Positions are always 0..L-1 (absolute embeddings, right padding). Old checkpoints also
        # store an `embeddings.position_ids` buffer; it is just arange(max_positions), so we ignore
        # it and build the positions here. Pad tokens get positions too, but the attention mask
        # and the pooling mask keep them from ever influencing a real token.
        positions = torch.arange(L, device=input_ids.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word(input_ids) + self.token_type(token_type_ids) + self.position(positions)[None]
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention, by hand ("eager") or through the fused SDPA kernel ("sdpa")."""

    def __init__(self, config: BertConfig, attn_implementation: AttnImplementation = "sdpa") -> None:
        super().__init__()
        self.n_head = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob
        self.attn_implementation = attn_implementation

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape  # (B, L, H*D) -> (B, H, L, D)
        return x.view(B, L, self.n_head, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, C); attention_mask: (B, L) with 1 for real tokens and 0 for padding; ``bias``: an
        additive (1 or B, H, L, L) term on the scores (MPNet's relative positions), None in BERT."""
        B, L, C = x.shape
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        # The mask is broadcast over heads and query positions: (B, 1, 1, L). Every query may look
        # at every real key; no query may look at a padded key. Rows of padded *queries* are still
        # computed (they attend to the real keys) and are simply ignored downstream.
        keep = attention_mask[:, None, None, :].bool()
        dropout_p = self.dropout_p if self.training else 0.0
        # A bias on the scores (MPNet's) always runs the products written out, as transformers runs MPNet: SDPA's
        # CPU kernel rounds such a sum differently, by several bf16 units where it matters.
        if self.attn_implementation == "sdpa" and bias is None:
            # A boolean mask means "True = may attend". SDPA applies the same 1/sqrt(D) scaling.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)
        else:
            # Scale by 1/sqrt(D): the dot product of two D-dim vectors with unit-variance entries has
            # variance D; without the scaling, softmax saturates and its gradients vanish.
            scores = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5  # (B, H, L, L)
            if bias is not None:
                scores = scores + bias
            # Additive mask: 0 where we keep, the most negative finite number where we don't, so
            # exp(score - max) underflows to exactly 0 for padded keys. (-inf would work too, but
            # a finite value cannot produce NaN.)
            bias = torch.zeros(keep.shape, dtype=scores.dtype, device=scores.device)
            bias = bias.masked_fill(~keep, torch.finfo(scores.dtype).min)
            probs = F.softmax(scores + bias, dim=-1)
            probs = F.dropout(probs, p=dropout_p, training=self.training)  # BERT drops whole attention links
            y = probs @ v  # (B, H, L, D)
        return y.transpose(1, 2).reshape(B, L, C)  # re-assemble the heads side by side


class EncoderBlock(nn.Module):
    """One post-LN transformer block: x = LN(x + Attn(x)); x = LN(x + FFN(x)).

    Post-LN (the 2017/BERT order) normalises *after* each residual add; GPT-2 style pre-LN would
    normalise the sub-layer's input instead. The checkpoints were trained post-LN, so we must match.
    """

    def __init__(self, config: BertConfig, attn_implementation: AttnImplementation = "sdpa") -> None:
        super().__init__()
        self.attention = SelfAttention(config, attn_implementation)
        self.attention_out = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)
        self.ffn_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)  # on each residual branch before the add
        self.attention_dropout = self.dropout if config.attention_out_dropout else nn.Identity()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attention_norm(x + self.attention_dropout(self.attention_out(self.attention(x, attention_mask, bias))))
        x = self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))
        return x


def set_dropout(model: nn.Module, p: float) -> None:
    """Every dropout of ``model``'s blocks at rate ``p``: residual branches and attention links."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        if isinstance(module, SelfAttention):
            module.dropout_p = p


class Pooler(nn.Module):
    """BERT's pooler: tanh(W h_[CLS] + b). Trained for next-sentence prediction; SBERT ignores it."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, L, C)
    pooler_output: torch.Tensor | None  # (B, C), or None when the model has no pooler
    hidden_states: tuple[torch.Tensor, ...] | None = None  # with output_hidden_states: embeddings, then each block


class BertModel(nn.Module):
    """The BERT encoder: embeddings, a stack of post-LN blocks, and an optional pooler."""

    path = "reference"  # the execution path this class runs (minibert.paths: fast, int8 and compiled twins)
    config_class = BertConfig  # what a family changes: its config, its embeddings, its checkpoint names
    embeddings_class = Embeddings
    hf_prefix = "bert."  # where BertFor... checkpoints nest the encoder
    draws_missing_pooler = True  # transformers' model has a pooler, drawn at random where a checkpoint has none

    def __init__(self, config: BertConfig, add_pooler: bool = True,
                 attn_implementation: AttnImplementation = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.checkpoint: Path | None = None  # the folder the weights were loaded from; None when drawn here
        self.embeddings = self.embeddings_class(config)
        self.blocks = nn.ModuleList(EncoderBlock(config, attn_implementation)
                                    for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config) if add_pooler else None
        self.set_attn_implementation(attn_implementation)
        if not any(p.is_meta for p in self.parameters()):  # meta: from_pretrained fills them in
            self.init_weights()

    def set_attn_implementation(self, attn_implementation: AttnImplementation) -> None:
        if attn_implementation not in ("eager", "sdpa"):
            raise ValueError(f"attn_implementation must be 'eager' or 'sdpa', got {attn_implementation!r}")
        self.attn_implementation = attn_implementation  # kept by a twin on another path, and back
        for block in self.blocks:
            if isinstance(block.attention, SelfAttention):  # the fast path's attention picks its own kernel
                block.attention.attn_implementation = attn_implementation

    def set_dropout(self, p: float) -> None:
        """One dropout rate for the embeddings, attention links and residual branches (fine-tuning knob)."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p!r}")
        self.config.hidden_dropout_prob = self.config.attention_probs_dropout_prob = p  # saved with the model
        set_dropout(self, p)

    @torch.no_grad()
    def init_weights(self) -> None:
        """BERT's initialisation: N(0, initializer_range) for weights, zero biases, unit LayerNorms."""
        self.checkpoint = None  # whatever was loaded before is gone
        std = self.config.init_std()
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def max_tokens(self) -> int:
        """The longest input the position embeddings cover (a family that offsets positions covers fewer)."""
        return self.embeddings.max_tokens

    @property
    def position_skip_id(self) -> int | None:
        """The token id that takes no position (RoBERTa's padding), None where a position is a column (BERT)."""
        return self.embeddings.position_skip_id

    def attention_bias(self, length: int) -> torch.Tensor | None:
        """An additive term on every layer's attention scores, computed once per forward. None in BERT, whose
        positions are absolute and added to the embeddings; MPNet adds relative positions here."""
        return None

    @classmethod
    def fixed_tensors(cls, config: BertConfig) -> dict[str, Callable[[], torch.Tensor]]:
        """Checkpoint key -> how to compute a tensor the config determines, where a checkpoint lacks it (none in
        BERT)."""
        return {}

    @classmethod
    def key_map(cls, config: BertConfig, with_pooler: bool) -> dict[str, str]:
        """minibert parameter name -> the Hugging Face checkpoint key (without the model prefix)."""
        return weights.bert_key_map(config.num_hidden_layers, with_pooler)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                pool: bool = True) -> BertOutput:
        """``pool=False`` skips the pooler (``pooler_output`` None): SBERT's pooling reads the token states only."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        bias = self.attention_bias(input_ids.shape[1])
        states = [x]
        for block in self.blocks:
            x = block(x, attention_mask, bias)
            states.append(x)
        pooled = self.pooler(x) if self.pooler is not None and pool else None
        return BertOutput(x, pooled, tuple(states) if output_hidden_states else None)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None,
                        attn_implementation: AttnImplementation = "sdpa",
                        config_overrides: dict | None = None) -> BertModel:
        """Every parameter from a Hugging Face BERT folder (config.json + safetensors), strictly.
        ``config_overrides``: settings laid over config.json's (a sentence-transformers folder's config_args).

        The model is built on the ``meta`` device: no random init to throw away, and a parameter the
        checkpoint does not fill cannot silently keep a random value (``load_state_dict`` is strict).
        """
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        config, raw_config = cls.config_class.from_folder(folder, config_overrides)
        stored = weights.load_safetensors(folder)
        tensors, report = weights.split_encoder_tensors(stored, str(folder), cls.hf_prefix)
        weights.add_fixed(tensors, cls.fixed_tensors(config), report, folder / "config.json")
        pooler = weights.has_pooler(tensors)
        if cls.draws_missing_pooler and not pooler:
            config.init_std("the pooler the checkpoint lacks, as transformers does", str(folder / "config.json"))
        with torch.device("meta"):
            model = cls(config, add_pooler=pooler, attn_implementation=attn_implementation)
        shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        key_map = cls.key_map(config, pooler)
        state = weights.convert_state_dict(tensors, report, key_map, shapes, str(folder / "config.json"))
        model.load_state_dict(state, strict=True, assign=True)
        if dtype is None:  # as transformers: the dtype config.json names, else the one the weights are stored in
            dtype = declared_dtype(raw_config, str(folder / "config.json")) or weights.stored_dtype(folder, stored)
        model.to(device=device, dtype=dtype).eval()  # a loaded model starts in inference mode, as in transformers
        log.info("%s", report)
        model.load_report, model.checkpoint = report, folder
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

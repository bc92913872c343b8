"""The fast path: the same encoder with padding removed and Q, K, V in one matmul.

``model.py`` is the reference and stays as it is; ``FastBertModel`` is a ``BertModel`` (same
embeddings and pooler, same parameter names but one) whose blocks run the batch differently:

- **No padding.** The real tokens of a padded (B, L) batch are packed into one (T, C) matrix, so
  every linear layer, GELU and LayerNorm (nearly all of the work) runs on the T real tokens only,
  not on B x L. Only attention needs to know where one sentence ends: on CUDA it runs packed
  (``varlen_attn``, flash attention over sequences of different lengths); elsewhere the (T, 3C)
  projections are scattered back into the (B, L) grid for attention alone (the products written out, or
  SDPA's fused kernel where it measures faster on the CPU at hand) and gathered again. On the
  CPU a batch that is almost all real tokens (``encode`` sorts by length, so its batches are) keeps its
  grid, since packing it would cost more in copies than it saves.
- **Fused QKV.** ``query``, ``key`` and ``value`` are one ``Linear(C, 3C)``: one larger matmul
  instead of three. Checkpoints keep the three tensors: ``weights.fuse_qkv`` joins them when the
  fast model is built, ``weights.split_qkv`` splits them when it is saved.
- **The fastest CPU linear kernel** for the dtype on the CPU at hand, measured once (``kernels.py``):
  the BLAS behind ``F.linear`` or oneDNN (whose matmul also takes the feed-forward GELU; in float32
  summed in blocks where that is what matches BLAS's accuracy; in inference on weights packed once in its
  own layout, ``weight_forms.py``), and bf16 products in float32 on a CPU without bf16 instructions. The
  attention is chosen the same way (``attention_kernels.py``).

Outputs match the reference path to float rounding, gradients too; padded positions of
``last_hidden_state`` are zeros here, where the reference computes values nobody reads. Build a fast
twin of a model with ``minibert.paths.convert(model, "fast")``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from minibert.activations import activation
from minibert.config import BertConfig
from minibert.model import BertModel, BertOutput
from minibert.paths.attention_kernels import attention_kernel, products_attention, sdpa_attention
from minibert.paths.kernels import LINEAR_DTYPES, cpu_linear
from minibert.paths.onednn import added, blas_linear
from minibert.weights import fuse_qkv

PACK_ABOVE = 0.1  # on the CPU, rows are packed when more than this share of a batch's grid is padding


@functools.cache
def varlen_attention():
    """Packed attention over variable lengths (flash attention; CUDA, fp16/bf16), or None in a torch
    without it (the padded path runs instead). Imported on first use on CUDA: the module pulls in
    torch._dynamo, which is slow to import and which a CPU process does not need."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


class FastLinear(nn.Linear):
    """``nn.Linear`` (same parameters) that runs 2-D float32/bfloat16 CPU inputs on the kernel measured
    fastest for their dtype on this CPU (``kernels.cpu_linear``), with an optional GELU after it (fused
    into oneDNN's matmul when that kernel runs)."""

    takes_residual = True  # forward(x, residual=...): a block's residual sum can be added inside the product

    def __init__(self, in_features: int, out_features: int, gelu: str | None = None) -> None:
        super().__init__(in_features, out_features)
        self.gelu = gelu  # None, or nn.GELU's `approximate`: "none" (erf) or "tanh"

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output, plus ``residual`` when given (residual + y: a post-LN block's sum, added inside
        the product where the kernel can)."""
        weight, bias = self.weight, self.bias
        cast = x.device.type == "cpu" and torch.is_autocast_enabled("cpu")  # autocast does not see custom kernels
        if cast:
            dtype = torch.get_autocast_dtype("cpu")
            x, weight, bias = x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
        if x.device.type == "cpu" and x.dim() == 2 and x.dtype in LINEAR_DTYPES \
                and weight.dtype == x.dtype:  # (a cast weight is new at every call: not kept)
            return cpu_linear(x, weight, bias, self.gelu, keep=not cast, residual=residual)
        return added(residual, blas_linear(x, weight, bias, self.gelu))


class Packing(NamedTuple):
    """Where the real tokens of a padded (B, L) batch are, computed once per forward. The rows the layers run
    on are the real tokens, or, for a batch with little padding, the whole grid (``index`` None): removing a
    few padded rows costs more in copies than it saves in products."""

    index: torch.Tensor | None  # (T,) positions of the real tokens in the flattened (B * L) grid, or None
    shape: tuple[int, int]  # (B, L)
    keep: torch.Tensor | None  # (B, 1, 1, L) bool attention mask, or None when no sentence is padded
    cu_seqlens: torch.Tensor  # (B + 1,) int32: sentence b's tokens are packed rows cu[b]:cu[b + 1]
    max_len: int
    terms: dict  # the CPU attention's mask and bias as one term on the scores, made by the first layer for all

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor, pack_above: float = 0.0) -> Packing:
        """``pack_above``: the rows are the real tokens when more than this share of the grid is padding."""
        B, L = attention_mask.shape
        real = attention_mask.bool()
        lengths = real.sum(dim=1, dtype=torch.int32)
        cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        total = int(cu_seqlens[-1])  # real tokens (one device sync; the next is max_len's)
        keep = None if total == B * L else real[:, None, None, :]
        max_len = int(lengths.max()) if B else 0
        padded = 1 - total / max(B * L, 1)  # 0 for a batch without padding: its rows are its grid
        index = real.flatten().nonzero().squeeze(1) if padded > pack_above else None
        return cls(index, (B, L), keep, cu_seqlens, max_len, {})

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (T, ...): the rows the layers run on."""
        if self.index is None:  # the grid is the matrix of rows
            return x.flatten(0, 1)
        return x.flatten(0, 1).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(T, ...) -> (B, L, ...), zeros at the padded positions."""
        B, L = self.shape
        if self.index is None:
            grid = x.view(B, L, *x.shape[1:])
            return grid if self.keep is None else grid * self.keep[:, 0, 0, :].view(B, L, *[1] * (x.dim() - 1))
        grid = x.new_zeros(B * L, *x.shape[1:])
        return grid.index_copy_(0, self.index, x).view(B, L, *x.shape[1:])


class PackedSelfAttention(nn.Module):
    """Multi-head self-attention on packed tokens (T, C), with Q, K and V from one matmul."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.n_head = config.num_attention_heads
        self.head_dim = config.head_dim
        self.qkv = FastLinear(config.hidden_size, 3 * config.hidden_size)  # rows: query, then key, then value
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, packing: Packing, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``bias``: an additive (1 or B, H, L, L) term on the scores on the (B, L) grid (MPNet), or None."""
        T, C = x.shape
        qkv = self.qkv(x)  # (T, 3C)
        dropout_p = self.dropout_p if self.training else 0.0
        if qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16) and dropout_p == 0.0 and bias is None \
                and (packing.index is not None or packing.keep is None) and varlen_attention() is not None:
            # rows packed (or nothing to pack); varlen_attn takes no attention dropout and no bias
            q, k, v = qkv.view(T, 3, self.n_head, self.head_dim).unbind(1)  # each (T, H, D)
            y = varlen_attention()(q, k, v, packing.cu_seqlens, packing.cu_seqlens, packing.max_len, packing.max_len)
            return y.reshape(T, C)
        # Elsewhere: back into the (B, L) grid for attention only. Attention is a small share of
        # the work for sentence-length inputs; the linear layers around it stay on T rows.
        B, L = packing.shape
        grid = qkv.view(B, L, -1) if packing.index is None else packing.unpack(qkv)  # padded rows: masked keys
        q, k, v = grid.view(B, L, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if qkv.is_cuda:
            mask = packing.keep
            if bias is not None:
                mask = bias if mask is None else bias.masked_fill(~mask, torch.finfo(bias.dtype).min)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        elif qkv.device.type == "cpu" and bias is None and dropout_p == 0.0 and attention_kernel(q.dtype) == "sdpa":
            y = sdpa_attention(q, k, v, packing.keep)  # the fused kernel, where it measured faster on this CPU
        else:  # written out: a bias (MPNet's) always runs here, as in the reference; attention dropout too, its
            # mask drawn as model.py's written-out attention draws it (SDPA's kernel draws its own)
            y = products_attention(q, k, v, packing.keep, bias, dropout_p, packing.terms)
        return packing.pack(y.transpose(1, 2)).reshape(T, C)  # (B, H, L, D) -> (T, H, D) -> (T, C)


class FastEncoderBlock(nn.Module):
    """``EncoderBlock`` (same post-LN order, same parameter names but ``attention.qkv``) on packed tokens:
    x is (T, C), and every layer but attention works row by row, on real tokens only."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        C, inner = config.hidden_size, config.intermediate_size
        act = activation(config.hidden_act)
        gelu = act.approximate if isinstance(act, nn.GELU) else None  # a GELU runs inside ffn_in's matmul
        self.attention = PackedSelfAttention(config)
        self.attention_out = FastLinear(C, C)
        self.attention_norm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.ffn_in = FastLinear(C, inner, gelu=gelu)
        self.act = nn.Identity() if gelu is not None else act
        self.ffn_out = FastLinear(inner, C)
        self.ffn_norm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_dropout = self.dropout if config.attention_out_dropout else nn.Identity()

    def forward(self, x: torch.Tensor, packing: Packing, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attention_norm(self.residual_sum(self.attention_out, self.attention(x, packing, bias), x,
                                                 self.attention_dropout))
        return self.ffn_norm(self.residual_sum(self.ffn_out, self.act(self.ffn_in(x)), x, self.dropout))

    @staticmethod
    def residual_sum(layer: nn.Module, h: torch.Tensor, x: torch.Tensor, dropout: nn.Module) -> torch.Tensor:
        """x + dropout(layer(h)). Where the dropout drops nothing (eval) and the layer takes it, x is added inside
        the layer's product (``FastLinear``, ``Int8Linear``): its forward hooks then see the sum."""
        if getattr(layer, "takes_residual", False) and not (dropout.training and getattr(dropout, "p", 0) > 0):
            return layer(h, residual=x)
        return x + dropout(layer(h))


class FastBertModel(BertModel):
    """``BertModel`` with padding removed and fused QKV. Built directly, it starts from BERT's own
    initialisation of the reference blocks, fused (so it equals ``BertModel(config)`` under one seed)."""

    path = "fast"

    def __init__(self, config: BertConfig, add_pooler: bool = True, attn_implementation: str = "sdpa") -> None:
        super().__init__(config, add_pooler, attn_implementation)
        on_meta = any(p.is_meta for p in self.parameters())  # built for loading: the tensors come later
        state = None if on_meta else fuse_qkv(self.blocks.state_dict())  # the reference blocks, initialised
        with torch.device("meta"):
            self.blocks = nn.ModuleList(FastEncoderBlock(config) for _ in range(config.num_hidden_layers))
        if state is not None:
            self.blocks.load_state_dict(state, strict=True, assign=True)

    def set_dropout(self, p: float) -> None:
        super().set_dropout(p)
        for block in self.blocks:
            block.attention.dropout_p = p

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                pool: bool = True) -> BertOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # On the CPU a batch keeps its grid when at most a tenth of it is padding (longest-first batches, as
        # encode() makes them); on CUDA padded batches are always packed, for varlen attention.
        packing = Packing.from_mask(attention_mask, pack_above=0.0 if attention_mask.is_cuda else PACK_ABOVE)
        # Embeddings on the grid, then packed: positions are grid columns, as in the reference.
        x = packing.pack(self.embeddings(input_ids, token_type_ids))
        bias = self.attention_bias(input_ids.shape[1])
        states = [x]
        for block in self.blocks:
            x = block(x, packing, bias)
            states.append(x)
        x = packing.unpack(x)
        pooled = self.pooler(x) if self.pooler is not None and pool else None
        hidden = tuple(packing.unpack(h) for h in states) if output_hidden_states else None
        return BertOutput(x, pooled, hidden)

"""The compiled path: the reference encoder under ``torch.compile``, fed batches of a few fixed shapes.

A small encoder on a GPU spends most of a step launching kernels, not running them: MiniLM's six
layers issue a few hundred small kernels per forward. Two remedies, both from ``torch.compile``:

- **Fusion.** Inductor writes the elementwise work around the matmuls (bias, GELU, residual adds,
  LayerNorm, the mask arithmetic) as a few generated kernels instead of dozens of separate ones.
- **CUDA graphs** (``mode="reduce-overhead"``). A whole forward (and backward) is recorded once and
  replayed as one launch.

CUDA graphs need static shapes: a graph replays the exact sizes it recorded, and every new shape
compiles again. So on CUDA ``CompiledBertModel`` pads each batch's length up to a multiple of
``bucket`` tokens and its rows up to a power of two, runs the compiled reference forward, and cuts the
result back to the batch it was given. The extra positions are padding (masked keys, ignored queries)
and the extra rows copies of the first one, dropped: outputs and gradients are the reference's, to float
rounding (without dropout, whose random draws differ).

On the CPU there are no graphs to replay, and padding would be work the other paths never do. There
(``bucket=None``) the forward compiles once with symbolic sizes and runs every batch as it comes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minibert.config import BertConfig
from minibert.model import BertModel, BertOutput

# Compilations allowed per forward: length buckets (16 up to 512 tokens) x row counts x train/eval x
# grad/no grad, on CUDA. Dynamo's default (8) would end in an error once a long run meets its ninth shape.
RECOMPILE_LIMIT = 1024


def recompile_limits() -> dict[str, int]:
    """Dynamo's limit settings, under the names this torch has (torch >= 2.7, then the older ones). Read
    when a compiled model runs: torch._dynamo is slow to import, and no other path needs it."""
    import torch._dynamo

    names = ("recompile_limit", "accumulated_recompile_limit", "cache_size_limit", "accumulated_cache_size_limit")
    return {name: RECOMPILE_LIMIT for name in names if hasattr(torch._dynamo.config, name)}


def bucketed(n: int, bucket: int, limit: int) -> int:
    """``n`` rounded up to a multiple of ``bucket``, but never above ``limit`` (and never below ``n``)."""
    return max(n, min(-(-n // bucket) * bucket, limit))


def next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


class CompiledBertModel(BertModel):
    """``BertModel`` whose forward is ``torch.compile``d: on batches padded to a few fixed shapes (lengths a
    multiple of ``bucket``; ``convert`` takes 32 on CUDA), or with dynamic shapes when ``bucket`` is None.

    ``mode`` is torch.compile's: ``None`` (fusion only) or ``"reduce-overhead"`` (fusion and CUDA
    graphs, on CUDA). Build a compiled twin of a model with ``minibert.paths.convert(model, "compiled")``."""

    path = "compiled"

    def __init__(self, config: BertConfig, add_pooler: bool = True, attn_implementation: str = "sdpa",
                 bucket: int | None = None, mode: str | None = None) -> None:
        super().__init__(config, add_pooler, attn_implementation)
        if bucket is not None and bucket < 1:
            raise ValueError(f"bucket must be >= 1, got {bucket}")
        self.bucket, self.mode = bucket, mode
        # The reference forward, compiled once per shape (once in all, with symbolic sizes). Unbound: it
        # takes the module as an argument, so a copy of this model runs its own weights.
        self.compiled_forward = torch.compile(BertModel.forward, mode=mode, dynamic=bucket is None, fullgraph=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                pool: bool = True) -> BertOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if self.bucket is None:  # symbolic sizes: every batch as it is
            with torch._dynamo.config.patch(recompile_limits()):
                return self.compiled_forward(self, input_ids, attention_mask, token_type_ids,
                                             output_hidden_states=output_hidden_states, pool=pool)
        B, L = input_ids.shape
        rows = next_power_of_two(B) - B
        cols = bucketed(L, self.bucket, self.max_tokens) - L
        # Pad columns are padding (the pad token, mask 0: RoBERTa's positions skip it); pad rows repeat
        # row 0, a real sentence, so that no row of the compiled batch is all padding.
        pad_id = self.position_skip_id if self.position_skip_id is not None else (self.config.pad_token_id or 0)
        pad_values = (pad_id % self.config.vocab_size, 0, 0)
        inputs = [torch.cat([F.pad(t, (0, cols), value=v), F.pad(t[:1], (0, cols), value=v).expand(rows, -1)])
                  for t, v in zip((input_ids, attention_mask, token_type_ids), pad_values, strict=True)]
        with torch._dynamo.config.patch(recompile_limits()):
            out = self.compiled_forward(self, *inputs, output_hidden_states=output_hidden_states, pool=pool)
        pooled = out.pooler_output[:B] if out.pooler_output is not None else None
        hidden = tuple(h[:B, :L] for h in out.hidden_states) if output_hidden_states else None
        return BertOutput(out.last_hidden_state[:B, :L], pooled, hidden)

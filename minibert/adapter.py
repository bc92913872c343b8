"""Task-specific capacity on a shared encoder: a residual bottleneck adapter per task, and a knob on how
hard each task may pull the shared weights.

    token states ─┬──────────────────────────────────────┐
                  └─▶ LayerNorm ─▶ down (C→r) ─▶ GELU ─▶ up (r→C) ─▶ + ─▶ the task's head

In a multi-task model every task's gradient moves the one encoder, and what one task needs can undo what
another learnt. An adapter (Houlsby et al., 2019) gives a task a few weights of its own to say what is
particular to it; ``scale_gradient`` lets that task move the shared encoder less while its adapter and
head learn at full rate. A task without an adapter reads the encoder's states as they are; the types whose
prediction is the embedding the sentence-transformers folder exports (sts, pairs) take none.

The adapter sits once, on the encoder's last token states, rather than inside every block as in the
paper: every execution path (``minibert.paths``) then runs the encoder unchanged, and the adapter runs
beside it. Its ``up`` projection starts at zero, so a new adapter is the identity: adding one to a
trained model changes none of its outputs until it is trained.
"""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    """x + up(GELU(down(LN(x)))), with ``up`` zero at the start. ``width`` is the bottleneck r."""

    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.down = nn.Linear(hidden_size, width)
        self.up = nn.Linear(width, hidden_size)
        nn.init.normal_(self.down.weight, std=0.02)  # BERT's initializer_range
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # zero: the residual branch adds nothing until it learns to
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(nn.functional.gelu(self.down(self.norm(hidden))))


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged going forward; going back, its gradient times ``scale``. Placed between the encoder
    and a task's adapter, it lets the task move the encoder by a fraction of its gradient while the layers
    above get all of it (0 freezes the encoder for that task alone)."""
    return x if scale == 1.0 else _ScaleGradient.apply(x, scale)

"""A task's own top layers: the encoder shared below, a branch of the task's own above.

    embeddings ─▶ block 0 ─▶ ... ─▶ block L-n-1 ─┬─▶ block L-n ... block L-1 ─▶ the shared embedding (STS, export)
                                                 └─▶ own copy of blocks L-n ... L-1 ─▶ the task's head

Multi-task models often share the lower layers and give each task the top ones ("hard parameter sharing"
with task branches): the lower layers hold what every task can use, the top layers what each task reads
out. An adapter (``minibert.adapter``) gives a task a small bottleneck above the shared top; a branch gives
it whole transformer blocks, started as copies of the pretrained top ``n`` blocks, so a new branch computes
what the encoder does (bit for bit on the reference path), and it learns at the rates of the layers it
copies (layer-wise decay). It belongs to its task's head: saved with it, frozen with "head:NAME".

The branch runs on the reference blocks (``minibert.model``) beside whichever execution path the encoder
takes: it reads the encoder's hidden states below the top ``n`` and its attention mask (and MPNet's
relative position bias). The encoder still computes its own top blocks for that batch; they get that
task's gradient only from a distillation term that pulls the shared embedding (``optim.distill_at``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from minibert.model import BertModel, set_dropout
from minibert.paths import convert


class Branch(nn.Module):
    """Copies of ``bert``'s top ``n`` blocks, run on the hidden states below them."""

    def __init__(self, bert: BertModel, n: int) -> None:
        super().__init__()
        if not 1 <= n <= len(bert.blocks):
            raise ValueError(f"a branch of {n} layers: the encoder has {len(bert.blocks)}")
        bert = convert(bert, "reference")  # the blocks as written in minibert.model, whichever path it runs
        self.start = len(bert.blocks) - n  # hidden_states[start]: the output of block start - 1 (or embeddings)
        self.blocks = nn.ModuleList(copy.deepcopy(block) for block in bert.blocks[self.start:])

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: the encoder's hidden states below the branch, ``hidden_states[self.start]``."""
        for block in self.blocks:
            x = block(x, attention_mask, bias)
        return x

    def set_dropout(self, p: float) -> None:
        set_dropout(self, p)

"""SBERT pooling: token vectors (B, L, C) -> one sentence vector (B, k*C), padding never included.

Modes follow sentence-transformers' ``Pooling`` exactly; several modes are concatenated in the
order the config lists them (the legacy boolean format has a fixed order, kept below).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from minibert.files import read_json
from minibert.typecheck import check_types

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# The old boolean keys of 1_Pooling/config.json, in sentence-transformers' concatenation order.
LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass
class PoolingConfig:
    modes: tuple[str, ...] = ("mean",)
    embedding_dimension: int | None = None
    include_prompt: bool = True  # false: a prompt's tokens ([CLS] included) are left out of the pooling

    def __post_init__(self) -> None:
        if isinstance(self.modes, str):
            self.modes = (self.modes,)
        check_types(self, "pooling ")
        self.modes = tuple(self.modes)
        if not self.modes:
            raise ValueError("at least one pooling mode is needed")
        for mode in self.modes:
            if mode not in POOLING_MODES:
                raise ValueError(f"unknown pooling mode {mode!r}; choose from {POOLING_MODES}")

    @classmethod
    def from_json(cls, path: str | Path) -> PoolingConfig:
        """Read ``1_Pooling/config.json`` in either the current or the legacy boolean format."""
        raw = read_json(path, "pooling config")
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object of settings, got {type(raw).__name__}")
        unknown = sorted(set(raw) - {"embedding_dimension", "word_embedding_dimension", "pooling_mode",
                                     "include_prompt", *LEGACY_KEYS})
        if unknown:  # (sentence-transformers fails on them too)
            raise ValueError(f"{path}: {unknown[0]!r} is not a setting of sentence-transformers' Pooling")
        for key in ("include_prompt", *LEGACY_KEYS):
            if not isinstance(raw.get(key, False), bool):
                raise ValueError(f"{path}: {key} must be true or false, got {raw[key]!r}")
        dim = raw.get("embedding_dimension", raw.get("word_embedding_dimension"))
        if "pooling_mode" in raw:
            modes = raw["pooling_mode"]
        else:
            modes = tuple(mode for key, mode in LEGACY_KEYS.items() if raw.get(key, False)) or ("mean",)
        try:
            return cls(modes=modes, embedding_dimension=dim, include_prompt=raw.get("include_prompt", True))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def to_json_dict(self) -> dict:
        """The legacy boolean form, which every sentence-transformers version reads (it fixes the order)."""
        legacy_order = tuple(m for m in LEGACY_KEYS.values() if m in self.modes)
        if legacy_order == self.modes:
            out = {"word_embedding_dimension": self.embedding_dimension}
            out.update({key: mode in self.modes for key, mode in LEGACY_KEYS.items()})
        else:
            out = {"embedding_dimension": self.embedding_dimension, "pooling_mode": list(self.modes)}
        return out if self.include_prompt else {**out, "include_prompt": False}


class Pooling(nn.Module):
    """Pools token vectors with one or more modes; ``mask`` is (B, L) with 1 for real tokens."""

    def __init__(self, config: PoolingConfig | None = None) -> None:
        super().__init__()
        self.config = config or PoolingConfig()

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, prompt_length: int = 0) -> torch.Tensor:
        """``prompt_length``: the first tokens of every row are a prompt ([CLS] included), left out when the
        config says ``include_prompt = false`` (rows are padded on the right, so they come first)."""
        pool_mask = mask
        if prompt_length and not self.config.include_prompt:
            pool_mask = mask.clone()
            pool_mask[:, :prompt_length] = 0
        first = mask.to(torch.int).argmax(dim=1)  # the first real token; weightedmean counts from it
        return torch.cat([pool(mode, hidden, pool_mask, first) for mode in self.config.modes], dim=-1)

    def output_dim(self, hidden_size: int) -> int:
        return len(self.config.modes) * hidden_size


def pool(mode: str, hidden: torch.Tensor, mask: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """One pooling mode over the tokens ``mask`` keeps. ``first``: each row's first real token, where
    weightedmean's weights start (a prompt left out of ``mask`` keeps its positions: the tokens after it are
    weighted as if it were there, as sentence-transformers weights them). Sums accumulate in float32 even for
    bf16/fp16 hidden states."""
    B, L, C = hidden.shape
    keep = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1): multiplying by it zeroes the pads
    acc = torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype
    if mode == "cls":  # the first token the mask keeps: [CLS], or the first after a left-out prompt
        kept = mask.to(torch.int).argmax(dim=1)
        return hidden[torch.arange(B, device=hidden.device), kept]
    if mode == "max":  # pads become -inf so they never win the max
        return hidden.masked_fill(keep == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        summed = (hidden * keep).sum(dim=1, dtype=acc)
        count = keep.sum(dim=1, dtype=acc).clamp(min=1e-9)
        # mean_sqrt_len divides by sqrt(n): longer sentences get slightly longer vectors
        return (summed / (count if mode == "mean" else count.sqrt())).to(hidden.dtype)
    if mode == "weightedmean":  # token t (counting from 1) gets weight t: later tokens count more
        weights = torch.arange(1, L + 1, device=hidden.device, dtype=acc).view(1, L, 1)
        if first is None:
            first = mask.to(torch.int32).argmax(dim=1)
        weights = weights - first.view(B, 1, 1).to(acc)  # start at the first real token
        weighted = keep.to(acc) * weights
        return ((hidden * weighted).sum(dim=1) / weighted.sum(dim=1).clamp(min=1e-9)).to(hidden.dtype)
    if mode == "lasttoken":  # the last real token ([SEP] for BERT)
        last = L - 1 - mask.flip(1).to(torch.int).argmax(dim=1)
        return (hidden * keep)[torch.arange(B, device=hidden.device), last]
    raise ValueError(f"unknown pooling mode {mode!r}; choose from {POOLING_MODES}")

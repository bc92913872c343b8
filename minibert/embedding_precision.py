"""Embeddings in fewer bits, as sentence-transformers' ``encode(precision=...)`` gives them: a corpus of millions
of vectors takes a quarter of the memory in int8 and a thirty-second in binary, and search over it is faster.

- **int8 / uint8**: each dimension's range, [min, max] over the embeddings themselves (or over ``calibration``
  embeddings, or given ``ranges``), is cut into 256 equal buckets; a value becomes its bucket's index, 0..255
  (uint8), or that minus 128 (int8). Ranges taken from the embeddings being quantized depend on which are in
  the batch: for a corpus, compute them once on a sample and pass them.
- **binary / ubinary**: one bit per dimension, set where the value is above 0, eight packed into a byte
  (ubinary; the first dimension in the highest bit), or that byte minus 128 as int8 (binary).

The arithmetic is NumPy's, in the embeddings' own float precision (bfloat16 widened to float32) and in
sentence-transformers' order, so the same float embeddings give the same integers.
"""

from __future__ import annotations

import numpy as np
import torch

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def checked_precision(precision: str | None) -> str:
    """``precision`` if it is one of ``PRECISIONS`` (None: float32), else a ValueError that names it."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision or "float32"


def quantize_embeddings(embeddings: np.ndarray | torch.Tensor, precision: str | None,
                        ranges: np.ndarray | None = None,
                        calibration_embeddings: np.ndarray | None = None) -> np.ndarray:
    """(N, D) float embeddings in ``precision`` (one of ``PRECISIONS``; None is float32): float32 as they are,
    int8 or uint8 (N, D), binary or ubinary (N, ceil(D / 8)). ``ranges`` (2, D) or ``calibration_embeddings``
    (M, D) set the int8 and uint8 buckets; by default they come from ``embeddings`` themselves, which must then
    be more than one. (The arguments are sentence-transformers'.)"""
    precision = checked_precision(precision)
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu()
        embeddings = (embeddings.float() if embeddings.dtype == torch.bfloat16 else embeddings).numpy()
    embeddings = np.asarray(embeddings)
    if embeddings.dtype in (np.int8, np.uint8):
        raise ValueError(f"embeddings to quantize must not be quantized already, got {embeddings.dtype}")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("binary"):
        packed = np.packbits(embeddings > 0, axis=-1)
        return (packed - 128).astype(np.int8) if precision == "binary" else packed
    if embeddings.ndim == 2 and len(embeddings) == 0:
        return np.zeros(embeddings.shape, dtype=np.int8 if precision == "int8" else np.uint8)
    if ranges is None:  # each dimension's minimum and maximum
        if calibration_embeddings is None and (embeddings.ndim == 1 or embeddings.shape[0] == 1):
            raise ValueError(f"{precision} ranges cannot be computed from a single embedding: pass ranges or "
                             "calibration_embeddings")
        sample = embeddings if calibration_embeddings is None else np.asarray(calibration_embeddings)
        ranges = np.vstack((sample.min(axis=0), sample.max(axis=0)))
    ranges = np.asarray(ranges).astype(np.float32, copy=False)
    starts = ranges[0]
    steps = (ranges[1] - starts) / 255
    steps = np.where(steps == 0, 1, steps)  # (a dimension that never varies: bucket 0)
    buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
    return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)

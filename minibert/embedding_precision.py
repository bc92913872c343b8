"""Embeddings in fewer bits, as sentence-transformers' ``encode(precision=...)`` gives them: a corpus of millions
of vectors takes a quarter of the memory in int8 and a thirty-second in binary, and search over it is faster.

- **int8 / uint8**: each dimension's range, [min, max] over the embeddings themselves (or over ``calibration``
  embeddings, or given ``ranges``), is cut into 256 equal buckets; a value becomes its bucket's index, 0..255
  (uint8), or that minus 128 (int8). Ranges taken from the embeddings being quantized depend on which are in
  the batch: for a corpus, compute them once on a sample and pass them.
- **binary / ubinary**: one bit per dimension, set where the value is above 0, eight packed into a byte
  (ubinary; the first dimension in the highest bit), or that byte minus 128 as int8 (binary).

The arithmetic is NumPy's in float32, in sentence-transformers' order, so the same float embeddings give the
same integers.
"""

from __future__ import annotations

import numpy as np
import torch

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantize_embeddings(embeddings: np.ndarray | torch.Tensor, precision: str, ranges: np.ndarray | None = None,
                        calibration: np.ndarray | None = None) -> np.ndarray:
    """(N, D) float embeddings in ``precision`` (one of ``PRECISIONS``): float32 as they are, int8 or uint8
    (N, D), binary or ubinary (N, ceil(D / 8)). ``ranges`` (2, D) or ``calibration`` (M, D) set the int8 and
    uint8 buckets; by default they come from ``embeddings`` themselves."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().float().cpu().numpy()
    embeddings = np.asarray(embeddings)
    if not np.issubdtype(embeddings.dtype, np.floating):
        raise ValueError(f"embeddings to quantize must be floats, got {embeddings.dtype}")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("binary"):
        packed = np.packbits(embeddings > 0, axis=-1)
        return (packed - 128).astype(np.int8) if precision == "binary" else packed
    if len(embeddings) == 0:
        return np.zeros(embeddings.shape, dtype=np.int8 if precision == "int8" else np.uint8)
    if ranges is None:  # each dimension's minimum and maximum
        if calibration is None and embeddings.shape[0] < 2:
            raise ValueError(f"{precision} ranges cannot be computed from a single embedding: pass ranges or "
                             "calibration embeddings")
        sample = embeddings if calibration is None else np.asarray(calibration)
        ranges = np.vstack((sample.min(axis=0), sample.max(axis=0)))
    ranges = np.asarray(ranges, dtype=np.float32)
    starts = ranges[0]
    steps = (ranges[1] - starts) / 255
    steps = np.where(steps == 0, 1, steps)  # (a dimension that never varies: bucket 0)
    buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
    return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)

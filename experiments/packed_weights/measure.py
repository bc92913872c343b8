"""Whole encodes with oneDNN's weights packed once (``minibert/paths/weight_forms.py``) against plain weights,
which oneDNN reorders at every call: the same process, alternating, the packing switched off and on.

Rows: the fast fp32 path on the kernel measured here, fast bf16 on its measured kernel, and fast bf16 with
oneDNN's kernel forced (``CHOSEN``), for where oneDNN is the one measured. Embeddings are compared bit for bit.

    python experiments/packed_weights/measure.py [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from minibert import SentenceEncoder
from minibert.paths import kernels, onednn, weight_forms

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_encode import cpu_name, encode_study  # noqa: E402  (scripts/, put on the path above)
from timing import in_turn, timed  # noqa: E402

PACK_OP = onednn.PACK_OP


def packing(on: bool) -> None:
    """Weights packed (the library's way) or plain; the kept forms made again either way."""
    onednn.PACK_OP = PACK_OP if on else None
    weight_forms.KEPT.clear()


def main() -> None:
    if PACK_OP is None:
        raise SystemExit("this torch build has no oneDNN weight packing: nothing to compare")
    args, folder, sentences = encode_study(__doc__.split("\n")[0])
    fast = SentenceEncoder.from_pretrained(folder, path="fast")
    rows = {"fast fp32": (fast, None), "fast bf16": (fast.in_dtype(torch.bfloat16), None),
            "fast bf16, oneDNN forced": (fast.in_dtype(torch.bfloat16), "onednn")}
    chosen = {dtype: kernels.linear_kernel(dtype) for dtype in (torch.float32, torch.bfloat16)}  # (packing on)

    def encode(name: str, packed: bool) -> tuple[float, np.ndarray]:
        """Seconds of one encode of every sentence, and its embeddings; the kept forms made before the clock."""
        encoder, forced = rows[name]
        kernels.CHOSEN[torch.bfloat16] = forced or chosen[torch.bfloat16]
        packing(packed)
        encoder.encode(sentences[:64])
        return timed(lambda: encoder.encode(sentences))

    labels = [(name, packed) for name in rows for packed in (False, True)]
    embeddings = {label: encode(*label)[1] for label in labels}  # (also the warm-up)
    times = {label: [] for label in labels}
    for turn in range(args.rounds):  # taking turns, so that machine noise meets them all alike
        for label in in_turn(labels, turn):
            times[label].append(encode(*label)[0])
    print(f"{cpu_name()}; torch {torch.__version__}; kernels measured: float32 {chosen[torch.float32]}, bfloat16 "
          f"{chosen[torch.bfloat16]}; {len(sentences)} sentences, batch 32, {args.threads} threads, medians of "
          f"{args.rounds} alternating rounds (64 sentences encoded first, not timed)")
    rates = {label: len(sentences) / statistics.median(seconds) for label, seconds in times.items()}
    for name in rows:
        plain, packed = (name, False), (name, True)
        same = np.array_equal(embeddings[plain], embeddings[packed])
        print(f"{name:28s} plain {rates[plain]:8.1f}   packed {rates[packed]:8.1f}   "
              f"({rates[packed] / rates[plain]:.2f}x; embeddings {'equal bit for bit' if same else 'DIFFER'})")


if __name__ == "__main__":
    main()

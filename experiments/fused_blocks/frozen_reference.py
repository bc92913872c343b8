"""The whole reference encoder in bf16 compiled by inductor with its weights frozen into the graph, against the
eager fast path: does letting inductor own every layer (oneDNN's packed bf16 linears with their bias and GELU
fused, LayerNorm and residual adds fused, the mask arithmetic folded) beat the hand-made fast path?

    python experiments/fused_blocks/frozen_reference.py      # under a minute on 2 cores; needs a C++ compiler
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch._inductor.config as inductor_config

from minibert import DEFAULT_MODEL, SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from timing import alternating_rounds  # noqa: E402  (scripts/, put on the path above)


@torch.no_grad()
def main(rounds: int = 5) -> None:
    pairs = read_sts_tsv(Path(default_data_dir()) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    encoders = {name: SentenceEncoder.from_pretrained(DEFAULT_MODEL, dtype=torch.bfloat16, path=path)
                for name, path in (("fast bf16, eager", "fast"), ("reference bf16, eager", "reference"),
                                   ("reference bf16, compiled, weights frozen", "reference"))}
    frozen = encoders["reference bf16, compiled, weights frozen"]
    with inductor_config.patch(freezing=True):
        frozen.bert.compile(dynamic=True)
        start = time.perf_counter()
        frozen.encode(sentences, batch_size=32)  # every batch shape compiled before timing
        print(f"first encode, compiling included: {time.perf_counter() - start:.1f} s")
        for encoder in encoders.values():
            encoder.encode(sentences[:256], batch_size=32)
        times = alternating_rounds({name: lambda e=encoder: e.encode(sentences, batch_size=32)
                                    for name, encoder in encoders.items()}, rounds)
        eager = encoders["reference bf16, eager"].encode(sentences[:256], batch_size=32)
        compiled = frozen.encode(sentences[:256], batch_size=32)
    base = statistics.median(times["fast bf16, eager"])
    print(f"{len(sentences)} sentences, batch 32, {torch.get_num_threads()} threads, medians of {rounds} rounds")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:42} {len(sentences) / median:8.1f} sentences/s  {base / median:5.2f}x the fast path")
    print(f"compiled vs eager reference embeddings, largest difference: {np.abs(compiled - eager).max():.1e}")


if __name__ == "__main__":
    main()

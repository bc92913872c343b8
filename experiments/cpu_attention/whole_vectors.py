"""What the fast path's written-out CPU attention gains from keys padded to whole vectors and the mask added
inside the scaled product, in two tables:

1. softmax alone, per row length: PyTorch's CPU softmax over rows of L scores, and over the same rows padded
   with masked scores to a multiple of 64 bytes (16 float32, 32 bf16), as ``attention_kernels.products_attention``
   pads them (32 sentences x 12 heads x L queries, microseconds, best of 5 rounds of 200 calls);
2. whole encodes of STS-B test (2,758 sentences, batch 32), the attention as it ran before (below) against
   now, alternating in one process, for fast float32, fast bf16 and int8 (sentences/s, median of the rounds).

    python experiments/cpu_attention/whole_vectors.py      # about 1.5 minutes on 2 cores
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from train_ab import bf16_products  # (this folder: on the path when the script runs)

from minibert import DEFAULT_MODEL, SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.paths import attention_kernels, kernels
from minibert.paths import fast as fast_module


def before(q, k, v, keep, bias=None, dropout_p=0.0, terms=None):
    """The written-out attention as it ran before: the rows as long as the batch, the mask filled in after
    (``train_ab.bf16_products``), in float32 where bf16 linears are upcast (``terms`` unused)."""
    if q.dtype == torch.bfloat16 and kernels.CHOSEN.get(torch.bfloat16) == "upcast":
        return bf16_products(q.float(), k.float(), v.float(), keep, bias, dropout_p).to(q.dtype)
    return bf16_products(q, k, v, keep, bias, dropout_p)


def microseconds(function, calls: int = 200, rounds: int = 5) -> float:
    function()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def softmax_table() -> None:
    print("softmax over rows of L scores (us): as they are, and padded to whole 64-byte vectors")
    print(f"{'L':>4}{'float32':>10}{'padded':>10}{'bf16':>10}{'padded':>10}")
    generator = torch.Generator().manual_seed(0)
    for length in (8, 12, 15, 16, 17, 20, 24, 28, 33):
        row = f"{length:>4}"
        for dtype in (torch.float32, torch.bfloat16):
            scores = torch.randn(32, 12, length, length, generator=generator).to(dtype)
            padded = F.pad(scores, (0, -length % (64 // scores.element_size())), value=torch.finfo(dtype).min)
            for rows in (scores, padded):
                row += f"{microseconds(lambda s=rows: s.softmax(-1)):10.0f}"
        print(row)


def encode_table(rounds: int = 5) -> None:
    pairs = read_sts_tsv(Path(default_data_dir()) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    reference = SentenceEncoder.from_pretrained(DEFAULT_MODEL, path="reference")
    encoders = {"fast float32": reference.to_path("fast"),
                "fast bfloat16": SentenceEncoder.from_pretrained(DEFAULT_MODEL, dtype=torch.bfloat16, path="fast"),
                "int8": reference.to_path("int8")}
    variants = {"before": before, "now": attention_kernels.products_attention}
    print(f"\nencode, sentences/s, median of {rounds} rounds (the rounds)")
    for name, encoder in encoders.items():
        encoder.encode(sentences[:256], batch_size=32)  # warm-up, and the kernels chosen
        rates: dict[str, list[float]] = {variant: [] for variant in variants}
        embeddings = {}
        for _ in range(rounds):
            for variant, attention in variants.items():
                fast_module.products_attention = attention
                start = time.perf_counter()
                embeddings[variant] = encoder.encode(sentences, batch_size=32)
                rates[variant].append(len(sentences) / (time.perf_counter() - start))
        fast_module.products_attention = attention_kernels.products_attention
        medians = {variant: statistics.median(r) for variant, r in rates.items()}
        difference = float((torch.as_tensor(embeddings["now"]).float()
                            - torch.as_tensor(embeddings["before"]).float()).abs().max())
        print(f"{name:14} before {medians['before']:7.1f} ({', '.join(f'{r:.0f}' for r in rates['before'])})  "
              f"now {medians['now']:7.1f} ({', '.join(f'{r:.0f}' for r in rates['now'])})  "
              f"{medians['now'] / medians['before']:.3f}x  max |difference| {difference:.1e}")

    def names(chosen: dict) -> dict:
        return {str(dtype).removeprefix("torch."): kernel for dtype, kernel in chosen.items()}

    print("attention chosen:", names(attention_kernels.ATTENTION_CHOSEN), "linear kernels:", names(kernels.CHOSEN))


if __name__ == "__main__":
    torch.set_num_threads(2)
    softmax_table()
    encode_table()

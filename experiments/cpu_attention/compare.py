"""Attention in the fast path on the CPU: SDPA's fused kernel, or the products written out?

The model's ``attn_implementation`` ("sdpa" or "eager") picks it on every path, so the two are the same
model with one setting changed. Two measurements on the CPU at hand:

1. one layer's attention module of the fast path (the fused QKV product, then attention on the (B, L)
   grid), on a batch of 32 sentences of 8 to 128 tokens with a few keys masked: best of 9 timings of 30
   calls, both settings taking turns;
2. encoding STS-B test (2,758 sentences, batch 32) on the fast path, fp32 and bf16, the two settings
   alternating (and which goes first alternating too): sentences/s, median and every round.

    python experiments/cpu_attention/compare.py [--rounds 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from minibert import DEFAULT_MODEL, SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.paths.fast import Packing

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from timing import timed  # noqa: E402  (scripts/, put on the path above)

SETTINGS = ("eager", "sdpa")


@torch.inference_mode()
def one_layer(encoder: SentenceEncoder) -> None:
    attention = encoder.bert.blocks[0].attention
    C = encoder.bert.config.hidden_size
    print("one layer's attention module (QKV product included), batch 32, microseconds a call:")
    print(f"{'tokens':>8}" + "".join(f"{s:>10}" for s in SETTINGS))
    for length in (8, 16, 32, 64, 128):
        mask = torch.ones(32, length, dtype=torch.long)
        mask[::3, -(length // 8 + 1):] = 0  # a third of the sentences end early
        packing = Packing.from_mask(mask, pack_above=1.0)  # keep the grid: what sorted batches mostly do
        x = torch.randn(32 * length, C)
        best = dict.fromkeys(SETTINGS, float("inf"))
        for _ in range(9):
            for setting in SETTINGS:
                attention.attn_implementation = setting
                attention(x, packing)  # warm-up
                seconds = timed(lambda x=x, packing=packing: [attention(x, packing) for _ in range(30)])[0]
                best[setting] = min(best[setting], seconds / 30)
        print(f"{length:8}" + "".join(f"{best[s] * 1e6:10.0f}" for s in SETTINGS))
    attention.attn_implementation = encoder.bert.attn_implementation


def encoding(model: str, sentences: list[str], dtype: torch.dtype, rounds: int) -> None:
    encoder = SentenceEncoder.from_pretrained(model, dtype=dtype, path="fast")
    times = {s: [] for s in SETTINGS}
    for setting in SETTINGS:  # warm-up, and the outputs agree
        encoder.bert.set_attn_implementation(setting)
        encoder.encode(sentences[:256])
    for r in range(rounds):
        for setting in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
            encoder.bert.set_attn_implementation(setting)
            start = time.perf_counter()
            encoder.encode(sentences)
            times[setting].append(time.perf_counter() - start)
    name = str(dtype).removeprefix("torch.")
    for setting, ts in times.items():
        print(f"fast {name:9} {setting:6} {len(sentences) / statistics.median(ts):7.1f} sentences/s   rounds: "
              + " ".join(f"{len(sentences) / t:.0f}" for t in ts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    one_layer(SentenceEncoder.from_pretrained(args.model, path="fast"))
    for dtype in (torch.float32, torch.bfloat16):
        encoding(args.model, sentences, dtype, args.rounds)


if __name__ == "__main__":
    main()

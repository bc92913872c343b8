"""Training speed of one change, A/B in one process, alternating rounds: fast-path bf16-autocast training
steps (16 STS-B train pairs, cosine MSE, AdamW, dropout on) with the attention products computed in float32
where bf16 linears are (now), against the same products in bf16 (before).

    python experiments/cpu_attention/train_ab.py
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minibert import SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.paths import attention_kernels, kernels
from minibert.paths import fast as fast_module


def bf16_products(q, k, v, keep, bias=None, dropout_p=0.0, terms=None):
    """The written-out attention as it ran before: in the inputs' dtype, bf16 products emulated here (``terms``,
    the mask kept for the next layer now, unused)."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if bias is not None:
        scores = scores + bias
    if keep is not None:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return F.dropout(F.softmax(scores, dim=-1), p=dropout_p, training=dropout_p > 0) @ v


def main() -> None:
    torch.set_num_threads(2)
    pairs = read_sts_tsv(Path(default_data_dir()) / "stsb" / "train.tsv")
    encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2", path="fast").train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=2e-5)
    rng = random.Random(0)

    def step() -> None:
        batch = rng.sample(pairs, 16)
        a, b = encoder.tokenizer([p.a for p in batch]), encoder.tokenizer([p.b for p in batch])
        gold = torch.tensor([float(p.label) / 5 for p in batch])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            u, v = encoder(a), encoder(b)
        loss = F.mse_loss(F.cosine_similarity(u.float(), v.float()), gold)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    variants = {"before (bf16 products)": bf16_products,
                "now (float32 where upcast)": attention_kernels.products_attention}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):
        for name, attention in variants.items():
            fast_module.products_attention = attention
            for _ in range(2):  # untimed
                step()
            start = time.perf_counter()
            for _ in range(6):
                step()
            times[name].append((time.perf_counter() - start) / 6)
    print(f"bf16 linear kernel here: {kernels.CHOSEN.get(torch.bfloat16)}")
    for name, seconds in times.items():
        rounds = ", ".join(f"{16 / s:.1f}" for s in seconds)
        print(f"{name:28} {16 / statistics.median(seconds):6.1f} pairs/s (rounds: {rounds})")


if __name__ == "__main__":
    main()

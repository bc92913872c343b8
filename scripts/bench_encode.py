"""Encoding speed, minibert vs sentence-transformers, side by side in one process.

Encodes the 2,758 sentences of STS-B test with both libraries (same model folder, batch size,
threads, dtype), alternating rounds so that machine noise hits both alike. Prints sentences/s
for each, their ratio, minibert's effective GFLOP/s, and the STS-B test Spearman of the cosine
scores (all-MiniLM-L6-v2 should give 0.8203).

    python scripts/bench_encode.py [--data ../shared/data] [--rounds 3] [--threads 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timing import timed

from minibert import DEFAULT_MODEL, SentenceEncoder, resolve_model
from minibert.data import default_data_dir, read_sts_tsv
from minibert.metrics import spearman


def encoder_flops(encoder: SentenceEncoder, sentences: list[str], batch_size: int) -> float:
    """Multiply-adds x 2 of the forward passes minibert actually runs (padding included)."""
    cfg = encoder.bert.config
    C, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    lengths = sorted((len(e.ids) for e in encoder.tokenizer.encode(sentences, warn_truncation=False)), reverse=True)
    total = 0.0
    for start in range(0, len(lengths), batch_size):
        L = lengths[start]  # each batch pads to its longest, which comes first
        n = len(lengths[start:start + batch_size])
        per_token = 2 * (4 * C * C + 2 * C * inter) + 2 * 2 * L * C  # linears + QK^T and PV
        total += layers * n * L * per_token
    return total


def matmul_ceiling(device: str, dtype: torch.dtype, hidden: int, inter: int) -> float:
    """Best GFLOP/s of the model's own feed-forward product (F.linear, 1024 tokens) on these threads:
    roughly the most any encoder can reach here, since its time goes mostly into such products."""
    x = torch.randn(1024, hidden, device=device, dtype=dtype)
    w = torch.randn(inter, hidden, device=device, dtype=dtype)
    b = torch.zeros(inter, device=device, dtype=dtype)
    for _ in range(3):
        F.linear(x, w, b)
    n = 20
    best = min(timed(lambda: [F.linear(x, w, b) for _ in range(n)], device)[0] for _ in range(5))
    return n * 2 * 1024 * hidden * inter / best / 1e9


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir(), help="folder with stsb/test.tsv (or $MINIBERT_DATA)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    gold = np.array([p.label for p in pairs])
    folder = resolve_model(args.model)
    print(f"{len(sentences)} sentences from STS-B test, model {folder}, batch {args.batch_size}, "
          f"threads {args.threads}, device {args.device}, {args.dtype}, minibert attention {args.attn}")

    ours = SentenceEncoder.from_pretrained(folder, device=args.device, dtype=dtype, attn_implementation=args.attn)
    runners = {"minibert": lambda: ours.encode(sentences, batch_size=args.batch_size)}
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        theirs = SentenceTransformer(str(folder), device=args.device, model_kwargs={"dtype": dtype})
        runners["sentence-transformers"] = lambda: theirs.encode(sentences, batch_size=args.batch_size)
    except ImportError:
        print("sentence-transformers is not installed: timing minibert alone")

    for fn in runners.values():  # warm-up: first-call allocations, kernel selection
        timed(lambda fn=fn: fn(), args.device)
    times: dict[str, list[float]] = {name: [] for name in runners}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, fn in runners.items():
            seconds, outputs[name] = timed(fn, args.device)
            times[name].append(seconds)

    flops = encoder_flops(ours, sentences, args.batch_size)
    print(f"\n{'library':24}{'median s':>10}{'sent/s':>10}{'GFLOP/s':>10}{'STS-B test Spearman':>22}")
    rate = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rate[name] = len(sentences) / med
        emb = np.asarray(outputs[name], dtype=np.float64)
        rho = spearman(cosine_rows(emb[: len(pairs)], emb[len(pairs):]), gold)
        gflops = f"{flops / med / 1e9:10.1f}" if name == "minibert" else f"{'':>10}"
        print(f"{name:24}{med:10.3f}{rate[name]:10.1f}{gflops}{rho:22.4f}")
    cfg = ours.bert.config
    ceiling = matmul_ceiling(args.device, dtype, cfg.hidden_size, cfg.intermediate_size)
    print(f"\nbest plain F.linear on the same threads: {ceiling:.1f} GFLOP/s; minibert runs at "
          f"{flops / statistics.median(times['minibert']) / 1e9 / ceiling:.0%} of it")
    if len(rate) == 2:
        ratio = rate["minibert"] / rate["sentence-transformers"]
        print(f"\nspeed ratio minibert / sentence-transformers: {ratio:.3f}x")
        diff = np.abs(np.asarray(outputs["minibert"], np.float64) - np.asarray(outputs["sentence-transformers"]))
        print(f"max |embedding difference|: {diff.max():.2e}")


if __name__ == "__main__":
    main()

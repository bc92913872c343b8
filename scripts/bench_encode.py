"""Encoding speed: minibert's reference path, its fast path (and int8 on CPU), its compiled path (on
CUDA, or with --compile) and sentence-transformers, in every dtype, side by side in one process.

Encodes the 2,758 sentences of STS-B test (both sides of each pair) with every configuration (same
model folder, batch size and threads), alternating rounds so that machine noise hits all alike.
Prints sentences/s, the ratio to sentence-transformers in the same dtype and in float32, the
effective GFLOP/s against the best linear layer of the model's shape here, and the STS-B test Spearman of the cosine
scores (all-MiniLM-L6-v2 in float32: 0.8203).

    python scripts/bench_encode.py [--data ../shared/data] [--rounds 3] [--threads 2] [--device cuda] [--compile]
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
from minibert.paths import fast as fast_path


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
    """Best GFLOP/s of the model's own feed-forward product (1024 tokens) on these threads, by F.linear
    or, on CPU, by the fast path's oneDNN linear: roughly the most any encoder can reach here, since its
    time goes mostly into such products."""
    x = torch.randn(1024, hidden, device=device, dtype=dtype)
    w = torch.randn(inter, hidden, device=device, dtype=dtype)
    b = torch.zeros(inter, device=device, dtype=dtype)
    kernels = [F.linear] + ([fast_path.onednn_linear] if fast_path.ONEDNN_OP is not None and device == "cpu" else [])
    n, best = 20, float("inf")
    for kernel in kernels:
        for _ in range(3):
            kernel(x, w, b)
        best = min(best, *(timed(lambda k=kernel: [k(x, w, b) for _ in range(n)], device)[0] for _ in range(5)))
    return n * 2 * 1024 * hidden * inter / best / 1e9


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def configurations(folder: Path, args: argparse.Namespace, sentences: list[str]) -> dict:
    """name -> (dtype name, function that encodes all the sentences). Models are built once, up front."""
    dtypes = ["float32", "bfloat16"] + (["float16"] if args.device.startswith("cuda") else [])
    runs = {}

    def encoding(model):
        return lambda: model.encode(sentences, batch_size=args.batch_size)

    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence-transformers is not installed: timing minibert alone")
        SentenceTransformer = None
    for name in dtypes:
        dtype = getattr(torch, name)
        if SentenceTransformer is not None:
            theirs = SentenceTransformer(str(folder), device=args.device, model_kwargs={"dtype": dtype})
            runs[f"sentence-transformers {name}"] = (name, encoding(theirs))
        ours = SentenceEncoder.from_pretrained(folder, device=args.device, dtype=dtype, path="reference")
        runs[f"minibert {name}"] = (name, encoding(ours))
        runs[f"minibert fast {name}"] = (name, encoding(ours.to_path("fast")))
        if name == "float32" and args.device == "cpu":
            runs["minibert fast int8"] = (name, encoding(ours.to_path("int8")))
        if args.compile or args.device.startswith("cuda"):  # compiled per batch shape in the warm-up pass
            runs[f"minibert compiled {name}"] = (name, encoding(ours.to_path("compiled")))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir(), help="folder with stsb/test.tsv (or $MINIBERT_DATA)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="time the compiled path too (always on CUDA)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    gold = np.array([p.label for p in pairs])
    folder = resolve_model(args.model)
    print(f"{len(sentences)} sentences from STS-B test, model {folder}, batch {args.batch_size}, "
          f"threads {args.threads}, device {args.device}")
    runs = configurations(folder, args, sentences)
    for _, fn in runs.values():  # warm-up: first-call allocations, kernel selection
        timed(fn, args.device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, (_, fn) in runs.items():
            seconds, outputs[name] = timed(fn, args.device)
            times[name].append(seconds)

    encoder = SentenceEncoder.from_pretrained(folder)
    flops = encoder_flops(encoder, sentences, args.batch_size)
    cfg = encoder.bert.config
    ceiling = {name: matmul_ceiling(args.device, getattr(torch, name), cfg.hidden_size, cfg.intermediate_size)
               for name in {dtype for dtype, _ in runs.values()}}
    rate = {name: len(sentences) / statistics.median(ts) for name, ts in times.items()}
    print(f"\n{'configuration':32}{'sent/s':>9}{'vs ST same dtype':>18}{'vs ST fp32':>12}{'GFLOP/s':>9}"
          f"{'of best':>13}{'Spearman':>10}")
    st32 = rate.get("sentence-transformers float32")
    for name, r in rate.items():
        dtype = runs[name][0]
        st = rate.get(f"sentence-transformers {dtype}")
        emb = np.asarray(outputs[name], dtype=np.float64)
        rho = spearman(cosine_rows(emb[: len(pairs)], emb[len(pairs):]), gold)
        gflops = flops * r / len(sentences) / 1e9
        same = f"{r / st:17.2f}x" if st else f"{'':>18}"
        fp32 = f"{r / st32:11.2f}x" if st32 else f"{'':>12}"
        print(f"{name:32}{r:9.1f}{same}{fp32}{gflops:9.1f}{gflops / ceiling[dtype]:13.0%}{rho:10.4f}")
    print("\nbest linear layer of the model's shape here (GFLOP/s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in ceiling.items()))
    if st32:
        diff = np.abs(np.asarray(outputs["minibert float32"], np.float64) - outputs["sentence-transformers float32"])
        print(f"max |embedding difference| minibert vs sentence-transformers, float32: {diff.max():.2e}")
        diff = np.abs(np.asarray(outputs["minibert fast float32"], np.float64) - outputs["minibert float32"])
        print(f"max |embedding difference| fast vs reference path, float32: {diff.max():.2e}")


if __name__ == "__main__":
    main()

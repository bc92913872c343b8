"""The fast bf16 path's linears by ``F.linear`` or by oneDNN's kernel (its weights packed, the bias and GELU inside
its product): whole encodes of STS-B test, each kernel in processes of its own, as a user's process runs one.

Each round starts one process per kernel (every other round in reverse order); a process encodes every sentence
three times and reports each: the first encode meets every batch shape for the first time (oneDNN makes its
kernels per shape), the later ones run the same shapes again. Embeddings are compared between the kernels.

    python experiments/bf16_kernel/measure.py [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from minibert import SentenceEncoder
from minibert.paths import kernels

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_encode import cpu_name, encode_study  # noqa: E402  (scripts/, put on the path above)
from timing import in_turn  # noqa: E402

KERNELS = ("blas", "onednn")


def one_process(kernel: str, out: Path) -> None:
    """In a child process: three timed encodes with bf16's linears on ``kernel``; prints the seconds, and saves the
    embeddings as ``out``."""
    args, folder, sentences = encode_study(__doc__.split("\n")[0])
    encoder = SentenceEncoder.from_pretrained(folder, dtype=torch.bfloat16, path="fast")
    measured = kernels.linear_kernel(torch.bfloat16)  # (what this process would choose; then the one asked for)
    kernels.CHOSEN[torch.bfloat16] = kernel
    encoder.encode(sentences[:8])  # the first call's one-off costs (threads, allocator), not the shapes
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        embeddings = encoder.encode(sentences)
        seconds.append(time.perf_counter() - start)
    np.save(out, embeddings)
    print(json.dumps({"seconds": seconds, "measured": measured}))


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--child":
        kernel, out = sys.argv[2], Path(sys.argv[3])
        del sys.argv[1:4]
        return one_process(kernel, out)
    args, _, sentences = encode_study(__doc__.split("\n")[0])
    runs = {kernel: [] for kernel in KERNELS}
    scratch = Path(tempfile.mkdtemp())  # each kernel's last embeddings
    for turn in range(args.rounds):
        for kernel in in_turn(KERNELS, turn):
            out = scratch / f"{kernel}.npy"
            command = [sys.executable, __file__, "--child", kernel, str(out), *sys.argv[1:]]
            lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()
            runs[kernel].append(json.loads(lines[-1]))
    print(f"{cpu_name()}; torch {torch.__version__}; {len(sentences)} sentences, batch 32, {args.threads} threads; "
          f"bf16 kernel measured in the processes: {sorted({r['measured'] for rs in runs.values() for r in rs})}")
    print(f"{'kernel':8s} {'first encode':>14s} {'second, third':>14s}   sentences/s, medians of "
          f"{args.rounds} processes")
    rates = {}
    for kernel, results in runs.items():
        first = statistics.median(len(sentences) / r["seconds"][0] for r in results)
        later = statistics.median(len(sentences) / s for r in results for s in r["seconds"][1:])
        rates[kernel] = (first, later)
        print(f"{kernel:8s} {first:14.1f} {later:14.1f}")
    (blas_first, blas_later), (onednn_first, onednn_later) = rates["blas"], rates["onednn"]
    print(f"oneDNN over F.linear: first encode {onednn_first / blas_first:.2f}x, "
          f"later {onednn_later / blas_later:.2f}x")
    a, b = (np.load(scratch / f"{kernel}.npy") for kernel in KERNELS)
    shutil.rmtree(scratch)
    print(f"max |embedding difference| between the kernels: {np.abs(a.astype(np.float64) - b).max():.2e}")


if __name__ == "__main__":
    main()

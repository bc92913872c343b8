"""Encoding speed: minibert's paths against what a sentence-transformers user would pick instead, side by
side in one process: sentence-transformers on PyTorch (fp32, bf16), its ONNX Runtime backend (fp32, O3,
dynamic int8) and OpenVINO (f32, and its default precision), when the `bench` extra is installed
(scripts/rivals.py; rows skip, saying why, otherwise).

Encodes the 2,758 sentences of STS-B test (both sides of each pair) with every configuration (same
model folder, batch size and threads), alternating rounds so that machine noise hits all alike; the
rate is the median round. Prints sentences/s, the ratio to the best rival in the same precision and to
sentence-transformers on PyTorch in fp32, the useful GFLOP/s (the multiply-adds of the real tokens,
padding not counted) against the best linear layer of the model's shape (timed between the encodes of
every round, and taken at its median round as the rates are), and the STS-B test Spearman of the cosine
scores (all-MiniLM-L6-v2 in float32: 0.8203). The header names the CPU, and what glibc's malloc does with
freed memory: kept for the next batch, as the command line keeps it, for every row alike (--malloc-defaults
leaves it as it comes; experiments/malloc/).

    python scripts/bench_encode.py [--data ../shared/data] [--rounds 3] [--threads 2] [--device cuda] [--compile]
                                   [--malloc-defaults]
    make bench-rivals                       # the same, in .venv-bench with the rivals installed
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import numpy as np
import torch

from minibert import DEFAULT_MODEL, SentenceEncoder, resolve_model
from minibert.data import default_data_dir, read_sts_tsv
from minibert.metrics import spearman
from minibert.paths import attention_kernels, int8_kernels, keep_freed_memory, kernels
from minibert.paths.allocator import users_own_choice

from rivals import rival_rows
from timing import in_turn, matmul_peak, timed


def encoder_flops(encoder: SentenceEncoder, sentences: list[str], attention: bool = True) -> float:
    """Multiply-adds x 2 of the useful work: every real token through the linear layers, and (``attention``)
    attention over each sentence's own length (padding is work a path may or may not do: it does not count)."""
    cfg = encoder.bert.config
    C, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    lengths = [len(e.ids) for e in encoder.tokenizer.encode(sentences, warn_truncation=False)]
    return layers * sum(n * (2 * (4 * C * C + 2 * C * inter) + attention * 2 * 2 * n * C) for n in lengths)


def cpu_name() -> str:
    """The CPU's model and the instruction sets that matter for matmuls, for the benchmark's header."""
    info = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
    return f"{model} ({os.cpu_count()} CPUs; {' '.join(f for f in wanted if f in flags) or 'no AVX2'})"


def matmul_ceiling(device: str, group: str, hidden: int, inter: int, reps: int = 5) -> float:
    """Best GFLOP/s of the model's own feed-forward product (1024 tokens) on these threads, best of ``reps``
    timings of 20 products: roughly the most any encoder can reach here, since its time goes mostly into
    such products. Float: every kernel the fast path may pick (F.linear, oneDNN; bf16 also computed in
    float32, minibert.paths.kernels); int8: the bare int8 x int8 product by the int8 path's kernel, without
    quantizing anything."""
    dtype = torch.int8 if group == "int8" else getattr(torch, group)
    if group == "int8":
        x = torch.randint(-127, 128, (1024, hidden), dtype=dtype, device=device)
        w = torch.randint(-127, 128, (hidden, inter), dtype=dtype, device=device)
        packed = int8_kernels.pack_int8_weight(w)  # the form the int8 path's kernel here takes
        products = [lambda: int8_kernels.int8_product(x, w, packed)]
    else:
        x = torch.randn(1024, hidden, device=device, dtype=dtype)
        w = torch.randn(inter, hidden, device=device, dtype=dtype)
        names = kernels.candidates(dtype) if device == "cpu" else ["blas"]
        products = [lambda k=kernels.LINEARS[name]: k(x, w, None) for name in names]
    n, best = 20, float("inf")
    for product in products:
        for _ in range(3):
            product()
        best = min(best, *(timed(lambda p=product: [p() for _ in range(n)], device)[0] for _ in range(reps)))
    return n * 2 * 1024 * hidden * inter / best / 1e9


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def sts_spearman(embeddings: np.ndarray, gold: np.ndarray) -> float:
    """Spearman of the cosines of the pairs (row i, row n + i), n = len(gold), against the gold scores."""
    n = len(gold)
    return spearman(cosine_rows(embeddings[:n], embeddings[n:]), gold)


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
            runs["minibert fast int8"] = ("int8", encoding(ours.to_path("int8")))
        if args.compile or args.device.startswith("cuda"):  # compiled per batch shape in the warm-up pass
            runs[f"minibert compiled {name}"] = (name, encoding(ours.to_path("compiled")))
    if args.device == "cpu":
        runs |= rival_rows(folder, sentences, args.batch_size, args.threads)
    return runs


def add_malloc_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="leave glibc's malloc as it comes; by default freed memory is kept for the next batch "
                             "(minibert.paths.keep_freed_memory), as the command line keeps it, for every row alike")


def malloc_setting(args: argparse.Namespace) -> str:
    """Freed memory kept for the whole process (every row alike) unless --malloc-defaults; what malloc does now."""
    choice = users_own_choice()
    if choice is not None:
        return f"as set before the process started ({choice})"
    return "defaults" if args.malloc_defaults or not keep_freed_memory() else "freed memory kept"


def encode_study(description: str) -> tuple[argparse.Namespace, Path, list[str]]:
    """The set-up of a study that times encodes of STS-B test (experiments/): --model, --data, --rounds (5) and
    --threads (2) read, freed memory kept, the threads set; (the arguments, the model folder, the sentences)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data", default=str(default_data_dir()))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "test.tsv")
    return args, resolve_model(args.model), [p.a for p in pairs] + [p.b for p in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir(), help="folder with stsb/test.tsv (or $MINIBERT_DATA)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="time the compiled path too (always on CUDA)")
    add_malloc_option(parser)
    args = parser.parse_args()
    malloc = malloc_setting(args)

    torch.set_num_threads(args.threads)
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    gold = np.array([p.label for p in pairs])
    folder = resolve_model(args.model)
    print(f"{len(sentences)} sentences from STS-B test, model {folder}, batch {args.batch_size}, "
          f"threads {args.threads}, device {args.device}")
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; malloc: {malloc}")
    runs = configurations(folder, args, sentences)
    for _, fn in runs.values():  # warm-up: first-call allocations, kernel selection
        timed(fn, args.device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, np.ndarray] = {}
    # The ceiling is measured in every round too, between the encodes, so that it meets the same machine
    # noise as they do; the table divides by its median over the rounds, like the rates.
    plain = SentenceEncoder.from_pretrained(folder)  # for the model's shape and the sentences' token counts
    cfg = plain.bert.config
    groups = sorted({group for group, _ in runs.values()})
    ceilings: dict[str, list[float]] = {group: [] for group in groups}
    for turn in range(args.rounds):
        for name, (_, fn) in in_turn(runs.items(), turn):
            seconds, outputs[name] = timed(fn, args.device)
            times[name].append(seconds)
        for group in groups:
            ceilings[group].append(matmul_ceiling(args.device, group, cfg.hidden_size, cfg.intermediate_size, 3))

    flops = encoder_flops(plain, sentences)
    ceiling = {group: statistics.median(rates) for group, rates in ceilings.items()}
    rate = {name: len(sentences) / statistics.median(ts) for name, ts in times.items()}
    rivals = {name: r for name, r in rate.items() if not name.startswith("minibert")}
    best_rival = {g: max((r for n, r in rivals.items() if runs[n][0] == g), default=None) for g in ceiling}
    print(f"\n{'configuration':38}{'sent/s':>9}{'vs best rival':>15}{'vs ST fp32':>12}{'GFLOP/s':>9}"
          f"{'of best linear':>16}{'Spearman':>10}")
    st32 = rate.get("sentence-transformers float32")
    for name, r in rate.items():
        group = runs[name][0]
        emb = np.asarray(outputs[name], dtype=np.float64)
        rho = sts_spearman(emb, gold)
        gflops = flops * r / len(sentences) / 1e9
        rival = f"{r / best_rival[group]:14.2f}x" if best_rival[group] else f"{'':>15}"
        fp32 = f"{r / st32:11.2f}x" if st32 else f"{'':>12}"
        print(f"{name:38}{r:9.1f}{rival}{fp32}{gflops:9.1f}{gflops / ceiling[group]:16.0%}{rho:10.4f}")
    print("\nbest linear layer of the model's shape here (GFLOP/s), median of the rounds (the rounds' range): "
          + ", ".join(f"{k} {v:.1f} ({min(ceilings[k]):.1f}-{max(ceilings[k]):.1f})" for k, v in ceiling.items()))
    if args.device == "cpu":  # measured in this process (minibert/paths/kernels.py, int8_kernels.py)
        def named(chosen: dict) -> str:
            return ", ".join(f"{str(dtype).removeprefix('torch.')} {kernel}" for dtype, kernel in chosen.items())
        print(f"kernels chosen here: {named(kernels.CHOSEN)}; attention: {named(attention_kernels.ATTENTION_CHOSEN)}")
    if args.device.startswith("cuda"):  # model FLOP utilisation: the useful rate against the GPU's dense peak
        peaks = {g: matmul_peak(args.device, getattr(torch, g)) / 1e9 for g in ceiling}
        print("MFU (useful GFLOP/s over a large square matmul's, per dtype: "
              + ", ".join(f"{g} {p / 1e3:.0f} TFLOP/s" for g, p in peaks.items()) + "): "
              + ", ".join(f"{name} {flops * r / len(sentences) / 1e9 / peaks[runs[name][0]]:.1%}"
                          for name, r in rate.items()))
    if st32:
        diff = np.abs(np.asarray(outputs["minibert float32"], np.float64) - outputs["sentence-transformers float32"])
        print(f"max |embedding difference| minibert vs sentence-transformers, float32: {diff.max():.2e}")
        diff = np.abs(np.asarray(outputs["minibert fast float32"], np.float64) - outputs["minibert float32"])
        print(f"max |embedding difference| fast vs reference path, float32: {diff.max():.2e}")


if __name__ == "__main__":
    main()

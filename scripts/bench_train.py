"""Training-step speed: minibert (reference, fast and compiled paths) against sentence-transformers, same batches.

One step = tokenize both sides of a batch of STS-B train pairs, embed, cosine-similarity MSE loss,
backward, AdamW step, as each library's trainer does it (minibert: scripts/train.py's optimizer;
sentence-transformers: CosineSimilarityLoss and the Hugging Face trainer's fused AdamW with decay /
no-decay groups). Dropout on, same threads; the configurations alternate in rounds in one process.
Prints pairs/s, tokens/s (real tokens, padding not counted) and, on CUDA, peak memory, TFLOP/s and
MFU against the measured matmul peak. The compiled path (torch.compile; on CUDA over length buckets,
with CUDA graphs) is timed on CUDA, or with --compile; its compilations fall in the untimed first steps
or, for a length bucket first met later, are outliers that the per-step median leaves out.

    python scripts/bench_train.py [--batch-size 16] [--precision fp32|bf16] [--device cuda] [--compile]
    python scripts/bench_train.py --shape bert-base --precision bf16 --device cuda   # 12 x 768, random init,
                                                                                    # 128 tokens, no weights
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
from pathlib import Path

import torch

from minibert.config import BertConfig
from minibert.data import PairExample, default_data_dir, read_sts_tsv
from minibert.hub import resolve_model
from minibert.model import BertModel
from minibert.multitask import MultiTaskModel
from minibert.sentence import SentenceEncoder
from minibert.tasks import make_task
from minibert.tokenizer import Tokenizer
from minibert.train.optim import make_optimizer

from timing import in_turn, matmul_peak, timed

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the reference loads the local folder, never the hub
BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def autocast(device: str, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)


def minibert_stepper(encoder: SentenceEncoder, kind: str, device: str, precision: str):
    """kind: the "reference", "fast" or "compiled" path (minibert.paths)."""
    encoder = encoder.to(device).to_path(kind)
    model = MultiTaskModel(encoder, [make_task({"name": "sts", "type": "sts"})]).to(device).train()
    optimizer = make_optimizer(model, 2e-5)

    def step(pairs: list) -> None:
        batch = model.collate("sts", pairs)
        with autocast(device, precision):
            loss = model("sts", batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def sentence_transformers_stepper(path: str, device: str, precision: str):
    from sentence_transformers import SentenceTransformer, losses

    model = SentenceTransformer(path, device=device).train()
    loss_fn = losses.CosineSimilarityLoss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": 0.01},
                                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                                  lr=2e-5, fused=True)  # the Hugging Face trainer's default optimizer

    def step(pairs: list) -> None:
        features = [model.tokenize([p.a for p in pairs]), model.tokenize([p.b for p in pairs])]
        features = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in f.items()} for f in features]
        with autocast(device, precision):
            loss = loss_fn(features, torch.tensor([p.label for p in pairs], device=device) / 5.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def training_flops(config: BertConfig, tokens: int, sum_sq_lengths: int) -> float:
    """Forward + backward (3x forward) of the encoder on the real tokens: the linear layers, and the two
    attention products, whose cost per sentence grows with its length squared."""
    C, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    linear = 2 * (4 * C * C + 2 * C * inner) * tokens
    attention = 2 * 2 * C * sum_sq_lengths
    return 3 * layers * (linear + attention)


def stsb_batches(args) -> list[list]:
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "train.tsv")
    random.Random(0).shuffle(pairs)  # batches mix the genres, as in training (the file is sorted by genre)
    n = args.batch_size
    return [pairs[i:i + n] for i in range(0, (args.steps + 3) * n, n)]


def random_batches(args, tokenizer: Tokenizer, length: int) -> list[list]:
    """Sentences of random whole-word tokens, each exactly `length` tokens with [CLS] and [SEP]."""
    words = [w for w in tokenizer.backend.get_vocab() if w.isalpha() and w.islower()]
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(length - 2))
    n = args.batch_size
    return [[PairExample(sentence(), sentence(), rng.uniform(0, 5)) for _ in range(n)] for _ in range(args.steps + 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--shape", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round (after 3 untimed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="time the compiled path too (always on CUDA)")
    args = parser.parse_args()
    kinds = ["reference", "fast"] + (["compiled"] if args.compile or args.device.startswith("cuda") else [])

    path = str(resolve_model(args.model))
    tokenizer = Tokenizer.from_pretrained(path)
    if args.shape == "bert-base":  # random weights: the speed of the shape, not of a checkpoint
        config = BertConfig(vocab_size=tokenizer.vocab_size, **BERT_BASE)
        tokenizer.max_length = 128
        batches = random_batches(args, tokenizer, 128)

        def encoder() -> SentenceEncoder:
            torch.manual_seed(0)
            return SentenceEncoder(BertModel(config, add_pooler=False), tokenizer)
        steppers = {}
    else:
        config = BertConfig.from_json(Path(path) / "config.json")
        batches = stsb_batches(args)
        steppers = {"sentence-transformers": lambda: sentence_transformers_stepper(path, args.device, args.precision)}

        def encoder() -> SentenceEncoder:
            return SentenceEncoder.from_pretrained(path, path="reference")
    for kind in kinds:
        name = "minibert" if kind == "reference" else f"minibert {kind}"
        steppers[name] = lambda kind=kind: minibert_stepper(encoder(), kind, args.device, args.precision)
    lengths = [len(e.ids) for batch in batches[3:] for e in tokenizer.encode([s for p in batch for s in (p.a, p.b)])]
    flops_per_round = training_flops(config, sum(lengths), sum(n * n for n in lengths))
    cuda = args.device.startswith("cuda")

    built = {name: make() for name, make in steppers.items()}
    times: dict[str, list[float]] = {name: [] for name in built}
    peak: dict[str, float] = {}
    for turn in range(args.rounds):
        for name, step in in_turn(built.items(), turn):
            torch.manual_seed(0)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            seconds = []
            for i, batch in enumerate(batches):
                s, _ = timed(lambda batch=batch, step=step: step(batch), args.device)
                if i >= 3:  # the first steps allocate and pick kernels
                    seconds.append(s)
            times[name].append(statistics.median(seconds) * len(seconds))
            peak[name] = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")

    pairs = sum(len(b) for b in batches[3:])
    print(f"{args.shape} on {args.device}, {args.precision}, {torch.get_num_threads()} threads, batch "
          f"{args.batch_size} pairs, {args.steps} timed steps x {args.rounds} rounds, dropout on")
    peak_flops = matmul_peak(args.device, torch.bfloat16 if args.precision == "bf16" else torch.float32) if cuda else 0
    print(f"{'':24}{'pairs/s':>10}{'tokens/s':>11}{'peak MiB':>10}"
          + (f"{'TFLOP/s':>9}{'MFU':>7}" if cuda else ""))
    best = {name: min(t) for name, t in times.items()}
    for name, seconds in best.items():
        line = f"{name:24}{pairs / seconds:10.1f}{sum(lengths) / seconds:11.0f}"
        line += f"{peak[name]:10.0f}" if cuda else f"{'-':>10}"  # CPU: no per-configuration peak to read
        if cuda:
            achieved = flops_per_round / seconds
            line += f"{achieved / 1e12:9.1f}{achieved / peak_flops:7.1%}"
        print(line)
    if cuda:
        print(f"matmul peak measured here: {peak_flops / 1e12:.1f} TFLOP/s ({args.precision})")
    for base in ("sentence-transformers", "minibert"):  # speed-ups: each faster path against the slower ones
        for name in best:
            if base in best and name.startswith("minibert ") and name != base:
                print(f"{name} vs {base}: {best[base] / best[name]:.2f}x")


if __name__ == "__main__":
    main()

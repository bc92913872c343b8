"""Training throughput: bf16 autocast + fused SDPA against fp32 + the hand-written attention.

Same model, same batches (STS-B train pairs, or synthetic ones with --synthetic), alternating
configurations in one process. Prints samples/s, tokens/s and (on CUDA) peak memory for each, and
on CUDA which SDPA kernel ran (it asks for flash / memory-efficient only, so the math fallback
would fail loudly).

    python scripts/bench_train.py --device cuda --batch-size 64 --steps 30
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from pathlib import Path

import torch
from timing import timed

from minibert.data import default_data_dir, read_sts_tsv
from minibert.multitask import MultiTaskModel
from minibert.train.optim import make_optimizer


def run(model: MultiTaskModel, batches: list[list], precision: str, device: str) -> dict:
    optimizer = make_optimizer(model, 1e-5)  # the training script's
    model.train()
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if precision == "bf16" \
        else contextlib.nullcontext()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def step(pairs: list) -> int:  # tokenize, forward, backward, AdamW: one training step
        batch = model.collate("sts", pairs)
        with autocast:
            out = model("sts", batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(batch["attention_mask"].sum())

    times, tokens = [], 0
    for i, pairs in enumerate(batches):
        seconds, n_tokens = timed(lambda pairs=pairs: step(pairs), device)
        if i >= 3:  # warm-up steps are not timed
            times.append(seconds)
            tokens += n_tokens
    seconds = statistics.median(times) * len(times)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
    n = sum(len(b) for b in batches[3:])
    return {"samples_per_s": n / seconds, "tokens_per_s": tokens / seconds, "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    pairs = read_sts_tsv(Path(args.data) / "stsb" / "train.tsv")
    need = (args.steps + 3) * args.batch_size
    pairs = (pairs * (need // len(pairs) + 1))[:need]
    batches = [pairs[i:i + args.batch_size] for i in range(0, need, args.batch_size)]
    configs = {"fp32 + eager attention": ("fp32", "eager"), "bf16 autocast + SDPA": ("bf16", "sdpa")}
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, (precision, attn) in configs.items():
            torch.manual_seed(0)
            model = MultiTaskModel.from_encoder(args.model, [{"name": "sts", "type": "sts"}], device=args.device,
                                                attn_implementation=attn)
            kernel = contextlib.nullcontext()
            if args.device.startswith("cuda") and attn == "sdpa":
                from torch.nn.attention import SDPBackend, sdpa_kernel

                kernel = sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])
            with kernel:
                results[name].append(run(model, batches, precision, args.device))
            del model
    print(f"device {args.device}, batch {args.batch_size} pairs, {args.steps} timed steps x {args.rounds} rounds")
    print(f"{'configuration':26}{'samples/s':>12}{'tokens/s':>12}{'peak MiB':>10}")
    best = {}
    for name, runs in results.items():
        best[name] = max(runs, key=lambda r: r["samples_per_s"])
        r = best[name]
        print(f"{name:26}{r['samples_per_s']:12.1f}{r['tokens_per_s']:12.0f}{r['peak_mib']:10.0f}")
    a, b = best["bf16 autocast + SDPA"], best["fp32 + eager attention"]
    print(f"speed-up {a['samples_per_s'] / b['samples_per_s']:.2f}x"
          + (f", memory {a['peak_mib'] / b['peak_mib']:.2f}x" if args.device.startswith("cuda") else ""))
    if args.device.startswith("cuda"):
        print("SDPA ran with the math fallback disabled: flash or memory-efficient attention")


if __name__ == "__main__":
    main()

"""Training-step speed: minibert against sentence-transformers, same model folder, same batches.

One step = tokenize both sides of a batch of STS-B pairs, embed, CosineSimilarityLoss (MSE between
the cosine and score/5), backward, AdamW step, as each library's trainer does it (minibert: the
optimizer of scripts/train.py; sentence-transformers: the Hugging Face trainer's fused AdamW with
decay / no-decay groups). fp32, dropout on, same threads; the two alternate in rounds in one process.

    python scripts/bench_train_reference.py [--batch-size 16] [--steps 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
from pathlib import Path

import torch
from timing import timed

from minibert.data import default_data_dir, read_sts_tsv
from minibert.hub import resolve_model
from minibert.multitask import MultiTaskModel
from minibert.train.optim import make_optimizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the reference loads the local folder, never the hub


def minibert_stepper(path: str):
    model = MultiTaskModel.from_encoder(path, [{"name": "sts", "type": "sts"}]).train()
    optimizer = make_optimizer(model, 2e-5)

    def step(pairs: list) -> float:
        loss = model("sts", model.collate("sts", pairs)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()
    return step


def sentence_transformers_stepper(path: str):
    from sentence_transformers import SentenceTransformer, losses

    model = SentenceTransformer(path, device="cpu").train()
    loss_fn = losses.CosineSimilarityLoss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": 0.01},
                                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                                  lr=2e-5, fused=True)  # the Hugging Face trainer's default optimizer

    def step(pairs: list) -> float:
        features = [model.tokenize([p.a for p in pairs]), model.tokenize([p.b for p in pairs])]
        loss = loss_fn(features, torch.tensor([p.label for p in pairs], dtype=torch.float32) / 5.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round (after 3 untimed)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    path = str(resolve_model(args.model))
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "train.tsv")
    random.Random(0).shuffle(pairs)  # batches mix the genres, as in training (the file is sorted by genre)
    n = args.batch_size
    batches = [pairs[i:i + n] for i in range(0, (args.steps + 3) * n, n)]
    steppers = {"minibert": minibert_stepper(path), "sentence-transformers": sentence_transformers_stepper(path)}
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(args.rounds):
        for name, step in steppers.items():
            torch.manual_seed(0)
            for i, batch in enumerate(batches):
                seconds, _ = timed(lambda batch=batch, step=step: step(batch))
                if i >= 3:
                    times[name].append(seconds)
    print(f"{torch.get_num_threads()} threads, batch {n} pairs, {args.steps} timed steps x {args.rounds} rounds, "
          f"fp32, dropout on")
    print(f"{'':24}{'median s/step':>14}{'pairs/s':>10}")
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, m in median.items():
        print(f"{name:24}{m:14.4f}{n / m:10.1f}")
    ratio = median["sentence-transformers"] / median["minibert"]
    print(f"ratio (sentence-transformers time / minibert time): {ratio:.2f}x")


if __name__ == "__main__":
    main()

"""Is a gap to alone real? The multi-task model and the task trained alone, example by example on test.

A difference of accuracies between two models on the same test set is a mean over examples of
d_i = right_multi(i) - right_alone(i), each -1, 0 or +1. Most examples both get right (or both wrong), so
the spread of d is far smaller than two independent accuracies' and a paired interval is much tighter:
mean(d) ± 1.96 sd(d) / sqrt(n). This scores each pair of runs' best/ (chosen on dev) on the test set of
one classification task, prints the examples only one of them gets right, the paired difference with its
95% interval, and the same pooled over the pairs given. The interval is the test set's sampling error only:
how much a run's gap moves with the training seed is what the rows beside each other show.

    python experiments/multitask_methods/paired.py --task topic \\
        --pair runs/multitask-branches-seed2 runs/multitask-branches-seed2-only-topic \\
        --pair runs/multitask-branches-seed3 runs/multitask-branches-seed3-only-topic
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from minibert.model import eval_mode
from minibert.multitask import MultiTaskModel
from minibert.train import load_config
from minibert.train.batches import read_tasks
from minibert.train.evaluate import example_length, without_labels


@torch.inference_mode()
def right_or_wrong(folder: Path, task: str, examples: list, batch_size: int = 64) -> list[int]:
    """1 where the model in folder/best predicts the example's label, else 0, in the examples' order."""
    model = MultiTaskModel.load(folder / "best")
    spec = model.task(task)
    order = sorted(range(len(examples)), key=lambda i: example_length(examples[i]))  # batches of like lengths
    predicted = {}
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            chunk = [without_labels(examples[i]) for i in rows]
            batch = model.collate(task, chunk)
            labels = [row["label"] for row in spec.predict(model(task, batch).logits, batch, chunk)]
            predicted.update(zip(rows, labels, strict=True))
    return [int(predicted[i] == e.label) for i, e in enumerate(examples)]


def paired(d: list[int]) -> tuple[float, float]:
    """The mean of the paired differences and the half-width of its 95% interval (normal approximation)."""
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return mean, 1.96 * sd / math.sqrt(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="scripts/configs/multitask.toml")
    parser.add_argument("--task", required=True, help="a classification task of the configuration")
    parser.add_argument("--pair", nargs=2, action="append", required=True, metavar=("MULTI", "ALONE"),
                        help="a multi-task run's folder and the alone run's of the same seed")
    args = parser.parse_args()
    _, _, _, test_sets = read_tasks(load_config(args.config))
    if args.task not in test_sets:
        raise SystemExit(f"--task {args.task!r}: the configuration's tasks are {sorted(test_sets)}")
    examples = test_sets[args.task]
    print(f"{args.task}, {len(examples)} test examples; points = 100 x accuracy")
    print("| multi-task run | accuracy, multi / alone | only multi right | only alone right | gap, 95% interval |")
    print("|---|---|---|---|---|")
    pooled = []
    for multi, alone in args.pair:
        a, b = (right_or_wrong(Path(f), args.task, examples) for f in (multi, alone))
        d = [x - y for x, y in zip(a, b, strict=True)]
        mean, half = paired(d)
        pooled += d
        print(f"| {multi} | {sum(a) / len(a):.4f} / {sum(b) / len(b):.4f} | {d.count(1)} | {d.count(-1)} | "
              f"{100 * mean:+.2f} ± {100 * half:.2f} |")
    if len(args.pair) > 1:
        mean, half = paired(pooled)
        print(f"| pooled, {len(args.pair)} seeds | | {pooled.count(1)} | {pooled.count(-1)} | "
              f"{100 * mean:+.2f} ± {100 * half:.2f} |")


if __name__ == "__main__":
    main()

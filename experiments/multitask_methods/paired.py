"""Is a gap to alone real? The multi-task model and the task trained alone, example by example on test.

A difference of accuracies between two models on the same test set is a mean over examples of
d_i = right_multi(i) - right_alone(i), each -1, 0 or +1. Most examples both get right (or both wrong), so
the spread of d is far smaller than two independent accuracies' and a paired interval is much tighter:
mean(d) ± 1.96 sd(d) / sqrt(n). This scores each pair of runs' best/ (chosen on dev) on the test set of
one task with one label per example (classification, NLI), prints the examples only one of them gets right,
the paired difference with its 95% interval, and the mean gap over the pairs given. The intervals are the
test set's sampling error only: how much a gap moves with the training seed is what the rows show. The
pairs score the same test examples, so the mean's interval comes from each example's mean difference over
the pairs (an example that favours one model in every seed counts once, not as independent evidence).

    python experiments/multitask_methods/paired.py --task topic \\
        --pair runs/multitask-branches-seed2 runs/multitask-branches-seed2-only-topic \\
        --pair runs/multitask-branches-seed3 runs/multitask-branches-seed3-only-topic
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from minibert.multitask import MultiTaskModel
from minibert.tasks.base import LabelTask
from minibert.train import load_config
from minibert.train.batches import read_tasks
from minibert.train.evaluate import predict_examples


def right_or_wrong(folder: Path, task: str, examples: list) -> list[int]:
    """1 where the model in folder/best predicts the example's label, else 0, in the examples' order."""
    model = MultiTaskModel.load(folder / "best")
    spec = model.task(task)
    if not isinstance(spec, LabelTask):
        raise SystemExit(f"--task {task!r}: {type(spec).__name__} has no one label per example to be right about")
    predicted = [spec.labels.index(p["label"]) for p in predict_examples(model, task, examples)]
    # compared as ids, as the task's metrics compare them (a file's label 3 is the name "3")
    gold = spec.label_ids([e.label for e in examples]).tolist()
    return [int(p == g) for p, g in zip(predicted, gold, strict=True)]


def paired(d: list[float]) -> tuple[float, float]:
    """The mean of the paired differences and the half-width of its 95% interval (normal approximation)."""
    n = len(d)
    if n < 2:
        raise SystemExit("a paired interval needs at least two test examples")
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
    differences = []  # per pair, per example: +1 only multi right, -1 only alone right, else 0
    for multi, alone in args.pair:
        a, b = (right_or_wrong(Path(f), args.task, examples) for f in (multi, alone))
        d = [x - y for x, y in zip(a, b, strict=True)]
        differences.append(d)
        mean, half = paired(d)
        print(f"| {multi} | {sum(a) / len(a):.4f} / {sum(b) / len(b):.4f} | {d.count(1)} | {d.count(-1)} | "
              f"{100 * mean:+.2f} ± {100 * half:.2f} |")
    if len(differences) > 1:
        mean, half = paired([sum(column) / len(column) for column in zip(*differences, strict=True)])
        wins = [sum(d.count(s) for d in differences) for s in (1, -1)]
        print(f"| mean of the {len(differences)} | | {wins[0]} | {wins[1]} | {100 * mean:+.2f} ± {100 * half:.2f} |")


if __name__ == "__main__":
    main()

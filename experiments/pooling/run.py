"""Mean, CLS or max pooling for sentence embeddings: STS-B and SST-2, each fine-tuned alone.

Each task of scripts/configs/multitask.toml named by --tasks, alone, --steps steps at batch 32 with
the pooling replaced (`pooling = [...]` in a training config), no test file. For STS-B, also the
pretrained model's dev Spearman with each pooling before any fine-tuning. Prints a markdown table of
the best dev score (main metric) and writes it to OUT/pooling.md.

    python experiments/pooling/run.py [--tasks sts sentiment] [--steps 343] [--seeds 1]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import statistics
from pathlib import Path

from minibert.multitask import MultiTaskModel
from minibert.tasks import task_type
from minibert.train import load_config, train
from minibert.train.batches import load_task_data
from minibert.train.evaluate import evaluate_task

POOLINGS = ("mean", "cls", "max")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="scripts/configs/multitask.toml", help="where the tasks come from")
    parser.add_argument("--tasks", nargs="+", default=["sts", "sentiment"])
    parser.add_argument("--steps", type=int, default=343)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--out", default="runs/pooling")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = load_config(args.config)
    out = Path(args.out)
    rows = []
    for index, task in enumerate(base.tasks):
        if task.name not in args.tasks:
            continue
        metric = task_type(task.type).main_metric
        cells = []
        before = []
        for pooling in POOLINGS:
            if task.type == "sts":  # the pretrained encoder as it is, only the pooling changed
                model = MultiTaskModel.from_encoder(base.model, [{"name": task.name, "type": task.type}],
                                                    pooling=[pooling])
                dev = load_task_data(base, dataclasses.replace(task, max_dev_examples=1000), index)[1]
                before.append(evaluate_task(model, task.name, dev)[metric])
            values = []
            for seed in args.seeds:
                cfg = copy.deepcopy(base)
                cfg.tasks = [dataclasses.replace(task, loss_weight=1.0, test=None, max_dev_examples=1000)]
                cfg.steps, cfg.seed, cfg.encoder.pooling = args.steps, seed, [pooling]
                cfg.eval.every, cfg.output.checkpoint_every = args.steps // 3, args.steps
                cfg.runtime.precision, cfg.runtime.path, cfg.output.plot = "fp32", "fast", False
                cfg.output_dir = str(out / f"{task.name}-{pooling}-seed{seed}")
                values.append(train(cfg)["best"]["metrics"][task.name][metric])
            spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.4f}{spread}")
        rows.append(f"| {task.name} ({metric}), fine-tuned {args.steps} steps | " + " | ".join(cells) + " |")
        if before:
            rows.append(f"| {task.name} ({metric}), pretrained, no fine-tuning | "
                        + " | ".join(f"{b:.4f}" for b in before) + " |")
    table = "\n".join([f"| task (dev) | {' | '.join(POOLINGS)} |", "|---" * (len(POOLINGS) + 1) + "|", *rows])
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pooling.md").write_text(table + "\n")


if __name__ == "__main__":
    main()

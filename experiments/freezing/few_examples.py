"""Freeze what, with few examples? Each of the five tasks alone, from a few hundred training examples:
full fine-tuning, the heads only (encoder frozen), and the bottom layers frozen.

Every task of scripts/configs/multitask.toml in turn, alone, with --examples training examples (drawn
with split_seed), --steps steps at batch 32, the dev file capped at 1,000 examples, no test file. The
same seeds everywhere; --seeds repeats each configuration. Prints a markdown table of the best dev
score (main metric) and the wall time, and writes it to OUT/few_examples.md.

    python experiments/freezing/few_examples.py [--examples 300] [--steps 150] [--seeds 1]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import statistics
import time
from pathlib import Path

from minibert.tasks import task_type
from minibert.train import load_config, train

FREEZING = {  # configuration name -> TrainConfig.encoder.freeze
    "full fine-tuning": [],
    "bottom 3 layers frozen": ["embeddings", "layers:3"],
    "heads only": ["encoder"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="scripts/configs/multitask.toml", help="where the tasks come from")
    parser.add_argument("--tasks", nargs="+", help="only these tasks (default: all five)")
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--out", default="runs/freezing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = load_config(args.config)
    base.tasks = [t for t in base.tasks if args.tasks is None or t.name in args.tasks]
    out = Path(args.out)
    scores: dict[tuple[str, str], list[float]] = {}
    seconds: dict[tuple[str, str], float] = {}
    for task in base.tasks:
        metric = task_type(task.type).main_metric
        for name, freeze in FREEZING.items():
            for seed in args.seeds:
                cfg = copy.deepcopy(base)
                cfg.tasks = [dataclasses.replace(task, loss_weight=1.0, test=None, max_train_examples=args.examples,
                                                 max_dev_examples=1000)]
                cfg.steps, cfg.seed, cfg.encoder.freeze = args.steps, seed, freeze
                cfg.eval.every, cfg.output.checkpoint_every = args.steps // 3, args.steps
                cfg.runtime.precision, cfg.runtime.path, cfg.output.plot = "fp32", "fast", False
                cfg.output_dir = str(out / f"{task.name}-{name.replace(' ', '-')}-seed{seed}")
                start = time.perf_counter()
                result = train(cfg)
                seconds[(task.name, name)] = seconds.get((task.name, name), 0.0) + time.perf_counter() - start
                scores.setdefault((task.name, name), []).append(result["best"]["metrics"][task.name][metric])

    lines = [f"| task (dev, {args.examples} training examples, {args.steps} steps) | "
             + " | ".join(FREEZING) + " |", "|---" * (len(FREEZING) + 1) + "|"]
    for task in base.tasks:
        cells = []
        for name in FREEZING:
            values = scores[(task.name, name)]
            spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.4f}{spread}")
        lines.append(f"| {task.name} ({task_type(task.type).main_metric}) | " + " | ".join(cells) + " |")
    total = {name: sum(s for (_, n), s in seconds.items() if n == name) for name in FREEZING}
    lines.append("| wall time, all tasks (s) | " + " | ".join(f"{total[n]:.0f}" for n in FREEZING) + " |")
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "few_examples.md").write_text(table + "\n")


if __name__ == "__main__":
    main()

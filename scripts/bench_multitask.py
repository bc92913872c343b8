"""Multi-task vs single-task, same budget: each task's test metric from one multi-task run, next to the
same model fine-tuned on that task alone for exactly as many steps as the multi-task run gave it
(same batch size, learning rates, precision and everything else; a loss weight only balances tasks
against each other, so alone it is 1). Prints a markdown table.

    python scripts/bench_multitask.py [--config scripts/configs/multitask.toml] [--set steps=600 ...]
    python scripts/bench_multitask.py --only single --single-tasks sentiment topic   # redo two of them

The alone runs need the multi-task configuration only (which gives each task its steps), not its run.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from minibert.tasks import task_type
from minibert.train import load_config, train
from minibert.train.batches import single_task_config, steps_per_task


def read_scores(run_dir: Path, split: str) -> dict:
    """test: the test scores of best/; dev: the dev scores that chose best/."""
    path = run_dir / "result.json"
    if not path.exists():
        raise SystemExit(f"{path} not found: that run has not been trained")
    result = json.loads(path.read_text())
    if split == "dev":
        if not result.get("best"):
            raise SystemExit(f"{path} has no dev scores: its configuration named no dev data")
        return result["best"]["metrics"]
    if "test" not in result:
        raise SystemExit(f"{path} has no test scores: its configuration named no test files")
    return result["test"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="scripts/configs/multitask.toml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--only", choices=["multi", "single"],
                        help="run one half (the other's results are shown where they exist)")
    parser.add_argument("--single-tasks", nargs="+", metavar="NAME",
                        help="train only these tasks' single-task runs (the others' results must exist)")
    parser.add_argument("--split", choices=["test", "dev"], default="test",
                        help="which scores to tabulate: dev to choose between configurations, test once at the end")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    multi = load_config(args.config, args.set)
    names = [t.name for t in multi.tasks]
    unknown = sorted(set(args.single_tasks or []) - set(names))
    if unknown:
        parser.error(f"--single-tasks: no task named {', '.join(unknown)} in {args.config} (tasks: {', '.join(names)})")
    budget = steps_per_task(multi)
    out = Path(multi.output_dir)
    seconds = {}
    if args.only != "single":
        start = time.perf_counter()
        train(multi)
        seconds["multi-task"] = time.perf_counter() - start
    results = {}
    if args.only != "single" or (out / "result.json").exists():
        results["multi-task"] = read_scores(out, args.split)
    for task in multi.tasks:
        single = single_task_config(multi, task.name, budget[task.name])
        single.output_dir = str(out.with_name(out.name + f"-only-{task.name}"))
        single.eval.every = max(1, single.steps // 3)
        single.output.checkpoint_every = single.steps
        single.eval.best_metric = "mean"
        if args.only != "multi" and (args.single_tasks is None or task.name in args.single_tasks):
            start = time.perf_counter()
            train(single)
            seconds[task.name] = time.perf_counter() - start
        if (Path(single.output_dir) / "result.json").exists():  # tasks never run alone show as "(not run)"
            results[task.name] = read_scores(Path(single.output_dir), args.split)

    lines = [f"| task | metric ({args.split}) | steps alone | multi-task ({multi.steps} steps, all tasks) | alone |",
             "|---|---|---|---|---|"]
    for task in multi.tasks:
        metric = task_type(task.type).main_metric
        multi_score, alone = (f"{results[run][task.name][metric]:.4f}" if run in results else "(not run)"
                              for run in ("multi-task", task.name))
        lines.append(f"| {task.name} | {metric} | {budget[task.name]} | {multi_score} | {alone} |")
    table = "\n".join(lines)
    print(table)
    print("wall-clock seconds:", json.dumps({k: round(v) for k, v in seconds.items()}))
    report = out.with_name(out.name + f"-bench-{args.split}.md")
    report.write_text(table + "\n\nseconds: " + json.dumps(seconds) + "\n")


if __name__ == "__main__":
    main()

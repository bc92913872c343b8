"""STS-B alone: a grid of one option's values x seeds, chosen on dev, and only then scored on test.

Each run is the config (default scripts/configs/stsb.toml) with one value and one seed, its test file
withheld, started as its own `scripts/train.py` process, --parallel of them at a time (a small model
leaves one GPU mostly idle, so eight runs side by side fill it). The rule, fixed before any run: the
value with the highest mean best-dev Spearman over the seeds; within it, the seed with the best dev.
Only then is the test file read, for every seed of that value: the dev leader's score is the one to
report, the others show the spread. Prints a markdown table and writes it to OUT/sweep.md.

    python experiments/stsb/sweep.py --grid optim.sam_rho=0,0.02,0.05,0.1,0.2 --seeds 1 2 3 --parallel 8 \
        --set runtime.device=cuda

A run that has finished (`final/` exists) is reused if it used the same recipe, so a sweep can be
extended with more seeds or values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from minibert.data import read_sts_tsv
from minibert.multitask import MultiTaskModel
from minibert.train import load_config
from minibert.train.evaluate import evaluate_task

from runs import check_finished_run, single_sts_task

ROOT = Path(__file__).resolve().parents[2]


def dev_scores(folder: Path, task: str) -> list[float]:
    """The run's dev Spearman at each evaluation, from its metrics.jsonl."""
    lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r["dev"][task]["spearman"] for r in map(json.loads, lines) if "dev" in r]


def run_all(runs: dict[tuple[str, int], tuple[list[str], Path]], parallel: int, config: str) -> None:
    """Start the training processes (their --set lists and log files), `parallel` at a time; stop at the
    first that fails."""
    queue, running = list(runs.items()), []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    while queue or running:
        for (key, process, log) in list(running):
            if process.poll() is not None:
                running.remove((key, process, log))
                if process.returncode != 0:
                    for _, other, _ in running:
                        other.kill()
                    raise RuntimeError(f"run {key} failed (exit {process.returncode}); see {log}")
        while queue and len(running) < parallel:
            key, (sets, log) = queue.pop(0)
            cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", config]
            cmd += [arg for s in sets for arg in ("--set", s)]
            with open(log, "w") as f:  # the child keeps its own copy of the file descriptor
                running.append((key, subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT), log))
            print(f"started {key[0]} seed {key[1]} ({len(queue)} waiting)", flush=True)
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="scripts/configs/stsb.toml")
    parser.add_argument("--grid", required=True, metavar="KEY=V1,V2,...", help="the option to sweep and its values")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", default="runs/stsb-sweep")
    args = parser.parse_args()
    option, _, values = args.grid.partition("=")
    values = [v for v in values.split(",") if v]
    if not option or not values:
        raise ValueError(f"--grid: expected KEY=V1,V2,..., got {args.grid!r}")
    base = load_config(args.config, args.set)
    task, out = single_sts_task(base, args.config), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    folders, todo = {}, {}
    for seed in args.seeds:  # seed-major: a sweep cut short still has every value on the first seeds
        for value in values:
            key = (f"{option}={value}", seed)
            folder = out / f"{option}{value}" / f"seed{seed}"
            sets = [*args.set, f"{option}={value}", f"seed={seed}", f"output_dir={folder}",
                    f"tasks.{task.name}.test=null"]  # the test file stays unseen
            folders[key] = folder
            run = load_config(args.config, sets)  # a bad value fails here, before any run starts
            if (folder / "final").is_dir():
                check_finished_run(folder, run)
            else:
                todo[key] = (sets, out / f"{option}{value}-seed{seed}.log")
    run_all(todo, args.parallel, args.config)

    devs = {key: dev_scores(folder, task.name) for key, folder in folders.items()}
    labels = [f"{option}={v}" for v in values]
    mean_dev = {label: statistics.mean(max(devs[(label, s)]) for s in args.seeds) for label in labels}
    chosen = max(labels, key=mean_dev.get)
    leader = max(args.seeds, key=lambda s: max(devs[(chosen, s)]))

    lines = [f"| {option} | mean best dev | " + " | ".join(f"seed {s}" for s in args.seeds) + " |",
             "|---" * (len(args.seeds) + 2) + "|"]
    lines += [f"| {label.partition('=')[2]} | {mean_dev[label]:.4f} | "
              + " | ".join(f"{max(devs[(label, s)]):.4f}" for s in args.seeds) + " |" for label in labels]
    lines += ["", f"Chosen on dev: {chosen}; its dev leader: seed {leader}. Dev at each evaluation:", ""]
    lines += [f"- {label} seed {s}: " + "/".join(f"{d:.4f}" for d in devs[(label, s)])
              for s in args.seeds for label in labels]

    # Only now is the test file read, for the value chosen on dev.
    test = read_sts_tsv(base.data_path(task.test))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scores = {s: evaluate_task(MultiTaskModel.load(folders[(chosen, s)] / "best", device=device), task.name, test)
              for s in args.seeds}
    lines += ["", "| run | test Spearman | test Pearson |", "|---|---|---|"]
    lines += [f"| {chosen} seed {s}{' (dev leader)' if s == leader else ''} | {m['spearman']:.4f} | "
              f"{m['pearson']:.4f} |" for s, m in scores.items()]
    lines += [f"| mean of {len(scores)} seeds | {statistics.mean(m['spearman'] for m in scores.values()):.4f} | "
              f"{statistics.mean(m['pearson'] for m in scores.values()):.4f} |"]
    table = "\n".join(lines)
    print(table)
    (out / "sweep.md").write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Named variants of one training configuration, each run for several seeds, scored on dev.

The shared driver of the multi-task studies (layer_decay/, imbalance/, transfer/, freezing/, ...).
Each variant is a name and ``key=value`` overrides, exactly as `scripts/train.py --set` takes them,
plus ``only=a,b,c`` to keep only those tasks. ``{out}`` and ``{seed}`` in a value stand for the output
folder and the seed, so a variant can start from an earlier variant's model:

    python experiments/variants.py --out runs/layer-decay --seeds 1 2 --set steps=1000 \\
        --variant "0.9" optim.layer_decay=0.9 --variant "0.65" optim.layer_decay=0.65

A study run is the configuration with its test files withheld (no test split is read), every dev set
capped at --max-dev examples (the same examples for every variant: split_seed is fixed), one
evaluation at the end, and no plot. Each run's folder is OUT/<variant>-seed<seed>; a folder that has
finished with the same recipe is reused, so a study can be extended or resumed, and several studies
in one OUT share their common runs. A variant that starts from another's output ({out} in a value)
is always run again, since what it starts from may have changed.

``--alone NAME`` adds the row "alone": each task trained on its own for as many steps as it trains in
variant NAME's run of the same seed, with NAME's settings less what combines tasks
(``minibert.train.batches.single_task_config``). That is the single-task baseline a multi-task recipe
is measured against, at the same steps.

Prints a markdown table (mean ± standard deviation over seeds of each task's main dev metric, the
mean over the tasks the variant has, and minutes per run) and writes it to OUT/STUDY.md, with every
run's scores in OUT/STUDY.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import time
from pathlib import Path

from minibert.tasks import task_type
from minibert.train import load_config, train
from minibert.train.batches import single_task_config, steps_per_task
from minibert.train.config import TrainConfig
from minibert.train.recipe import changed_keys


def study_config(config: str, overrides: list[str], seed: int, folder: Path, max_dev: int) -> TrainConfig:
    """The configuration of one study run (see the module docstring)."""
    only = [o.split("=", 1)[1].split(",") for o in overrides if o.startswith("only=")]
    cfg = load_config(config, [o for o in overrides if not o.startswith("only=")])
    if only:
        unknown = sorted(set(only[-1]) - {t.name for t in cfg.tasks})
        if unknown:
            raise ValueError(f"only={','.join(only[-1])}: no task named {unknown} in {config}")
        cfg.tasks = [t for t in cfg.tasks if t.name in only[-1]]
    for t in cfg.tasks:
        t.test = None
        t.max_dev_examples = min(t.max_dev_examples or max_dev, max_dev)
    cfg.seed, cfg.output_dir = seed, str(folder)
    cfg.eval.every, cfg.output.checkpoint_every, cfg.output.plot = 0, cfg.steps, False
    return cfg


def run(cfg: TrainConfig, reuse: bool = True) -> tuple[dict[str, float], float]:
    """Each task's main dev metric, and the minutes the run took (0 when an earlier run is reused)."""
    folder = Path(cfg.output_dir)
    result_file, saved_config = folder / "result.json", folder / "config.json"
    if reuse and result_file.is_file() and saved_config.is_file():
        if not changed_keys(json.loads(saved_config.read_text()), cfg.to_dict()):
            result, minutes = json.loads(result_file.read_text()), 0.0
        else:
            raise ValueError(f"{folder} holds a finished run of another recipe: remove it or choose another --out")
    else:
        start = time.perf_counter()
        result = train(cfg)
        minutes = (time.perf_counter() - start) / 60
    metrics = (result.get("best") or {}).get("metrics", {})
    undeveloped = [t.name for t in cfg.tasks if t.name not in metrics]
    if undeveloped:
        raise ValueError(f"{folder}: no dev score for {undeveloped}: give each task a dev file or dev_split")
    return {t.name: metrics[t.name][task_type(t.type).main_metric] for t in cfg.tasks}, minutes


def alone_configs(multi: TrainConfig, out: Path) -> list[TrainConfig]:
    """One single-task configuration per task of ``multi`` (a study run), at the steps that task gets in it."""
    configs = []
    for task, steps in steps_per_task(multi).items():
        single = single_task_config(multi, task, steps)
        single.output_dir, single.output.checkpoint_every = str(out / f"alone-{task}-seed{multi.seed}"), steps
        configs.append(single)
    return configs


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.4f}{spread}"


def table(scores: dict[str, list[dict[str, float]]], minutes: dict[str, list[float]],
          mean_of: list[str] | None = None) -> str:
    """``mean_of``: the tasks the mean column averages (default: every task of the variant)."""
    tasks = list(dict.fromkeys(t for runs in scores.values() for run in runs for t in run))
    lines = ["| variant (dev) | " + " | ".join(tasks) + " | mean | min/run |", "|---" * (len(tasks) + 3) + "|"]
    for name, runs in scores.items():
        cells = [cell([r[t] for r in runs if t in r]) for t in tasks]
        counted = [[v for t, v in r.items() if mean_of is None or t in mean_of] for r in runs]
        means = cell([statistics.mean(v) for v in counted if v])
        spent = [m for m in minutes[name] if m]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {means} | "
                     + (f"{statistics.mean(spent):.1f}" if spent else "reused") + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="scripts/configs/multitask.toml")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                        help="a name, then its overrides (repeat for each variant)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="overrides for every variant (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--max-dev", type=int, default=1000, help="examples per dev set")
    parser.add_argument("--out", required=True)
    parser.add_argument("--study", default="table", help="the name of the table's files in OUT")
    parser.add_argument("--mean-of", help="the tasks the mean column averages, comma-separated (default: all)")
    parser.add_argument("--alone", metavar="NAME", help="add each task alone, at its steps in variant NAME's runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    folders = {name: re.sub(r"[^\w.=-]+", "-", name).strip("-") for name, *_ in args.variant}
    if len(set(folders.values())) != len(args.variant):
        parser.error(f"variant names must give distinct folder names, got {folders}")
    if args.alone and args.alone not in folders:
        parser.error(f"--alone {args.alone}: no variant of that name")
    scores: dict[str, list[dict[str, float]]] = {}
    minutes: dict[str, list[float]] = {}
    counts: dict[str, list[dict[str, int]]] = {}
    for name, *overrides in args.variant:
        for seed in args.seeds:
            folder = out / f"{folders[name]}-seed{seed}"
            filled = [o.replace("{out}", str(out)).replace("{seed}", str(seed)) for o in args.set + overrides]
            cfg = study_config(args.config, filled, seed, folder, args.max_dev)
            counts.setdefault(name, []).append(steps_per_task(cfg))
            got, spent = run(cfg, reuse=not any("{out}" in o for o in overrides))
            scores.setdefault(name, []).append(got)
            minutes.setdefault(name, []).append(spent)
            print(f"{name} seed {seed}: " + ", ".join(f"{t} {v:.4f}" for t, v in got.items())
                  + f" (steps per task {counts[name][-1]})", flush=True)
            if name == args.alone:
                start, alone = time.perf_counter(), {}
                for single in alone_configs(cfg, out):
                    alone |= run(single)[0]
                scores.setdefault("alone", []).append(alone)
                minutes.setdefault("alone", []).append((time.perf_counter() - start) / 60)
                print(f"alone seed {seed}: " + ", ".join(f"{t} {v:.4f}" for t, v in alone.items()), flush=True)
    text = table(scores, minutes, args.mean_of.split(",") if args.mean_of else None)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.study}.md").write_text(text + "\n")
    record = {"seeds": args.seeds, "set": args.set,
              "variants": {name: dict(zip(map(str, args.seeds), runs, strict=True)) for name, runs in scores.items()},
              "steps_per_task": {name: dict(zip(map(str, args.seeds), c, strict=True)) for name, c in counts.items()}}
    (out / f"{args.study}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""STS-B alone, every choice made on dev: one run of scripts/configs/stsb.toml per seed (its test file
withheld), a greedy model soup of the runs' best checkpoints (soup.py), then the test scores of the
soup and of the single run with the best dev score. Prints a markdown table.

    python experiments/stsb/seeds_and_soup.py [--seeds 1 2 3 4 5] [--out runs/stsb-seeds] [--set optim.lr=3e-5 ...]

A seed whose run has finished (`final/` exists) is not trained again; one with a checkpoint resumes.
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

from minibert.data import read_sts_tsv
from minibert.multitask import MultiTaskModel
from minibert.train import load_config, train
from minibert.train.evaluate import evaluate_task

from runs import check_finished_run, single_sts_task
from soup import greedy_soup, save_soup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="scripts/configs/stsb.toml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--out", default="runs/stsb-seeds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    base = load_config(args.config, args.set)
    task, out = single_sts_task(base, args.config), Path(args.out)

    folders = []
    for seed in args.seeds:
        run = copy.deepcopy(base)
        run.seed, run.output_dir, run.tasks[0].test = seed, str(out / f"seed{seed}"), None  # test stays unseen
        if (out / f"seed{seed}" / "final").is_dir():  # finished: reuse it, but only if it is this recipe
            check_finished_run(out / f"seed{seed}", run)
        else:
            train(run, resume=(out / f"seed{seed}" / "checkpoint.pt").is_file())
        folders.append(str(out / f"seed{seed}" / "best"))

    models = {folder: MultiTaskModel.load(folder) for folder in folders}
    soup, log = greedy_soup(models, task.name, read_sts_tsv(base.data_path(task.dev)))
    save_soup(soup, log, out / "soup", task.name, str(base.data_path(task.dev)))

    # Only now is the test file read, for the two models chosen on dev.
    test = read_sts_tsv(base.data_path(task.test))
    best_single = models[log[0]["model"]]
    scores = {"best single run (by dev)": evaluate_task(best_single, task.name, test),
              f"greedy soup ({sum(r['kept'] for r in log)} of {len(log)} runs)": evaluate_task(soup, task.name, test)}
    lines = ["| run | dev Spearman | soup dev Spearman with it | kept |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['dev']:.4f} | {r['soup_dev']:.4f} | {'yes' if r['kept'] else 'no'} |" for r in log]
    lines += ["", "| model | test Spearman | test Pearson |", "|---|---|---|"]
    lines += [f"| {name} | {m['spearman']:.4f} | {m['pearson']:.4f} |" for name, m in scores.items()]
    table = "\n".join(lines)
    print(table)
    (out / "bench.md").write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""The test table of a study's runs, read once at the end: each run's best/ (chosen on dev) scored on the
test files of the configuration's tasks, mean ± standard deviation over seeds, beside each task alone.

The study's runs withheld the test files (experiments/variants.py); this reads them for the variants named
here only, caches each run's scores in its folder (test.json), and prints the table with the gap to alone.

    python experiments/multitask_methods/score_on_test.py --out runs/studies-methods --seeds 1 2 3 \\
        --variant baseline "uncertainty weighting"
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from minibert.multitask import MultiTaskModel
from minibert.train import load_config
from minibert.train.batches import read_tasks
from minibert.train.evaluate import evaluate_sets


def scores_on_test(folder: Path, test_sets: dict[str, list]) -> dict[str, float]:
    """Each task's main test metric for the model in folder/best (cached in folder/test.json)."""
    cache = folder / "test.json"
    if not cache.is_file():
        model = MultiTaskModel.load(folder / "best")
        metrics = evaluate_sets(model, {name: test_sets[name] for name in model.tasks}, batch_size=64)
        scores = {name: metrics[name][task.main_metric] for name, task in model.tasks.items()}
        cache.write_text(json.dumps(scores, indent=2) + "\n")
    return json.loads(cache.read_text())


def cell(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="scripts/configs/multitask.toml")
    parser.add_argument("--out", required=True, help="the study's folder (experiments/variants.py --out)")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--variant", nargs="+", required=True, help="the variants to score (their names)")
    args = parser.parse_args()
    config = load_config(args.config)
    _, _, _, test_sets = read_tasks(config)
    names = [t.name for t in config.tasks]
    out = Path(args.out)
    rows = {}
    for variant in args.variant:
        folder = re.sub(r"[^\w.=-]+", "-", variant).strip("-")  # as variants.py names them
        rows[variant] = [scores_on_test(out / f"{folder}-seed{s}", test_sets) for s in args.seeds]
    rows["alone"] = [{n: scores_on_test(out / f"alone-{n}-seed{s}", test_sets)[n] for n in names} for s in args.seeds]
    print(f"test, mean ± sd over seeds {args.seeds}; the gap to alone in points (x 100)\n")
    print("| run | " + " | ".join(names) + " | mean |")
    print("|---" * (len(names) + 2) + "|")
    for variant, runs in rows.items():
        means = [statistics.mean(r[n] for n in names) for r in runs]
        print(f"| {variant} | " + " | ".join(cell([r[n] for r in runs]) for n in names) + f" | {cell(means)} |")
    for variant, runs in rows.items():
        if variant != "alone":
            gaps = [100 * (statistics.mean(r[n] for r in runs) - statistics.mean(a[n] for a in rows["alone"]))
                    for n in names]
            print(f"| gap, {variant} | " + " | ".join(f"{g:+.2f}" for g in gaps) + " | |")


if __name__ == "__main__":
    main()

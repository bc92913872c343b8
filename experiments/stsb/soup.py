"""Model soups (Wortsman et al., 2022): average the weights of runs fine-tuned from one checkpoint.

Runs that start from the same pretrained weights and differ only in seed or hyper-parameters tend to
end in one low-loss basin, so the mean of their weights is itself a good model (often better than
each of them) at the inference cost of one. The greedy recipe adds runs best-first and keeps each
only when the soup's dev score does not drop, so the choice is made on dev, never on test.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from minibert.multitask import MultiTaskModel
from minibert.tasks import task_type
from minibert.train.evaluate import evaluate_task, main_metric


def average_weights(models: list[MultiTaskModel], names: list[str] | None = None) -> MultiTaskModel:
    """A new model whose every floating-point tensor is the mean of the models' tensors."""
    if not models:
        raise ValueError("nothing to average: no models given")
    names = names or [f"model {i}" for i in range(len(models))]
    if len(names) != len(models):
        raise ValueError(f"{len(models)} models but {len(names)} names")
    states = [m.state_dict() for m in models]
    first, first_tasks = states[0], [t.to_dict() for t in models[0].tasks.values()]
    for name, model, state in zip(names[1:], models[1:], states[1:], strict=True):
        if [t.to_dict() for t in model.tasks.values()] != first_tasks:
            raise ValueError(f"{name}: its tasks differ from {names[0]}'s, so the heads cannot be averaged")
        if set(state) != set(first):
            raise ValueError(f"{name}: weights {sorted(set(state) ^ set(first))[:5]} are not in both "
                             f"{names[0]} and {name}")
        for key, tensor in state.items():
            if tensor.shape != first[key].shape:
                raise ValueError(f"{name}: {key} has shape {tuple(tensor.shape)} but {tuple(first[key].shape)} "
                                 f"in {names[0]}")
    mean = {}
    for key, tensor in first.items():
        stack = [state[key] for state in states]
        if tensor.is_floating_point():
            mean[key] = torch.stack([t.float() for t in stack]).mean(0).to(tensor.dtype)
        elif all(torch.equal(t, tensor) for t in stack):
            mean[key] = tensor  # integer buffers cannot be averaged; they must agree
        else:
            raise ValueError(f"{key} is not a float tensor and differs between the models")
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(mean)
    return soup


def dev_score(model: MultiTaskModel, task: str, dev: list, batch_size: int = 64) -> float:
    return main_metric(model, task, evaluate_task(model, task, dev, batch_size))


def greedy_soup(models: dict[str, MultiTaskModel], task: str, dev: list,
                batch_size: int = 64) -> tuple[MultiTaskModel, list[dict]]:
    """Rank the runs (name -> loaded model) by dev score, then add each to the soup if the soup's dev
    score does not drop. Returns the soup and a log of every decision (run, its own dev score, the
    soup's dev score with it, kept or not)."""
    if not models:
        raise ValueError("nothing to average: no models given")
    alone = {name: dev_score(m, task, dev, batch_size) for name, m in models.items()}
    ranked = sorted(alone, key=alone.get, reverse=True)
    chosen, soup, best = [ranked[0]], models[ranked[0]], alone[ranked[0]]
    log = [{"model": ranked[0], "dev": best, "soup_dev": best, "kept": True}]
    for name in ranked[1:]:
        candidate = average_weights([models[c] for c in [*chosen, name]], [*chosen, name])
        score = dev_score(candidate, task, dev, batch_size)
        kept = score >= best
        log.append({"model": name, "dev": alone[name], "soup_dev": score, "kept": kept})
        if kept:
            chosen, soup, best = [*chosen, name], candidate, score
    return soup, log


def save_soup(soup: MultiTaskModel, log: list[dict], folder: str | Path, task: str, dev_file: str) -> None:
    """The soup as a saved multi-task model, plus soup.json: which runs went in, and their dev scores."""
    soup.save(folder)
    record = {"task": task, "dev": str(dev_file), "log": log}
    (Path(folder) / "soup.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    """`python experiments/stsb/soup.py --models runs/a/best runs/b/best --task sts
    --dev ../shared/data/stsb/dev.tsv --out runs/soup`; score the result with scripts/evaluate.py."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--models", nargs="+", required=True, help="folders written by MultiTaskModel.save")
    parser.add_argument("--task", required=True, help="the task whose dev score decides")
    parser.add_argument("--dev", required=True, help="the task's dev file (never the test file)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    models = {path: MultiTaskModel.load(path, device=args.device) for path in args.models}
    dev = task_type(models[args.models[0]].task(args.task).type).read(args.dev)
    soup, log = greedy_soup(models, args.task, dev, args.batch_size)
    for row in log:
        print(f"{'kept   ' if row['kept'] else 'dropped'} {row['model']}: dev {row['dev']:.4f}, "
              f"soup dev {row['soup_dev']:.4f}")
    save_soup(soup, log, args.out, args.task, args.dev)
    print(f"soup of {sum(r['kept'] for r in log)} runs written to {args.out}")


if __name__ == "__main__":
    main()

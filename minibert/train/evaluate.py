"""Scoring a multi-task model on labelled examples, one task at a time."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import torch

from minibert.model import eval_mode
from minibert.multitask import MultiTaskModel


@torch.inference_mode()
def evaluate_task(model: MultiTaskModel, task: str, examples: list, batch_size: int = 64) -> dict[str, float]:
    """The task's metrics on `examples` (its ``main_metric`` among them): STS Spearman and Pearson,
    accuracy and macro-F1, or entity-level precision, recall and F1 (conlleval), by task type."""
    spec = model.task(task)
    if not examples:
        raise ValueError(f"task {task!r}: no examples to evaluate")
    # Longest first, so each batch holds inputs of similar length and little compute goes to padding.
    # Every metric here is a function of (prediction, gold) pairs, so the order does not change it.
    examples = sorted(examples, key=example_length, reverse=True)
    predictions = []
    with eval_mode(model):
        for start in range(0, len(examples), batch_size):
            chunk = [without_labels(e) for e in examples[start:start + batch_size]]
            batch = model.collate(task, chunk)
            predictions += spec.predict(model(task, batch).logits, batch, chunk)
    return spec.metrics(predictions, examples)


def without_labels(example):
    """The example with its gold field(s) cleared: predictions never see the gold, and a gold tag that
    training never saw (an entity type cut by subsampling, say) counts as a miss instead of an error."""
    gold = {f.name: None for f in fields(example) if f.name in ("label", "tags")}
    return replace(example, **gold) if gold else example


def example_length(example) -> int:
    """Characters of text in one example (a cheap stand-in for its token count): its strings and word lists."""
    total = 0
    for f in fields(example):
        value = getattr(example, f.name)
        if f.name in ("label", "tags"):
            continue
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, list):
            total += sum(len(w) + 1 for w in value)
    return total


def main_metric(model: MultiTaskModel, task: str, metrics: dict[str, float]) -> float:
    return metrics[model.task(task).main_metric]


def evaluate_sets(model: MultiTaskModel, sets: dict[str, list], batch_size: int = 64) -> dict:
    """Each task's metrics on its examples (task name -> examples), and "mean": the mean of their main metrics."""
    metrics = {name: evaluate_task(model, name, examples, batch_size) for name, examples in sets.items()}
    mains = [main_metric(model, name, m) for name, m in metrics.items()]
    if mains:
        metrics["mean"] = float(np.mean(mains))
    return metrics


def selection_score(metrics: dict, best_metric: str) -> float:
    """The number that picks the best checkpoint: "mean", or one task's metric as "task/metric"."""
    if best_metric == "mean":
        return metrics["mean"]
    task, _, metric = best_metric.partition("/")
    if task not in metrics or metric not in metrics[task]:
        raise ValueError(f"eval.best_metric {best_metric!r} is not among the dev metrics {sorted(metrics)}")
    return metrics[task][metric]

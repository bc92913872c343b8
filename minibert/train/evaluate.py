"""Scoring a multi-task model on labelled examples, one task at a time."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import torch

from minibert.model import eval_mode
from minibert.multitask import MultiTaskModel


def evaluate_task(model: MultiTaskModel, task: str, examples: list, batch_size: int = 64) -> dict[str, float]:
    """The task's metrics on `examples` (its ``main_metric`` among them): STS Spearman and Pearson,
    accuracy and macro-F1, or entity-level precision, recall and F1 (conlleval), by task type."""
    if not examples:
        raise ValueError(f"task {task!r}: no examples to evaluate")
    return model.task(task).metrics(predict_examples(model, task, examples, batch_size), examples)


@torch.inference_mode()
def predict_examples(model: MultiTaskModel, task: str, examples: list, batch_size: int = 64) -> list[dict]:
    """The task's prediction for each example, in the examples' order, without looking at their gold."""
    spec = model.task(task)
    # Longest first, so each batch holds inputs of similar length and little compute goes to padding; the
    # predictions are put back in the examples' order, so each stays beside its gold.
    order = sorted(range(len(examples)), key=lambda i: example_length(examples[i]), reverse=True)
    predictions: list[dict | None] = [None] * len(examples)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            chunk = [without_labels(examples[i]) for i in rows]
            batch = model.collate(task, chunk)
            for i, prediction in zip(rows, spec.predict(model(task, batch).logits, batch, chunk), strict=True):
                predictions[i] = prediction
    return predictions


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

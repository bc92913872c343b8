"""Scoring a multi-task model on labelled examples, one task at a time."""

from __future__ import annotations

import numpy as np
import torch

from minibert.metrics import accuracy, entity_prf, macro_f1, pearson, spearman
from minibert.model import eval_mode
from minibert.multitask import MultiTaskModel
from minibert.task_spec import SCORE_TASKS
from minibert.train.tasks import to_batch

MAIN_METRIC = {"sts": "spearman", "cross_sts": "spearman", "nli": "accuracy", "classification": "accuracy",
               "token_classification": "f1"}


@torch.inference_mode()
def evaluate_task(model: MultiTaskModel, task: str, examples: list, batch_size: int = 64) -> dict[str, float]:
    """STS: Spearman and Pearson of the cosine scores (cross-encoders: of the predicted scores);
    classification and NLI: accuracy and macro-F1; NER: entity-level precision, recall and F1 (conlleval)."""
    spec = model.spec(task)
    if not examples:
        raise ValueError(f"task {task!r}: no examples to evaluate")
    # Longest first, so each batch holds inputs of similar length and little compute goes to padding.
    # Every metric here is a function of (prediction, gold) pairs, so the order does not change it.
    examples = sorted(examples, key=example_length, reverse=True)
    with eval_mode(model):
        if spec.type == "token_classification":
            pred = model.predict_tags(task, [e.words for e in examples], batch_size=batch_size)
            return entity_prf(pred, [e.tags for e in examples])
        outputs = [model(task, {k: v for k, v in to_batch(spec.type, examples[i:i + batch_size]).items()
                                if k not in ("labels", "scores")}).logits.float().cpu()
                   for i in range(0, len(examples), batch_size)]
        logits = torch.cat(outputs)
        if spec.type == "cross_sts":
            logits = model.heads[task].score(logits)  # the predicted 0..max_score, for Pearson
        if spec.type in SCORE_TASKS:
            gold = np.array([e.label for e in examples], dtype=np.float64)
            return {"spearman": spearman(logits.numpy(), gold), "pearson": pearson(logits.numpy(), gold)}
        gold = model.label_ids(task, [e.label for e in examples]).tolist()
        pred = logits.argmax(-1).tolist()
        return {"accuracy": accuracy(pred, gold), "macro_f1": macro_f1(pred, gold, len(spec.labels))}


def example_length(example) -> int:
    """Characters of text in one example (a cheap stand-in for its token count)."""
    if hasattr(example, "words"):
        return sum(len(w) + 1 for w in example.words)
    if hasattr(example, "text"):
        return len(example.text)
    return len(example.a) + len(example.b)


def main_metric(model: MultiTaskModel, task: str, metrics: dict[str, float]) -> float:
    return metrics[MAIN_METRIC[model.spec(task).type]]

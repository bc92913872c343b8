"""Evaluation metrics in plain numpy (the references in scipy are used only in the tests)."""

from __future__ import annotations

import numpy as np


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (scipy's 'average' method)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # start index of each run of equal values, and the run each sorted element belongs to
    new_run = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], len(x)]
    avg_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = avg_rank[run_id]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need two 1-D arrays of equal length >= 2, got {x.shape} and {y.shape}")
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks."""
    return pearson(rankdata(x), rankdata(y))


def accuracy(pred: list[int], gold: list[int]) -> float:
    if len(pred) != len(gold) or not gold:
        raise ValueError(f"need equal, non-empty prediction and gold lists, got {len(pred)} and {len(gold)}")
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def macro_f1(pred: list[int], gold: list[int], num_labels: int) -> float:
    """Mean of the per-class F1 scores (a class never predicted nor present scores 0 and still counts)."""
    pred_a, gold_a = np.asarray(pred), np.asarray(gold)
    scores = []
    for c in range(num_labels):
        tp = np.sum((pred_a == c) & (gold_a == c))
        fp = np.sum((pred_a == c) & (gold_a != c))
        fn = np.sum((pred_a != c) & (gold_a == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def entity_prf(pred_tags: list[list[str]], gold_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 as conlleval counts them: an entity is right only when
    its type, start and end all match a gold entity."""
    from minibert.ner import bio_to_entities

    correct = n_pred = n_gold = 0
    for i, (p, g) in enumerate(zip(pred_tags, gold_tags, strict=True)):
        if len(p) != len(g):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags but {len(g)} gold tags")
        pred = {(e.type, e.start, e.end) for e in bio_to_entities(p)}
        gold = {(e.type, e.start, e.end) for e in bio_to_entities(g)}
        correct, n_pred, n_gold = correct + len(pred & gold), n_pred + len(pred), n_gold + len(gold)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}

"""Training data per task, and which task each step trains.

Everything random here is a pure function of (seed, step) or (seed, task, epoch), so the position in
the data is just a few counters: a resumed run draws exactly the batches the killed run would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minibert.data import read_classification, read_conll, read_nli, read_sts_tsv
from minibert.task_spec import NLI_LABELS, SCORE_TASKS, TaskSpec
from minibert.train.config import TaskConfig

READERS = {"sts": read_sts_tsv, "cross_sts": read_sts_tsv, "nli": read_nli, "classification": read_classification,
           "token_classification": read_conll}


def read_split(task_type: str, path: str, skip_bad: bool = False) -> list:
    return READERS[task_type](path, skip_bad=skip_bad)


def subsample(examples: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(examples):
        return examples
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), limit, replace=False))
    return [examples[i] for i in keep]


def hold_out(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, dev): a seeded random `fraction` of the examples becomes the dev set."""
    order = np.random.default_rng([seed, 104729]).permutation(len(examples))
    k = int(round(fraction * len(examples)))
    return [examples[i] for i in np.sort(order[k:])], [examples[i] for i in np.sort(order[:k])]


def load_task_data(task: TaskConfig, index: int, seed: int) -> tuple[list, list]:
    """(train, dev) examples of the `index`-th task, after hold-out and subsampling. The trainer and
    the benchmark both call this, so they always see the same training sets."""
    paths = [task.train] if isinstance(task.train, str) else task.train
    train, dev = [ex for path in paths for ex in read_split(task.type, path)], []
    if task.dev_split:
        train, dev = hold_out(train, task.dev_split, seed)
    elif task.dev:
        dev = read_split(task.type, task.dev)
    train = subsample(train, task.max_train_examples, seed + index)
    if not train:
        raise ValueError(f"task {task.name!r}: {task.train} holds no examples")
    return train, subsample(dev, task.max_dev_examples, seed)


def infer_labels(task: TaskConfig, examples: list) -> list[str]:
    """Label names for a task whose configuration does not list them."""
    if task.type in SCORE_TASKS:
        return []
    if task.type == "nli":
        return list(NLI_LABELS)
    if task.type == "token_classification":
        types = sorted({t[2:] for ex in examples for t in ex.tags if t != "O"})
        return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
    values = sorted({ex.label for ex in examples}, key=str)
    if all(isinstance(v, int) for v in values):
        return [str(i) for i in range(max(values) + 1)]  # ids 0..k-1 name themselves
    return [str(v) for v in values]


def task_spec(task: TaskConfig, labels: list[str]) -> TaskSpec:
    return TaskSpec.from_dict({"name": task.name, "type": task.type, "labels": labels, **task.head})


def to_batch(task_type: str, examples: list) -> dict:
    """Examples -> the dict that MultiTaskModel.forward takes for this task type."""
    if task_type == "classification":
        return {"texts": [e.text for e in examples], "labels": [e.label for e in examples]}
    if task_type == "token_classification":
        return {"words": [e.words for e in examples], "labels": [e.tags for e in examples]}
    if task_type == "nli":
        return {"a": [e.a for e in examples], "b": [e.b for e in examples], "labels": [e.label for e in examples]}
    return {"a": [e.a for e in examples], "b": [e.b for e in examples], "scores": [e.label for e in examples]}


@dataclass
class TaskStream:
    """Endless shuffled passes over one task's training examples; (epoch, position) is its state."""

    examples: list
    seed: int
    epoch: int = 0
    position: int = 0

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))

    def take(self, n: int) -> list:
        out = []
        order = self.order(self.epoch)
        while len(out) < n:
            if self.position == len(order):
                self.epoch, self.position = self.epoch + 1, 0
                order = self.order(self.epoch)
            take = min(n - len(out), len(order) - self.position)
            out += [self.examples[i] for i in order[self.position:self.position + take]]
            self.position += take
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


def task_probabilities(sizes: list[int], sampling: str, temperature: float = 2.0) -> np.ndarray:
    """proportional: p ~ n; temperature: p ~ n^(1/T) (T=1 proportional, T->inf uniform); round_robin: uniform."""
    n = np.asarray(sizes, dtype=np.float64)
    if sampling == "round_robin":
        p = np.ones_like(n)
    elif sampling == "proportional":
        p = n
    elif sampling == "temperature":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        p = n ** (1.0 / temperature)
    else:
        raise ValueError(f"unknown sampling {sampling!r}")
    return p / p.sum()


def task_for_step(step: int, num_tasks: int, sampling: str, probabilities: np.ndarray, seed: int) -> int:
    """The task that optimizer step `step` trains: a pure function, so resuming needs only the step."""
    if sampling == "round_robin":
        return step % num_tasks
    return int(np.random.default_rng([seed, 7919, step]).choice(num_tasks, p=probabilities))

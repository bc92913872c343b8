"""The training data: each task's examples, which task each step trains, and the batches of each step.

Everything random here is a pure function of the seed and the step: the task of step s, and which
examples it draws (the k-th draw of a task takes the next ``batch_size`` examples of an endless
sequence of shuffled passes over its data). So a resumed run needs nothing but the step number to
draw exactly the batches the killed run would have drawn, and ``StepBatches`` can be a plain
map-style dataset that DataLoader workers fill ahead of the training loop.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from minibert.tasks import Task, make_task, task_type
from minibert.tokenizer import TruncationWarning
from minibert.train.config import TaskConfig, TrainConfig

log = logging.getLogger("minibert.train")


def subsample(examples: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(examples):
        return examples
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), limit, replace=False))
    return [examples[i] for i in keep]


def hold_out(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, dev): a random `fraction` of the examples becomes the dev set."""
    order = np.random.default_rng([seed, 104729]).permutation(len(examples))
    k = int(round(fraction * len(examples)))
    return [examples[i] for i in np.sort(order[k:])], [examples[i] for i in np.sort(order[:k])]


def read_file(task: TaskConfig, config: TrainConfig, path: str, setting: str) -> list:
    """One data file, read by the task type's reader; a missing file names the task and the setting."""
    full = config.data_path(path)
    if not full.is_file():
        raise FileNotFoundError(f"task {task.name!r}: {setting} file not found: {full} "
                                f"(data_dir = {config.data_dir}: set data_dir, or MINIBERT_DATA, or the path)")
    return task_type(task.type, task.name).read(full)


def load_task_data(config: TrainConfig, task: TaskConfig, index: int) -> tuple[list, list, list]:
    """(train, dev, test) examples of the `index`-th task, after hold-out and subsampling. Which examples
    are held out or kept depends on ``split_seed`` only, so runs with different seeds see the same dev set."""
    paths = [task.train] if isinstance(task.train, str) else task.train
    train = [ex for path in paths for ex in read_file(task, config, path, "train")]
    dev = read_file(task, config, task.dev, "dev") if task.dev else []
    if task.dev_split:
        train, dev = hold_out(train, task.dev_split, config.split_seed)
    test = read_file(task, config, task.test, "test") if task.test else []
    train = subsample(train, task.max_train_examples, config.split_seed + index)
    if not train:
        raise ValueError(f"task {task.name!r}: {task.train} holds no examples")
    return train, subsample(dev, task.max_dev_examples, config.split_seed), test


def inputs_at_max_length(task: Task, examples: list, tokenizer) -> int:
    """How many of the task's tokenized inputs reach the tokenizer's max_length (those longer are cut)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        return sum(int((task.collate(examples[i:i + 1024], tokenizer)["attention_mask"].sum(1)
                        >= tokenizer.max_length).sum()) for i in range(0, len(examples), 1024))


def read_tasks(cfg: TrainConfig) -> tuple[list[Task], list[list], dict[str, list], dict[str, list]]:
    """The tasks, with the label names their training data shows unless the configuration lists them, and
    their training sets (in the configuration's order), dev sets and test sets (by task name)."""
    tasks, train_sets, dev_sets, test_sets = [], [], {}, {}
    for i, task_config in enumerate(cfg.tasks):
        train, dev, test = load_task_data(cfg, task_config, i)
        train_sets.append(train)
        if dev:
            dev_sets[task_config.name] = dev
        if test:
            test_sets[task_config.name] = test
        labels = task_config.labels or task_type(task_config.type, task_config.name).infer_labels(train)
        tasks.append(make_task({"name": task_config.name, "type": task_config.type, "labels": labels,
                                **task_config.head}))
    return tasks, train_sets, dev_sets, test_sets


def log_truncation(tasks, train_sets: list[list], tokenizer) -> None:
    """How many training inputs reach max_seq_length, said once per task instead of every batch."""
    for task, examples in zip(tasks, train_sets, strict=True):
        full = inputs_at_max_length(task, examples, tokenizer)
        if full:
            log.info("task %s: %d training inputs reach max_seq_length=%d tokens (longer ones are truncated)",
                     task.name, full, tokenizer.max_length)


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


def temperature_at(step: int, steps: int, start: float, end: float | None) -> float:
    """Annealed sampling: the temperature moves linearly from ``start`` at the first step to ``end`` at the
    last (``end`` None: constant). Going from proportional (T=1) towards uniform (large T) lets the big
    tasks shape the encoder first and gives the small ones their share of the later steps."""
    if end is None or steps <= 1:
        return start
    return start + (end - start) * step / (steps - 1)


def tasks_for_step(step: int, num_tasks: int, sampling: str, probabilities: np.ndarray, seed: int,
                   per_step: int = 1) -> tuple[int, ...]:
    """The tasks that optimizer step `step` trains: ``per_step`` different ones, drawn without replacement
    (round robin: the next ``per_step`` in turn)."""
    if sampling == "round_robin":
        return tuple((step * per_step + j) % num_tasks for j in range(per_step))
    rng = np.random.default_rng([seed, 7919, step])
    if per_step == 1:  # the draw of every run before tasks_per_step existed
        return (int(rng.choice(num_tasks, p=probabilities)),)
    return tuple(int(t) for t in rng.choice(num_tasks, size=per_step, replace=False, p=probabilities))


def task_schedule(config: TrainConfig, sizes: list[int]) -> list[tuple[int, ...]]:
    """The tasks of every optimizer step: drawn by ``sampling``, except the last ``finish_steps`` steps,
    which go to the ``finish_with`` tasks in turn (a closing phase for a task the others pull away from)."""
    sampling, steps = config.sampling, config.steps
    schedule = []
    for s in range(steps):
        temperature = temperature_at(s, steps, sampling.temperature, sampling.temperature_end)
        p = task_probabilities(sizes, sampling.strategy, temperature)
        schedule.append(tasks_for_step(s, len(sizes), sampling.strategy, p, config.seed, sampling.tasks_per_step))
    names = [t.name for t in config.tasks]
    finish = [names.index(name) for name in sampling.finish_with]
    for step in range(max(steps - sampling.finish_steps, 0), steps):
        schedule[step] = (finish[step % len(finish)],)
    return schedule


def steps_per_task(config: TrainConfig) -> dict[str, int]:
    """How many steps each task trains in (the schedule is a function of the configuration): the budget
    the same task alone gets in a fair comparison."""
    sizes = [len(load_task_data(config, task, i)[0]) for i, task in enumerate(config.tasks)]
    schedule = task_schedule(config, sizes)
    return {t.name: sum(i in tasks for tasks in schedule) for i, t in enumerate(config.tasks)}


def single_task_config(config: TrainConfig, task: str, steps: int) -> TrainConfig:
    """``config`` with one task, trained alone for ``steps`` steps: the fair single-task baseline of a
    multi-task run. Loss weight 1 (weights only balance tasks against each other), one task a step, and
    nothing that combines tasks: no finishing phase, learned weights, PCGrad, annealing, distillation (of
    either kind), adapter, branch or scaled encoder gradient."""
    single = copy.deepcopy(config)
    single.tasks = [dataclasses.replace(t, loss_weight=1.0, encoder_grad=1.0, teacher=None, teacher_gold=None,
                                        head={k: v for k, v in t.head.items() if k not in ("adapter", "branch")})
                    for t in config.tasks if t.name == task]
    if not single.tasks:
        raise ValueError(f"no task named {task!r} in the configuration ({', '.join(t.name for t in config.tasks)})")
    single.steps = steps
    single.sampling.finish_with, single.sampling.finish_steps = [], 0
    single.sampling.tasks_per_step, single.sampling.temperature_end = 1, None
    single.optim.pcgrad, single.optim.loss_balance, single.optim.distill_from = False, "fixed", None
    return single


class StepBatches(Dataset):
    """Item s: (the tasks of step s, for each of them this process's micro-batches), as tensors.

    The global batch of a task in a step holds ``batch_size`` examples; process r of w takes every w-th
    one from the r-th, then cuts its share into ``grad_accum`` micro-batches.
    """

    def __init__(self, tasks: list[Task], train_sets: list[list], tokenizer, config: TrainConfig,
                 rank: int = 0, world: int = 1) -> None:
        self.tasks, self.train_sets, self.tokenizer = tasks, train_sets, tokenizer
        self.steps, self.batch_size, self.grad_accum = config.steps, config.batch_size, config.optim.grad_accum
        self.seed, self.rank, self.world = config.seed, rank, world
        self.schedule = task_schedule(config, [len(s) for s in train_sets])
        # draw[s][j]: how many batches the j-th task of step s drew before it
        counts, self.draw = [0] * len(tasks), []
        for step_tasks in self.schedule:
            self.draw.append([counts[t] for t in step_tasks])
            for t in step_tasks:
                counts[t] += 1

    def order(self, task: int, epoch: int) -> np.ndarray:
        """The shuffle of one pass over a task's examples."""
        return np.random.default_rng([self.seed * 1000 + task, epoch]).permutation(len(self.train_sets[task]))

    def examples(self, step: int, j: int = 0) -> list:
        """The global batch of the j-th task of step `step`: positions k*B .. k*B+B-1 of the task's endless
        shuffled passes, where k is how many batches the task drew before."""
        t = self.schedule[step][j]
        n, start = len(self.train_sets[t]), self.draw[step][j] * self.batch_size
        orders = {e: self.order(t, e) for e in range(start // n, (start + self.batch_size - 1) // n + 1)}
        return [self.train_sets[t][orders[p // n][p % n]] for p in range(start, start + self.batch_size)]

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> tuple[tuple[int, ...], list[list[dict[str, torch.Tensor]]]]:
        batches = []
        for j, t in enumerate(self.schedule[step]):
            local = self.examples(step, j)[self.rank::self.world]
            micro = len(local) // self.grad_accum
            batches.append([self.tasks[t].collate(local[i * micro:(i + 1) * micro], self.tokenizer)
                            for i in range(self.grad_accum)])
        return self.schedule[step], batches


def step_loader(batches: StepBatches, start: int, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Steps start..end in order; with workers, the next batches are tokenized while this one trains.
    Its own generator, so that making the loader draws nothing from the RNG that dropout uses."""
    return DataLoader(batches, batch_size=None, sampler=range(start, len(batches)), num_workers=num_workers,
                      generator=torch.Generator(), pin_memory=pin_memory)

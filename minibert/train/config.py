"""One training configuration: what each setting means, its default and its checks (``config_file.py`` reads
one from a TOML or JSON file, with ``key=value`` overrides from the command line).

Data paths are relative to ``data_dir`` (default: ``$MINIBERT_DATA``, else ``shared/data`` beside the
checkout). Every run writes the resolved configuration (overrides applied, ``data_dir`` filled in) next
to its checkpoints as ``config.json``, so ``--config runs/x/config.json`` repeats it exactly.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minibert.data import default_data_dir
from minibert.hub import DEFAULT_MODEL
from minibert.paths import PATHS
from minibert.tasks import check_options
from minibert.train.balance import BALANCES
from minibert.train.distill import DISTILL_AT, check_teachable
from minibert.train.recipe import TABLES
from minibert.typecheck import check_choice, check_keys, check_types, in_range

SCHEDULES = ("linear", "cosine", "constant")
SAMPLING = ("round_robin", "proportional", "temperature")
PRECISIONS = ("fp32", "bf16", "fp16")
INITS = ("pretrained", "random")


@dataclass
class TaskConfig:
    name: str
    type: str  # classification | token_classification | nli | sts | cross_sts
    train: str | list[str] | None = None  # paths, relative to data_dir; the reader is the task type's;
    # several training files are read one after the other (gold pairs plus silver pairs, for example)
    dev: str | None = None
    test: str | None = None
    dev_split: float = 0.0  # with no dev file: hold out this fraction of the training file as dev
    labels: list[str] | None = None  # default: the label names found in the training data
    loss_weight: float = 1.0
    encoder_grad: float = 1.0  # the share of this task's gradient that reaches the transformer (minibert.adapter)
    max_train_examples: int | None = None  # a random subset (drawn with split_seed), for big sets or quick runs
    max_dev_examples: int | None = None
    head: dict[str, Any] = field(default_factory=dict)  # the task type's options: dropout, hidden_layer, loss, ...
    teacher: str | None = None  # a saved multi-task model (this task trained alone) that teaches this task's head
    # its predictions, annealed towards the gold labels over the run, or mixed with them at a held share
    # (teacher_gold; minibert.train.distill)
    teacher_gold: float | None = None  # the gold labels' share of the targets, held from first step to last;
    # None: teacher annealing (0 at the first step, rising to 1)

    def __post_init__(self) -> None:
        check_types(self, f"task {self.name!r}: ")
        where = f"task {self.name!r}: "
        in_range(where + "loss_weight", self.loss_weight, 0)
        in_range(where + "encoder_grad", self.encoder_grad, 0, 1)
        in_range(where + "dev_split", self.dev_split, 0, 1, high_open=True)
        in_range(where + "max_train_examples", self.max_train_examples, 1)
        in_range(where + "max_dev_examples", self.max_dev_examples, 1)
        # Checked here, not only when the model is built, so a bad option fails before the data is read.
        if self.teacher is not None:
            check_teachable(where + "teacher", self.type)
        in_range(where + "teacher_gold", self.teacher_gold, 0, 1)
        if self.teacher_gold is not None and not self.teacher:
            raise ValueError(f"{where}teacher_gold = {self.teacher_gold} needs a teacher (the share is of its targets)")
        check_options(self.name, self.type, self.head)


@dataclass
class EncoderConfig:
    """[encoder]: what the encoder starts from, and which of its parts move."""

    init: str = "pretrained"  # "random": the model's architecture and tokenizer, weights drawn afresh (a baseline)
    heads_from: str | None = None  # a saved multi-task model: its heads start the tasks it shares with this run
    pooling: list[str] | None = None  # the pooling modes (default: the model folder's), e.g. ["cls"]
    max_seq_length: int | None = None  # truncate inputs to this many tokens (default: the model folder's)
    dropout: float | None = None  # the encoder's dropout (default: the checkpoint's); 0 can help regression
    freeze: list[str] = field(default_factory=list)  # parts frozen for the whole run (see train.optim.select)
    freeze_encoder_steps: int = 0  # train only the heads for the first N steps

    def __post_init__(self) -> None:
        check_types(self, "encoder.")
        check_choice("encoder.init", self.init, INITS)
        in_range("encoder.max_seq_length", self.max_seq_length, 2)  # room for [CLS] and [SEP]
        in_range("encoder.dropout", self.dropout, 0, 1, high_open=True)
        in_range("encoder.freeze_encoder_steps", self.freeze_encoder_steps, 0)
        for part in self.freeze:
            if not re.fullmatch(r"embeddings|encoder|heads|pooler|layers:\d+|layer\.\d+|head:[A-Za-z0-9_-]+", part):
                raise ValueError(f"encoder.freeze: {part!r} is not a part; use embeddings, encoder, heads, pooler, "
                                 "layers:K (the first K), layer.I or head:NAME")


@dataclass
class OptimConfig:
    """[optim]: what one optimizer step does (AdamW, clipping, accumulation, SAM)."""

    lr: float = 5e-5  # the top encoder layer's learning rate
    layer_decay: float = 1.0  # layer i gets lr * layer_decay^(top - i); embeddings the lowest
    head_lr: float | None = None  # the heads' learning rate (default: lr); usually the highest
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    max_grad_norm: float = 1.0
    grad_accum: int = 1  # micro-batches per step (the step's batch is batch_size over all of them)
    sam_rho: float = 0.0  # > 0: sharpness-aware minimisation with this radius (two passes per step)
    # How the tasks' losses and gradients combine (minibert.train.balance, minibert.train.pcgrad):
    loss_balance: str = "fixed"  # "uncertainty": learned weights exp(-s_i) (Kendall et al.) times loss_weight
    balance_lr: float = 0.01  # the learning rate of the learned log-variances s_i
    pcgrad: bool = False  # project conflicting task gradients (needs sampling.tasks_per_step >= 2)
    distill_from: str | None = None  # a sentence encoder (name or folder) whose embeddings every step pulls towards
    distill_weight: float = 1.0  # the weight of that term, mean (1 - cosine) to the teacher (minibert.train.distill)
    distill_at: str = "head"  # pull what each head reads (through its branch, adapter), or the "encoder"'s own

    def __post_init__(self) -> None:
        check_types(self, "optim.")
        for name in ("lr", "layer_decay", "head_lr", "max_grad_norm", "balance_lr", "distill_weight"):
            in_range(f"optim.{name}", getattr(self, name), 0, low_open=True)
        in_range("optim.weight_decay", self.weight_decay, 0)
        in_range("optim.grad_accum", self.grad_accum, 1)
        in_range("optim.sam_rho", self.sam_rho, 0)
        check_choice("optim.loss_balance", self.loss_balance, BALANCES)
        # a setting of a method that is off would be silently ignored
        if self.balance_lr != OptimConfig.balance_lr and self.loss_balance == "fixed":
            raise ValueError('optim.balance_lr is for optim.loss_balance = "uncertainty" (the loss weights are fixed)')
        check_choice("optim.distill_at", self.distill_at, DISTILL_AT)
        for name in ("distill_weight", "distill_at"):
            if getattr(self, name) != getattr(OptimConfig, name) and not self.distill_from:
                raise ValueError(f"optim.{name} needs optim.distill_from (the teacher to distil from)")


@dataclass
class ScheduleConfig:
    """[schedule]: the learning rate over the run: linear warm-up, then ``shape``."""

    warmup_ratio: float = 0.1  # the first warmup_ratio * steps steps warm up from 0
    shape: str = "linear"  # linear or cosine decay to 0, or constant

    def __post_init__(self) -> None:
        check_types(self, "schedule.")
        check_choice("schedule.shape", self.shape, SCHEDULES)
        in_range("schedule.warmup_ratio", self.warmup_ratio, 0, 1)


@dataclass
class SamplingConfig:
    """[sampling]: which tasks each step trains."""

    strategy: str = "proportional"  # p ~ examples; "temperature": p ~ n^(1/T); "round_robin": in turn
    temperature: float = 2.0
    temperature_end: float | None = None  # annealed: T moves linearly from temperature to this over the run
    tasks_per_step: int = 1  # different tasks per step, each with batch_size examples (PCGrad needs >= 2)
    finish_with: list[str] = field(default_factory=list)  # tasks that alone train the last finish_steps steps
    finish_steps: int = 0

    def __post_init__(self) -> None:
        check_types(self, "sampling.")
        check_choice("sampling.strategy", self.strategy, SAMPLING)
        in_range("sampling.temperature", self.temperature, 0, low_open=True)
        in_range("sampling.temperature_end", self.temperature_end, 0, low_open=True)
        in_range("sampling.tasks_per_step", self.tasks_per_step, 1)
        if self.temperature_end is not None and self.strategy != "temperature":
            raise ValueError(f'sampling.temperature_end is for strategy = "temperature", not {self.strategy!r}')


@dataclass
class RuntimeConfig:
    """[runtime]: where and how the steps run."""

    device: str = "auto"  # auto: this process's GPU when there is one, else the CPU
    precision: str = "fp32"  # bf16: autocast on CPU and CUDA; fp16: autocast + gradient scaler, CUDA only
    path: str = "auto"  # the execution path (minibert.paths); auto: the device's default (paths.default_path)
    attn_implementation: str = "sdpa"  # the reference path's attention: sdpa or eager
    num_workers: int = 0  # DataLoader processes that tokenize the next batches while this one trains

    def __post_init__(self) -> None:
        check_types(self, "runtime.")
        check_choice("runtime.precision", self.precision, PRECISIONS)
        if self.path == "int8":
            raise ValueError('runtime.path "int8" is for inference (quantized copies of the weights): train on '
                             '"fast" or "reference", then encode the trained model on "int8"')
        check_choice("runtime.path", self.path, ("auto", *PATHS))
        check_choice("runtime.attn_implementation", self.attn_implementation, ("sdpa", "eager"))
        in_range("runtime.num_workers", self.num_workers, 0)


@dataclass
class EvalConfig:
    """[eval]: when the dev sets are scored, and which score chooses the best checkpoint."""

    every: int = 0  # 0: at the end only
    batch_size: int = 64
    best_metric: str = "mean"  # "mean" of the tasks' main metrics, or one of them, e.g. "sts/spearman"

    def __post_init__(self) -> None:
        check_types(self, "eval.")
        in_range("eval.every", self.every, 0)
        in_range("eval.batch_size", self.batch_size, 1)


@dataclass
class OutputConfig:
    """[output]: what a run writes besides its models, and how often."""

    checkpoint_every: int = 100  # steps between training checkpoints (checkpoint.pt)
    log_every: int = 20  # steps between lines of metrics.jsonl
    plot: bool = True  # curves.png at the end (needs matplotlib)

    def __post_init__(self) -> None:
        check_types(self, "output.")
        in_range("output.checkpoint_every", self.checkpoint_every, 1)
        in_range("output.log_every", self.log_every, 1)


SECTIONS = dict(zip(TABLES, (EncoderConfig, OptimConfig, ScheduleConfig, SamplingConfig, RuntimeConfig, EvalConfig,
                            OutputConfig), strict=True))


@dataclass
class TrainConfig:
    """A whole run. The top level says what is trained, on what, for how long; each table one concern."""

    tasks: list[TaskConfig]
    model: str = DEFAULT_MODEL  # name or folder of the pretrained encoder
    output_dir: str = "runs/run"
    data_dir: str = field(default_factory=lambda: str(default_data_dir()))
    seed: int = 42  # heads' initial weights, dropout, the order of the training examples, the task sequence
    split_seed: int = 0  # which examples dev_split holds out and max_*_examples keep: the same for every seed
    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # examples per optimizer step (over all processes and accumulation steps)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                check_keys(value, cls, f"[{name}]")
                setattr(self, name, cls(**value))
            elif not isinstance(value, cls):
                raise ValueError(f"{name} must be a table of settings ([{name}]), got {value!r}")
        check_types(self, "", skip=("tasks", *SECTIONS))
        if not isinstance(self.tasks, list) or not all(isinstance(t, (dict, TaskConfig)) for t in self.tasks):
            raise ValueError(f"tasks must be a list of tables ([[tasks]]), got {self.tasks!r:.80}")
        self.tasks = [t if isinstance(t, TaskConfig) else task_from_dict(t) for t in self.tasks]
        if not self.tasks:
            raise ValueError("the configuration names no tasks")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        in_range("steps", self.steps, 1)
        in_range("batch_size", self.batch_size, 1)
        in_range("seed", self.seed, 0)
        in_range("split_seed", self.split_seed, 0)
        task, _, metric = self.eval.best_metric.partition("/")
        if self.eval.best_metric != "mean" and (task not in names or not metric):
            raise ValueError(f"eval.best_metric must be \"mean\" or TASK/METRIC for one of the tasks {names}, "
                             f"got {self.eval.best_metric!r}")
        unknown_heads = [p for p in self.encoder.freeze if p.startswith("head:") and p[5:] not in names]
        if unknown_heads:
            raise ValueError(f"encoder.freeze: {unknown_heads} name no task of this configuration {names}")
        if self.batch_size % self.optim.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by optim.grad_accum "
                             f"{self.optim.grad_accum}")
        sampling = self.sampling
        if sampling.tasks_per_step > len(names):
            raise ValueError(f"sampling.tasks_per_step = {sampling.tasks_per_step}: the run has {len(names)} tasks")
        if self.optim.pcgrad and sampling.tasks_per_step < 2:
            raise ValueError("optim.pcgrad projects the gradients of several tasks against each other: "
                             "set sampling.tasks_per_step >= 2")
        unknown = [n for n in sampling.finish_with if n not in names]
        if unknown or sampling.finish_steps < 0 or bool(sampling.finish_steps) != bool(sampling.finish_with):
            raise ValueError(f"sampling.finish_with {sampling.finish_with} and finish_steps {sampling.finish_steps}: "
                             f"name tasks of this configuration ({', '.join(names)}) and a number of steps > 0, "
                             "or neither")
        for t in self.tasks:
            if not t.train:
                raise ValueError(f"task {t.name!r}: train must be a path or a list of paths, got {t.train!r}")
            if t.dev_split and t.dev:
                raise ValueError(f"task {t.name!r}: dev_split is for a task without a dev file")

    def to_dict(self) -> dict:
        return asdict(self)

    def data_path(self, path: str) -> Path:
        """A data file's path: relative paths are relative to data_dir."""
        return Path(self.data_dir) / path

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def task_from_dict(raw: dict) -> TaskConfig:
    if not isinstance(raw, dict):
        raise ValueError(f"a task must be a table of settings ([[tasks]]), got {raw!r:.80}")
    check_keys(raw, TaskConfig, f"task {raw.get('name')!r}")
    return TaskConfig(**raw)

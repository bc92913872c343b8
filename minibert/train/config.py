"""One training configuration: a TOML or JSON file, plus ``key=value`` overrides from the command line.

Data paths are relative to ``data_dir`` (default: ``$MINIBERT_DATA``, else ``shared/data`` beside the
checkout). Every run writes the resolved configuration (overrides applied, ``data_dir`` filled in) next
to its checkpoints as ``config.json``, so ``--config runs/x/config.json`` repeats it exactly.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from minibert.data import default_data_dir
from minibert.files import read_json, read_text
from minibert.hub import DEFAULT_MODEL
from minibert.tasks import check_options

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
    max_train_examples: int | None = None  # a random subset (drawn with split_seed), for big sets or quick runs
    max_dev_examples: int | None = None
    head: dict[str, Any] = field(default_factory=dict)  # the task type's options: dropout, hidden_layer, loss, ...

    def __post_init__(self) -> None:
        # Checked here, not only when the model is built, so a bad option fails before the data is read.
        if not isinstance(self.head, dict):
            raise ValueError(f"task {self.name!r}: head must be a table of options, got {self.head!r}")
        check_options(self.name, self.type, self.head)


@dataclass
class TrainConfig:
    tasks: list[TaskConfig]
    model: str = DEFAULT_MODEL  # name or folder of the pretrained encoder
    init: str = "pretrained"  # "random": the model's architecture and tokenizer, weights drawn afresh (a baseline)
    heads_from: str | None = None  # a saved multi-task model: its heads start the tasks it shares with this run
    output_dir: str = "runs/run"
    data_dir: str = field(default_factory=lambda: str(default_data_dir()))
    seed: int = 42  # heads' initial weights, dropout, the order of the training examples, the task sequence
    split_seed: int = 0  # which examples dev_split holds out and max_*_examples keep: the same for every seed
    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # examples per optimizer step (over all processes and accumulation steps)
    grad_accum: int = 1
    lr: float = 5e-5  # the top encoder layer's learning rate
    layer_decay: float = 1.0  # layer i gets lr * layer_decay^(top - i); embeddings the lowest
    head_lr: float | None = None  # heads' learning rate (default: lr); usually the highest
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    warmup_ratio: float = 0.1
    schedule: str = "linear"
    max_grad_norm: float = 1.0
    precision: str = "fp32"  # bf16: autocast on CPU and CUDA; fp16: autocast + gradient scaler, CUDA only
    attn_implementation: str = "sdpa"
    fast: bool = False  # train through minibert.fast (no padding, fused QKV; oneDNN linears on CPU)
    compile: bool = False  # train through minibert.compiled (torch.compile; CUDA graphs on CUDA); not with fast
    pooling: list[str] | None = None  # the encoder's pooling modes (default: the model folder's), e.g. ["cls"]
    sampling: str = "proportional"  # which task each step trains
    temperature: float = 2.0  # for sampling="temperature": p ~ n^(1/T)
    finish_with: list[str] = field(default_factory=list)  # tasks that alone train the last finish_steps steps
    finish_steps: int = 0
    freeze: list[str] = field(default_factory=list)  # parts frozen for the whole run (see train.optim.select)
    freeze_encoder_steps: int = 0  # train only the heads for the first N steps
    max_seq_length: int | None = None
    sam_rho: float = 0.0  # > 0: sharpness-aware minimisation with this radius (two passes per step)
    dropout: float | None = None  # the encoder's dropout (default: the checkpoint's); 0 can help regression
    eval_every: int = 0  # 0: evaluate at the end only
    eval_batch_size: int = 64
    best_metric: str = "mean"  # "mean" of the tasks' main metrics, or one of them, e.g. "sts/spearman"
    checkpoint_every: int = 100
    log_every: int = 20
    device: str = "auto"
    num_workers: int = 0  # DataLoader processes that tokenize the next batches while this one trains
    plot: bool = True

    def __post_init__(self) -> None:
        self.tasks = [t if isinstance(t, TaskConfig) else task_from_dict(t) for t in self.tasks]
        if not self.tasks:
            raise ValueError("the configuration names no tasks")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        for name, allowed in (("schedule", SCHEDULES), ("sampling", SAMPLING), ("precision", PRECISIONS),
                              ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("steps", "batch_size", "grad_accum", "eval_batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.sam_rho < 0:
            raise ValueError(f"sam_rho must be >= 0, got {self.sam_rho}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.fast and self.compile:
            raise ValueError("fast and compile are two different paths: choose one")
        unknown = [n for n in self.finish_with if n not in names]
        if unknown or self.finish_steps < 0 or bool(self.finish_steps) != bool(self.finish_with):
            raise ValueError(f"finish_with {self.finish_with} and finish_steps {self.finish_steps}: name tasks "
                             f"of this configuration ({', '.join(names)}) and a number of steps > 0, or neither")
        for t in self.tasks:
            if not t.train or (isinstance(t.train, list) and not all(isinstance(p, str) for p in t.train)):
                raise ValueError(f"task {t.name!r}: train must be a path or a list of paths, got {t.train!r}")
            if not 0.0 <= t.dev_split < 1.0 or (t.dev_split and t.dev):
                raise ValueError(f"task {t.name!r}: dev_split must be in [0, 1) and only used without a dev file")

    def to_dict(self) -> dict:
        return asdict(self)

    def data_path(self, path: str) -> Path:
        """A data file's path: relative paths are relative to data_dir."""
        return Path(self.data_dir) / path

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


# Settings that do not change what a run computes: a resumed run may change them.
NOT_RECIPE = ("output_dir", "data_dir", "num_workers", "plot", "checkpoint_every", "log_every")


def changed_keys(saved: dict, now: dict) -> list[str]:
    """The settings of the recipe on which two resolved configurations (``TrainConfig.to_dict()``) differ.
    A setting one of them lacks (it was saved before the setting existed) counts as its default."""
    defaults = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
                for f in fields(TrainConfig)}
    return sorted(k for k in set(saved) | set(now)
                  if k not in NOT_RECIPE and saved.get(k, defaults.get(k)) != now.get(k, defaults.get(k)))


def task_from_dict(raw: dict) -> TaskConfig:
    check_keys(raw, TaskConfig, f"task {raw.get('name')!r}")
    return TaskConfig(**raw)


def check_keys(raw: dict, cls, where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if path.suffix != ".toml":
        return read_json(path, "config file")
    text = read_text(path, "config file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: {e}") from e


def apply_override(raw: dict, assignment: str) -> None:
    """'steps=200', 'tasks.sts.loss_weight=2', 'freeze=["embeddings"]' (values parsed as JSON when they can be)."""
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} is not KEY=VALUE")
    key, text = assignment.split("=", 1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    parts = key.strip().split(".")
    if parts[0] == "tasks" and len(parts) >= 3:
        by_name = {t.get("name"): t for t in raw.get("tasks", [])}
        if parts[1] not in by_name:
            raise ValueError(f"override {assignment!r}: no task named {parts[1]!r} (tasks: {list(by_name)})")
        target, parts = by_name[parts[1]], parts[2:]
    else:
        target = raw
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    raw = read_config_file(path) if path else dict(base or {})
    for assignment in overrides:
        apply_override(raw, assignment)
    check_keys(raw, TrainConfig, str(path or "configuration"))
    if "tasks" not in raw:
        raise ValueError(f"{path or 'configuration'}: no [[tasks]]")
    try:
        return TrainConfig(**raw)
    except TypeError as e:
        raise ValueError(f"{path or 'configuration'}: {e}") from e

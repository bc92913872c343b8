"""A run's recipe: the settings that change what it computes, compared between a saved run and a new one
(``--resume`` refuses another recipe; studies reuse finished runs of the same one), across versions:
a setting a saved run predates counts as its default, and the flat form of older configurations
(``lr = ...`` before the ``[optim]`` table) is read in today's.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from minibert.paths import default_path

# The configuration's tables, in the order a file lists them (minibert.train.config defines each).
TABLES = ("encoder", "optim", "schedule", "sampling", "runtime", "eval", "output")

# Where each setting of the flat configurations (minibert before [sections]) lives now.
MOVED = {**{k: f"encoder.{k}" for k in ("init", "heads_from", "pooling", "max_seq_length", "dropout", "freeze",
                                         "freeze_encoder_steps")},
         **{k: f"optim.{k}" for k in ("lr", "layer_decay", "head_lr", "weight_decay", "max_grad_norm", "grad_accum",
                                      "sam_rho")},
         "warmup_ratio": "schedule.warmup_ratio", "schedule": "schedule.shape",
         "sampling": "sampling.strategy", "temperature": "sampling.temperature",
         "finish_with": "sampling.finish_with", "finish_steps": "sampling.finish_steps",
         **{k: f"runtime.{k}" for k in ("device", "precision", "attn_implementation", "num_workers")},
         "fast": "runtime.path", "compile": "runtime.path",
         "eval_every": "eval.every", "eval_batch_size": "eval.batch_size", "best_metric": "eval.best_metric",
         **{k: f"output.{k}" for k in ("checkpoint_every", "log_every", "plot")}}


def moved_note(key: str, value) -> str:
    """Where a flat setting lives now: "lr is now optim.lr", "fast is now runtime.path = "fast""."""
    if key in ("fast", "compile"):
        path = ("fast" if key == "fast" else "compiled") if value else "reference"
        return f'{key} is now runtime.path = "{path}"'
    return f"{key} is now {MOVED[key]}"


def old_keys(raw: dict) -> list[str]:
    """The settings of ``raw`` written the flat way (a table name holding a plain value is one too)."""
    return [k for k in raw if k in MOVED and not (k in TABLES and isinstance(raw[k], dict))]


# Settings that do not change what a run computes: a resumed run may change them.
NOT_RECIPE = ("output_dir", "data_dir", "runtime.num_workers", "output.plot", "output.checkpoint_every",
              "output.log_every")

def upgrade(raw: dict) -> dict:
    """A configuration saved by a minibert before the [sections], in today's form. For comparing a saved
    run with a new one (``--resume``, reusing study runs); files written by hand get an error instead."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    values = {old: raw.pop(old) for old in old_keys(raw)}  # all out first: "schedule" held a string
    fast, compile = values.pop("fast", None), values.pop("compile", None)
    if fast is not None or compile is not None:  # both false meant the reference path
        raw.setdefault("runtime", {})["path"] = "fast" if fast else "compiled" if compile else "reference"
    for old, value in values.items():
        section, key = MOVED[old].split(".")
        raw.setdefault(section, {})[key] = value
    return raw


def resolve_path(flat: dict) -> dict:
    """``runtime.path = "auto"`` as the path it runs on the configuration's device (what a run computes
    depends on the path, not on how it was named)."""
    if flat.get("runtime.path", "auto") != "auto":
        return flat
    device = flat.get("runtime.device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return {**flat, "runtime.path": default_path(device)}
    except RuntimeError:  # not a device name: the configuration's own check reports it
        return flat


def flatten(raw: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}; tasks stay one value."""
    out = {}
    for k, v in raw.items():
        if k in TABLES and isinstance(v, dict) and not prefix:
            out |= flatten(v, f"{k}.")
        else:
            out[prefix + k] = v
    return out


def changed_keys(saved: dict, now: dict) -> list[str]:
    """The settings of the recipe on which two resolved configurations (``TrainConfig.to_dict()``) differ.
    A setting one of them lacks (it was saved before the setting existed) counts as its default, and a
    configuration saved in the flat form of older versions is read in today's."""
    from minibert.train.config import TaskConfig, TrainConfig  # (config.py imports this module)

    defaults = flatten(asdict(TrainConfig(tasks=[TaskConfig(name="x", type="sts", train="x")])))
    task_defaults = asdict(TaskConfig(name="x", type="sts"))  # each task's settings, the same way
    saved, now = (resolve_path({**defaults, **flatten(upgrade(raw))}) for raw in (saved, now))
    for flat in (saved, now):
        if isinstance(flat.get("tasks"), list):
            flat["tasks"] = [{**task_defaults, **t} if isinstance(t, dict) else t for t in flat["tasks"]]
    return sorted(k for k in set(saved) | set(now)
                  if k not in NOT_RECIPE and saved.get(k, defaults.get(k)) != now.get(k, defaults.get(k)))

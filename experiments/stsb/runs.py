"""Helpers the STS-B experiments share: the one STS task of a recipe, and reusing finished runs."""

from __future__ import annotations

from pathlib import Path

from minibert.files import read_json
from minibert.train import TaskConfig, TrainConfig
from minibert.train.recipe import changed_keys


def single_sts_task(config: TrainConfig, where: str) -> TaskConfig:
    """The one STS task of an experiment's configuration, which must name dev and test files."""
    if len(config.tasks) != 1 or config.tasks[0].type != "sts" or not (config.tasks[0].dev and config.tasks[0].test):
        raise ValueError(f"{where}: needs exactly one sts task with dev and test files")
    return config.tasks[0]


def check_finished_run(folder: str | Path, config: TrainConfig) -> None:
    """A finished run in ``folder`` may stand in for ``config`` only if it used the same recipe. The
    folder may have moved, so ``output_dir`` does not count; options added since read as their defaults."""
    saved = Path(folder) / "config.json"
    changed = changed_keys(read_json(saved), config.to_dict())  # output_dir and the like do not count
    if changed:
        raise ValueError(f"{saved}: that run used a different configuration (changed: {changed}); pass another --out")

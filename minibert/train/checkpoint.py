"""Files a run writes without ever leaving a half-written one behind, the RNG states a checkpoint must
carry for a resumed run to continue exactly, and the checks before it does."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from minibert.train.recipe import changed_keys


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_states_of_all(world: int) -> list[dict]:
    """Every process's RNG states, in rank order (a collective call under DDP: every process makes it)."""
    if world == 1:
        return [rng_state()]
    states = [None] * world
    dist.all_gather_object(states, rng_state())
    return states


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill mid-write leaves the old checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def replace_folder(save, target: Path) -> None:
    """Write a model folder (``save(folder)``) next to `target`, then swap it in."""
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)  # left by a run killed during the last swap
    save(tmp)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def forget_log_after(path: Path, step: int, finished: bool) -> None:
    """Drop the metrics.jsonl lines that a run resumed at `step` writes again: those after that step and,
    for a run that had finished, its final evaluation (it is done again)."""
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    kept = [r for r in records if r.get("step", 0) < step
            or (r.get("step", 0) == step and ("loss" in r or not finished))]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def load_training_state(path: Path, config: dict, world: int) -> dict:
    """Our own checkpoint file, read onto the CPU (the RNG states must stay CPU byte tensors, and
    ``load_state_dict`` copies the rest onto the devices of the parameters they belong to), refused when
    it was written with another recipe or another number of processes."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    changed = changed_keys(state["config"], config)
    if changed:
        raise ValueError(f"--resume: {path} was written with a different configuration (changed: {changed})")
    if state["world"] != world:
        raise ValueError(f"--resume: {path} was written by {state['world']} processes, now {world}")
    return state

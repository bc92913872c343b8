"""Which device this process trains on, and the process group when torchrun started several."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from minibert.device import check_device


def pick_device(name: str) -> torch.device:
    """The configured device; "auto" and "cuda" mean this process's GPU, cuda:LOCAL_RANK under torchrun."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process LOCAL_RANK={local_rank} needs GPU {local_rank}, but this machine has "
                             f"{torch.cuda.device_count()}; start fewer processes or set runtime.device=cpu")
        name = f"cuda:{local_rank}"
    device = check_device(name, setting="device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); starts the process group when torchrun launched us. NCCL for GPUs, gloo for
    the CPU, whatever else the machine has (a CPU run on a GPU machine still talks over gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return int(os.environ.get("RANK", "0")), world


def all_sum(values: list[float], world: int, device: torch.device) -> list[float]:
    """Each value summed over all processes (the values themselves in a single process)."""
    if world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def replicas_identical(model: torch.nn.Module, world: int) -> bool:
    """After DDP training every replica must hold the same weights: compare checksums."""
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
    gathered = [torch.zeros_like(sums) for _ in range(world)]
    dist.all_gather(gathered, sums)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])

"""The kernels a process chose, as plain strings that a checkpoint or a broadcast can carry, and another
process taking them over: a resumed training run, or every rank of a DDP job, runs the kernels its first
process measured, since different kernels round differently and a resume must continue exactly."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from minibert.paths import attention_kernels, kernels


def kernel_choices(dtypes: Iterable[torch.dtype]) -> dict[str, str]:
    """The attention kernel this process runs in each dtype, and the linear one in float32 and bfloat16 (the
    dtypes ``cpu_linear`` serves), measured now where not chosen yet, as plain strings ({"linear:float32":
    "blas", "attention:float32": "products", ...}) that a checkpoint or a broadcast can carry."""
    choices = {}
    for dtype in sorted(set(dtypes), key=str):
        name = str(dtype).removeprefix("torch.")
        if dtype in kernels.LINEAR_DTYPES:
            choices[f"linear:{name}"] = kernels.linear_kernel(dtype)
        choices[f"attention:{name}"] = attention_kernels.attention_kernel(dtype)
    return choices


def use_kernel_choices(choices: dict[str, str]) -> None:
    """Run the kernels ``kernel_choices`` gave in another process, whatever this one would measure (or
    ``MINIBERT_CPU_LINEAR``/``MINIBERT_CPU_ATTENTION`` would force). All are checked before any is taken: one
    this process cannot run (oneDNN's, in a torch build without it) is an error, since running another
    kernel instead would not continue that process's numbers."""
    pinned = []
    for key, kernel in choices.items():
        kind, _, name = key.partition(":")
        dtype = getattr(torch, name, None)
        if kind not in ("linear", "attention") or not isinstance(dtype, torch.dtype) or not dtype.is_floating_point \
                or (kind == "linear" and dtype not in kernels.LINEAR_DTYPES):
            linears = ", ".join(f"linear:{str(d).removeprefix('torch.')}" for d in kernels.LINEAR_DTYPES)
            raise ValueError(f"kernel choice {key!r}: not a kernel this version chooses ({linears}, "
                             "attention:<a float dtype>)")
        runnable = kernels.candidates(dtype) if kind == "linear" else list(attention_kernels.ATTENTIONS)
        if kernel not in runnable:
            raise ValueError(f"kernel choice {key!r}: {kernel!r} is not one this process can run (it can run "
                             f"{runnable}; oneDNN's needs a torch build with it)")
        pinned.append((kernels.CHOSEN if kind == "linear" else attention_kernels.ATTENTION_CHOSEN, dtype, kernel))
    for table, dtype, kernel in pinned:
        table[dtype] = kernel

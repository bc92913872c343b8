"""A device name this torch can use, or a one-line error that says why not (instead of a traceback
from deep inside torch)."""

from __future__ import annotations

import torch


def check_device(name: str | torch.device, setting: str = "--device") -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"{setting} {name}: {e}") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{setting} {name}: this torch ({torch.__version__}) sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{setting} {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device

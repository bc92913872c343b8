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
    if device.type == "meta":
        raise ValueError(f"{setting} {name}: the meta device holds no numbers to compute with")
    try:  # another kind of device (mps, xla, ...): this torch must be able to hold a tensor there
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"{setting} {name}: this torch ({torch.__version__}) cannot put tensors there "
                         f"({str(e).split('. ')[0]})") from e
    return device

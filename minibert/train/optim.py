"""What the optimizer moves and how: named parts of the model and freezing them, AdamW parameter groups
(decay / no decay, layer-wise learning rates), the learning-rate schedule, and sharpness-aware steps."""

from __future__ import annotations

import math

import torch
from torch import nn

from minibert.multitask import MultiTaskModel


def parts(model: MultiTaskModel) -> dict[str, list[nn.Parameter]]:
    """Named groups of parameters, in the order a batch meets them."""
    bert = model.encoder.bert
    groups = {"embeddings": list(bert.embeddings.parameters())}
    for i, block in enumerate(bert.blocks):
        groups[f"layer.{i}"] = list(block.parameters())
    if bert.pooler is not None:
        groups["pooler"] = list(bert.pooler.parameters())
    for name, head in model.heads.items():
        # a task's branch (minibert.branch): copies of encoder layers, each a part of its own to get that
        # layer's learning rate; freezing "head:NAME" freezes it with the rest of the head
        branch = getattr(head, "branch", None)
        own = set()
        for i, block in enumerate(branch.blocks if branch is not None else []):
            groups[f"branch:{name}/layer.{branch.start + i}"] = list(block.parameters())
            own |= {id(p) for p in block.parameters()}
        groups[f"head:{name}"] = [p for p in head.parameters() if id(p) not in own]
    return groups


def select(model: MultiTaskModel, part: str) -> list[nn.Parameter]:
    """'embeddings', 'encoder' (everything below the heads), 'layers:K' (the first K blocks), 'layer.I',
    'head:NAME' or 'heads'."""
    groups = parts(model)
    if part.startswith("head:") and part[5:] in model.heads:
        return list(model.heads[part[5:]].parameters())  # its branch and adapter included
    if part in groups:
        return groups[part]
    if part == "encoder":
        return list(model.encoder.parameters())
    if part == "heads":
        return list(model.heads.parameters())
    if part.startswith("layers:"):
        k = int(part.split(":", 1)[1])
        if not 0 <= k <= len(model.encoder.bert.blocks):
            raise ValueError(f"layers:{k}: the encoder has {len(model.encoder.bert.blocks)} layers")
        return [p for i in range(k) for p in groups[f"layer.{i}"]]
    if part.startswith("head:"):
        model.task(part[5:])  # raises, listing the known tasks
    raise ValueError(f"unknown part {part!r}; use embeddings, encoder, layers:K, layer.I, heads, or one of "
                     f"{', '.join(groups)}")


def freeze(model: MultiTaskModel, *names: str) -> None:
    for part in names:
        for p in select(model, part):
            p.requires_grad_(False)


def unfreeze(model: MultiTaskModel, *names: str) -> None:
    """Make parts trainable again; BERT's pooler stays frozen (SBERT pooling replaces it)."""
    for part in names:
        for p in select(model, part):
            p.requires_grad_(True)
    if model.encoder.bert.pooler is not None:
        model.encoder.bert.pooler.requires_grad_(False)


def trainable_report(model: MultiTaskModel) -> str:
    w = max(22, *(len(name) + 2 for name in parts(model)))  # a branch's parts have longer names
    lines = [f"{'part':{w}}{'trainable':>12}{'total':>12}"]
    trainable_sum = total_sum = 0
    for name, params in parts(model).items():
        trainable = sum(p.numel() for p in params if p.requires_grad)
        total = sum(p.numel() for p in params)
        trainable_sum, total_sum = trainable_sum + trainable, total_sum + total
        lines.append(f"{name:{w}}{trainable:12,}{total:12,}")
    lines.append(f"{'all':{w}}{trainable_sum:12,}{total_sum:12,}")
    return "\n".join(lines)


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
    for part, params in parts(model).items():
        if part == "pooler":
            continue
        if part.startswith("head:"):
            part_lr = head_lr if head_lr is not None else lr
        else:  # an encoder layer, or a task's own copy of one (branch:NAME/layer.I)
            part_lr = lr * scales[part.split("/")[-1]]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": part_lr, "weight_decay": weight_decay if decay else 0.0,
                               "name": f"{part}/{'decay' if decay else 'no_decay'}"})
    return groups


def make_optimizer(model: MultiTaskModel, lr: float, layer_decay: float = 1.0, head_lr: float | None = None,
                   weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW over `param_groups`. `fused` updates every tensor in one kernel instead of looping over the
    ~100 tensors one by one, as the Hugging Face trainer does by default; other devices keep PyTorch's choice."""
    fused = model.device.type in ("cpu", "cuda") or None
    return torch.optim.AdamW(param_groups(model, lr, layer_decay, head_lr, weight_decay), lr=lr, fused=fused)


def logged_learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The current rates of the top encoder layer and of the heads (the other groups follow from layer_decay)."""
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    layers = [name for name in rates if name.startswith("layer.") and name.endswith("/decay")]
    top = max(layers, key=lambda name: int(name.split("/")[0].split(".")[1]))
    heads = [lr for name, lr in rates.items() if name.startswith("head:")]
    return {"top_layer": rates[top], **({"heads": heads[0]} if heads else {})}


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


# ---- sharpness-aware minimisation (Foret et al., 2021) ----------------------------------------------------


@torch.no_grad()
def sam_perturb(params: list[nn.Parameter], rho: float) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Move the weights w to w + rho * g / |g|, the worst point within rho along the gradient g, and
    return (parameter, w) pairs. The gradient taken there is what the optimizer then applies at w."""
    params = [p for p in params if p.grad is not None]
    saved = [(p, p.detach().clone()) for p in params]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    for p in params:
        p.add_(p.grad, alpha=rho / (float(norm) + 1e-12))
    return saved


@torch.no_grad()
def sam_restore(saved: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    """Back to w exactly (w + e - e is not w in floats)."""
    for p, w in saved:
        p.copy_(w)

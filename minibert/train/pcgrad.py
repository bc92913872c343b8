"""PCGrad, "gradient surgery for multi-task learning" (Yu et al., 2020).

When two tasks train in one step, their gradients on the shared encoder can point against each other
(a negative dot product): summed, each undoes part of the other. PCGrad removes the conflict before
summing. For each task i, in a random order of the other tasks j:

    if g_i . g_j < 0:   g_i <- g_i - (g_i . g_j) / |g_j|^2 * g_j

i.e. g_i loses its component along g_j, so that it no longer makes task j's loss worse to first order.
Gradients that agree (g_i . g_j >= 0) are left as they are; the update is the sum of the projected g_i.
Only the shared parameters are projected: each task's head gets gradient from its own loss alone.
"""

from __future__ import annotations

import torch
from torch import nn


def project_conflicts(grads: list[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
    """The sum of the tasks' flat gradients ``grads`` after each has been projected off the others it
    conflicts with (the others as they were, not as projected: Algorithm 1 of the paper)."""
    total = torch.zeros_like(grads[0])
    for i, g in enumerate(grads):
        g = g.clone()
        others = [j for j in range(len(grads)) if j != i]
        for k in torch.randperm(len(others), generator=generator).tolist():
            other = grads[others[k]]
            dot = torch.dot(g, other)
            if dot < 0:
                g -= dot / other.dot(other).clamp_min(1e-20) * other
        total += g  # summed as they come: one extra copy of the gradient, not one per task
    return total


def take_grads(params: list[nn.Parameter]) -> torch.Tensor:
    """The parameters' gradients as one flat float32 vector (zeros where a parameter got none), and the
    gradients cleared, so that the next task's backward pass starts from nothing."""
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])
    for p in params:
        p.grad = None
    return flat


def put_grads(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    """A flat vector back into the parameters' ``.grad``, in their dtypes."""
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).to(p.dtype).clone()
        offset += p.numel()

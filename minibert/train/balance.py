"""How much each task's loss counts in the shared encoder's update: fixed weights, or learned ones.

Fixed weights (``loss_weight`` in each task's table) must be tuned by hand: a cosine MSE and a
cross-entropy live on different scales, and pull on the encoder with very different strength.
Uncertainty weighting (Kendall, Gal and Cipolla, 2018) learns the balance instead. Each task i gets a
learned log-variance s_i, and its loss L_i enters the objective as

    exp(-s_i) * L_i + s_i

The first term lets a task with a large, noisy loss count less; the second stops s_i from growing
without end. For a fixed L_i the objective is lowest at s_i = log L_i, so as the s_i settle each task's
learned weight exp(-s_i) approaches 1 / L_i: every loss is brought to the same scale, whatever its units.
(Kendall et al. write 1/(2 sigma^2) for regression and 1/sigma^2 for classification; the form above,
with s = log sigma^2, is the one most implementations use for every task.)

The trainer backpropagates loss_weight_i * exp(-s_i) * L_i through the model, with exp(-s_i) held constant
(``loss_weight`` stays a prior on top of the learned balance), and gives s_i its gradient of the objective
above from the step's loss over every process, 1 - exp(-s_i) * L_i, so that DDP processes agree on it
without another all-reduce.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BALANCES = ("fixed", "uncertainty")


class FixedWeights(nn.Module):
    """Each task's loss as configured (``loss_weight``); nothing is learned."""

    def scale(self, task: int) -> float:
        return 1.0

    def learn_from(self, losses: dict[int, float]) -> None:
        pass

    def weights(self, names: list[str]) -> dict[str, float]:
        return {}


class UncertaintyWeights(nn.Module):
    """One learned log-variance per task (a parameter each, so that a step that does not train a task
    leaves its s untouched: AdamW skips a parameter without a gradient)."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.log_vars = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in range(num_tasks)])

    def scale(self, task: int) -> float:
        """exp(-s_task): the factor on the task's loss in this step's backward pass."""
        return math.exp(-self.log_vars[task].item())

    def objective(self, losses: dict[int, torch.Tensor]) -> torch.Tensor:
        """sum of exp(-s_i) * L_i + s_i over the tasks of a step (for reading and for tests: the trainer
        applies its two gradients separately, see the module docstring)."""
        return sum(torch.exp(-self.log_vars[i]) * loss + self.log_vars[i] for i, loss in losses.items())

    def learn_from(self, losses: dict[int, float]) -> None:
        """Set each trained task's d/ds_i of the objective, 1 - exp(-s_i) * L_i, for the optimizer to apply."""
        for i, loss in losses.items():
            s = self.log_vars[i]
            s.grad = (1.0 - torch.exp(-s.detach()) * loss).reshape(s.shape)

    def weights(self, names: list[str]) -> dict[str, float]:
        """Each task's current effective weight exp(-s_i), for the log."""
        return {name: self.scale(i) for i, name in enumerate(names)}


def make_balance(kind: str, num_tasks: int) -> FixedWeights | UncertaintyWeights:
    if kind == "fixed":
        return FixedWeights()
    if kind == "uncertainty":
        return UncertaintyWeights(num_tasks)
    raise ValueError(f"optim.loss_balance must be one of {BALANCES}, got {kind!r}")

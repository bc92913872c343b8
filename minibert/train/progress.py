"""What a training run reports between two log lines: its speed, each task's mean loss, and how often clipping
cut the gradient (while it does, a step's single task's ``loss_weight`` changes nothing: the direction is the
same, and the norm is cut to ``max_grad_norm``)."""

from __future__ import annotations

import time

import numpy as np


class LogWindow:
    """The steps since the last log line: examples, real tokens (padding not counted), each task's losses,
    the gradient norms before clipping at ``max_grad_norm``, and the time they took."""

    def __init__(self, max_grad_norm: float = float("inf")) -> None:
        self.samples, self.tokens, self.losses, self.grad_norms = 0, 0, {}, []
        self.max_grad_norm = max_grad_norm
        self.start = time.perf_counter()

    def add(self, step: dict) -> None:
        """One step's record (``Trainer.train_step``); with the loss of each task it trained."""
        self.samples += step["samples"]
        self.tokens += step["tokens"]
        for task, loss in step["loss"].items():
            self.losses.setdefault(task, []).append(loss)
        if step["loss"]:  # a step that trained something (and so has a gradient norm)
            self.grad_norms.append(step["grad_norm"])

    def summary(self) -> dict:
        seconds = time.perf_counter() - self.start
        norms = np.array(self.grad_norms)
        clipping = {"grad_norm": float(norms.mean()), "clipped": float((norms > self.max_grad_norm).mean())} \
            if len(norms) else {}
        return {"loss": {task: float(np.mean(v)) for task, v in self.losses.items()},
                "samples_per_s": self.samples / seconds, "tokens_per_s": self.tokens / seconds, **clipping}

"""What a training run reports between two log lines: its speed and each task's mean loss."""

from __future__ import annotations

import time

import numpy as np


class LogWindow:
    """The steps since the last log line: examples, real tokens (padding not counted), each task's losses,
    and the time they took."""

    def __init__(self) -> None:
        self.samples, self.tokens, self.losses = 0, 0, {}
        self.start = time.perf_counter()

    def add(self, step: dict) -> None:
        """One step's record (``Trainer.train_step``); with the loss of each task it trained."""
        self.samples += step["samples"]
        self.tokens += step["tokens"]
        for task, loss in step["loss"].items():
            self.losses.setdefault(task, []).append(loss)

    def summary(self) -> dict:
        seconds = time.perf_counter() - self.start
        return {"loss": {task: float(np.mean(v)) for task, v in self.losses.items()},
                "samples_per_s": self.samples / seconds, "tokens_per_s": self.tokens / seconds}

"""Multi-task fine-tuning: configuration, batches, optimisation, evaluation, checkpoints, the training loop."""

from minibert.train.config import TaskConfig, TrainConfig
from minibert.train.config_file import load_config
from minibert.train.evaluate import evaluate_task
from minibert.train.trainer import Trainer, train

__all__ = ["TaskConfig", "TrainConfig", "Trainer", "evaluate_task", "load_config", "train"]

"""The multi-task training loop.

Each optimizer step (``step.py``) trains one task, or ``sampling.tasks_per_step`` of them (chosen by the
sampling strategy), on ``batch_size`` examples each, split over processes (DDP) and accumulation
micro-batches. Around the steps: the data, the model and its execution path, the optimizer and the
learning-rate schedule, freezing, dev evaluation, the best checkpoint, and an atomic training checkpoint
that ``resume=True`` continues from exactly.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from minibert.multitask import MultiTaskModel
from minibert.paths import check_path, convert, default_path
from minibert.paths.choices import kernel_choices, use_kernel_choices
from minibert.tokenizer import TruncationWarning
from minibert.train import checkpoint, optim
from minibert.train.balance import make_balance
from minibert.train.batches import StepBatches, log_truncation, read_tasks, step_loader
from minibert.train.config import TrainConfig
from minibert.train.distill import EmbeddingTeacher, TaskTeacher
from minibert.train.distributed import init_distributed, pick_device, replicas_identical
from minibert.train.evaluate import evaluate_sets, selection_score
from minibert.train.progress import LogWindow
from minibert.train.step import OptimizerStep

log = logging.getLogger("minibert.train")
CHECKPOINT = "checkpoint.pt"


class Trainer(OptimizerStep):
    """A run in four steps, each its own method: the data, the model, the optimizer, and (``resume``) the
    state of a killed run. Then ``fit`` trains, one ``train_step`` (``OptimizerStep``) at a time."""

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        self.config = cfg = config
        self.device = pick_device(cfg.runtime.device)
        self.rank, self.world = init_distributed(self.device)
        self.out = Path(cfg.output_dir)
        if cfg.batch_size % (self.world * cfg.optim.grad_accum):
            raise ValueError(f"batch_size {cfg.batch_size} must divide into {self.world} processes x "
                             f"{cfg.optim.grad_accum} accumulation steps")
        if cfg.runtime.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("runtime.precision fp16 needs CUDA (use bf16 on the CPU)")
        self.path = default_path(self.device) if cfg.runtime.path == "auto" else cfg.runtime.path
        check_path(self.path, self.device, torch.float32, training=True)
        cfg.runtime.path = self.path  # saved as it ran: "auto" would be read as a later version's default
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        tasks = self.setup_data()
        self.setup_model(tasks)
        self.setup_optimizer()
        self.step, self.best = 0, None
        if resume:
            self.load_checkpoint()
        else:
            self.pin_kernels(None)
            if self.rank == 0:
                cfg.save(self.out / "config.json")
                (self.out / "metrics.jsonl").write_text("")
        self.apply_freezing()

    def check_encoder_grads(self) -> None:
        """An ``encoder_grad`` below 1 that could change nothing is an error, not a silent no-op."""
        for t in self.config.tasks:
            if t.encoder_grad < 1 and "encoder" in self.config.encoder.freeze:
                raise ValueError(f"task {t.name!r}: encoder_grad = {t.encoder_grad} with encoder.freeze = "
                                 "['encoder']: the encoder takes no gradient to scale")
            if t.encoder_grad == 0 and not list(self.model.heads[t.name].parameters()):
                raise ValueError(f"task {t.name!r}: encoder_grad = 0, and a {t.type} task has no head weights "
                                 "(nor an adapter): it would train nothing")

    def setup_data(self) -> list:
        """Every task's examples (each process reads every file and later takes its share of each batch),
        and the tasks."""
        tasks, self.train_sets, self.dev_sets, self.test_sets = read_tasks(self.config)
        self.names = [t.name for t in self.config.tasks]
        self.loss_weights = [t.loss_weight for t in self.config.tasks]
        self.encoder_grads = {t.name: t.encoder_grad for t in self.config.tasks}
        return tasks

    def setup_model(self, tasks: list) -> None:
        """The encoder (pretrained, or random with ``init = "random"``) and fresh heads, the same weights in
        every process; heads from a saved model (``heads_from``); then the execution path, the dropout and
        the token limit. Saved folders keep the Hugging Face layout whatever the path."""
        cfg, enc = self.config, self.config.encoder
        self.model = MultiTaskModel.from_encoder(cfg.model, tasks, seed=cfg.seed, pooling=enc.pooling,
                                                 device=self.device, random_encoder=enc.init == "random",
                                                 attn_implementation=cfg.runtime.attn_implementation, path="reference")
        if enc.init == "random":
            log.warning("encoder.init = random: the encoder's pretrained weights were replaced by random ones")
        if enc.heads_from:
            loaded = self.model.transfer_heads(enc.heads_from)
            if not loaded:
                raise ValueError(f"encoder.heads_from = {enc.heads_from}: it has no head for any of this run's tasks")
            log.info("heads from %s: %s; fresh: %s", enc.heads_from, ", ".join(loaded),
                     ", ".join(n for n in self.model.tasks if n not in loaded) or "none")
        # CUDA graphs (compiled path) replay one recorded run: accumulated micro-batches would each start a
        # new one, overwriting the last one's gradients.
        self.model.encoder.bert = convert(self.model.encoder.bert, self.path, cuda_graphs=cfg.optim.grad_accum == 1)
        log.info("execution path: %s", self.path)
        checkpoint.seed_everything(cfg.seed + self.rank)  # then dropout masks differ between replicas, as they should
        if enc.max_seq_length:
            self.model.encoder.tokenizer.max_length = enc.max_seq_length
        if enc.dropout is not None:
            self.model.encoder.bert.set_dropout(enc.dropout)
            for head in self.model.heads.values():  # a task's own top layers (minibert.branch) are encoder layers
                if hasattr(head, "branch"):
                    head.branch.set_dropout(enc.dropout)
        self.check_encoder_grads()
        self.teacher = EmbeddingTeacher(cfg.optim.distill_from, self.model.encoder, self.path) \
            if cfg.optim.distill_from else None
        self.task_teachers = {t.name: TaskTeacher(t.teacher, self.model.task(t.name), self.model, self.path,
                                                  held=t.teacher_gold)
                              for t in cfg.tasks if t.teacher}
        self.batches = StepBatches(list(self.model.tasks.values()), self.train_sets, self.model.encoder.tokenizer, cfg,
                                   self.rank, self.world)
        if self.rank == 0:
            log_truncation(self.model.tasks.values(), self.train_sets, self.model.encoder.tokenizer)

    def measures_kernels(self) -> bool:
        """Only the fast path on the CPU chooses its kernels by timing them."""
        return self.device.type == "cpu" and self.path == "fast"

    def pin_kernels(self, saved: dict[str, str] | None) -> None:
        """The fast path's CPU kernels, fixed for the whole run (``minibert.paths.kernels``): each process
        measures its own, and two may choose differently, which rounds differently. So a resumed run takes the
        ones its checkpoint's run measured, and every DDP rank takes rank 0's."""
        self.kernels = {}
        if not self.measures_kernels():
            return
        if saved is None:  # the dtypes the run computes in: its models' (a folder may name one), and autocast's
            models = [self.model] + ([self.teacher.encoder] if self.teacher else []) \
                + [t.model for t in self.task_teachers.values()]
            dtypes = {p.dtype for m in models for p in m.parameters()} | {torch.float32}
            dtypes |= {torch.bfloat16} if self.config.runtime.precision == "bf16" else set()
            chosen = [kernel_choices(dtypes) if self.rank == 0 else None]
            if self.world > 1:
                dist.broadcast_object_list(chosen, src=0)
            saved = chosen[0]
        use_kernel_choices(saved)
        self.kernels = saved
        if self.rank == 0:
            log.info("CPU kernels: %s", ", ".join(f"{k} {v}" for k, v in saved.items()))

    def setup_optimizer(self) -> None:
        """AdamW over parameter groups (layer-wise rates, no decay on biases and norms), the schedule, and
        the gradient scaler that fp16 needs."""
        cfg, opt = self.config, self.config.optim
        self.optimizer = optim.make_optimizer(self.model, opt.lr, opt.layer_decay, opt.head_lr, opt.weight_decay)
        self.balance = make_balance(opt.loss_balance, len(self.names)).to(self.device)
        if list(self.balance.parameters()):
            self.optimizer.add_param_group({"params": list(self.balance.parameters()), "lr": opt.balance_lr,
                                            "weight_decay": 0.0, "name": "balance"})
        self.scheduler = optim.make_scheduler(self.optimizer, cfg.steps, cfg.schedule.warmup_ratio, cfg.schedule.shape)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.runtime.precision == "fp16")

    # ---- freezing and the DDP wrapper ------------------------------------------------------------

    def apply_freezing(self) -> None:
        """The permanent freezes, plus the whole encoder while step < freeze_encoder_steps. DDP only
        tracks parameters that require gradients when it is built, so it is rebuilt on every change."""
        cfg = self.config
        optim.unfreeze(self.model, "encoder", "heads")
        self.frozen_encoder = self.step < cfg.encoder.freeze_encoder_steps
        if self.frozen_encoder:
            optim.freeze(self.model, "encoder")
        optim.freeze(self.model, *cfg.encoder.freeze)
        self.ddp = DistributedDataParallel(self.model, find_unused_parameters=True,
                                           device_ids=[self.device.index] if self.device.type == "cuda" else None) \
            if self.world > 1 else None

    # ---- evaluation, checkpoints, logging --------------------------------------------------------

    def log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def stateful(self) -> dict:
        """Everything a step depends on but the RNG states: weights, optimizer, schedule, scaler, learned
        loss weights. The data position is the step itself (see batches.py)."""
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler,
                "balance": self.balance}

    def save_checkpoint(self) -> None:
        rngs = checkpoint.rng_states_of_all(self.world)
        if self.rank == 0:
            checkpoint.atomic_save({"step": self.step, **{k: v.state_dict() for k, v in self.stateful().items()},
                                    "rng": rngs, "best": self.best, "config": self.config.to_dict(),
                                    "world": self.world, "kernels": self.kernels}, self.out / CHECKPOINT)

    def load_checkpoint(self) -> None:
        path = self.out / CHECKPOINT
        state = checkpoint.load_training_state(path, self.config.to_dict(), self.world)
        for key, part in self.stateful().items():  # a checkpoint from before learned weights has no "balance"
            part.load_state_dict(state.get(key, {}) if key == "balance" else state[key])
        checkpoint.set_rng_state(state["rng"][self.rank])
        if "kernels" not in state and self.measures_kernels():
            log.warning("%s predates saved kernel choices: they are measured again, and the resumed run may "
                        "differ from the killed one in the last bits", path)
        try:
            self.pin_kernels(state.get("kernels"))
        except ValueError as e:
            raise ValueError(f"--resume: {path}: {e}") from e
        self.step, self.best = state["step"], state["best"]
        if self.rank == 0:
            checkpoint.forget_log_after(self.out / "metrics.jsonl", self.step, finished=self.step == self.config.steps)
        log.info("resumed from %s at step %d", path, self.step)

    def maybe_evaluate(self) -> None:
        if not self.dev_sets:
            return
        if self.rank == 0:
            metrics = evaluate_sets(self.model, self.dev_sets, self.config.eval.batch_size)
            self.log({"step": self.step, "dev": metrics})
            score = selection_score(metrics, self.config.eval.best_metric)
            if self.best is None or score > self.best["score"]:
                self.best = {"score": score, "step": self.step, "metrics": metrics}
                checkpoint.replace_folder(self.model.save, self.out / "best")
            log.info("step %d dev %s", self.step, json.dumps(metrics))
        if self.world > 1:
            best = [self.best]
            dist.broadcast_object_list(best, src=0)
            self.best = best[0]

    # ---- the loop --------------------------------------------------------------------------------

    def fit(self) -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)  # counted once per task in __init__
            return self._fit()

    def _fit(self) -> dict:
        cfg = self.config
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, disable=self.rank != 0, desc="train", unit="step")
        window = LogWindow(cfg.optim.max_grad_norm)
        loader = step_loader(self.batches, self.step, cfg.runtime.num_workers, pin_memory=self.device.type == "cuda")
        for item in loader:
            window.add(self.train_step(item))
            bar.update(1)
            if self.step % cfg.output.log_every == 0 or self.step == cfg.steps:
                summary = window.summary()
                weights = self.balance.weights(self.names)
                self.log({"step": self.step, "lr": optim.logged_learning_rates(self.optimizer), **summary,
                          **({"balance": weights} if weights else {})})
                if summary["loss"]:
                    bar.set_postfix(loss=f"{np.mean(list(summary['loss'].values())):.3f}",
                                    samples_s=f"{summary['samples_per_s']:.0f}")
                window = LogWindow(cfg.optim.max_grad_norm)
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.steps:
                self.maybe_evaluate()
            if self.step % cfg.output.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        bar.close()
        self.maybe_evaluate()
        result = {"steps": self.step, "best": self.best}
        if self.rank == 0:
            checkpoint.replace_folder(self.model.save, self.out / "final")
            if self.test_sets:  # the reported number: the best checkpoint (by dev) on the test files, once
                chosen = MultiTaskModel.load(self.out / "best", device=self.device, path=self.path) \
                    if self.best else self.model
                result["test"] = evaluate_sets(chosen, self.test_sets, cfg.eval.batch_size)
                self.log({"step": self.step, "test": result["test"]})
            (self.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
            if cfg.output.plot:
                from minibert.train.plot import plot_curves

                plot_curves(self.out / "metrics.jsonl", self.out / "curves.png",
                            {name: task.main_metric for name, task in self.model.tasks.items()})
        if self.world > 1:
            identical = replicas_identical(self.model, self.world)
            self.log({"step": self.step, "replicas_identical": identical})
            if not identical:
                raise RuntimeError("DDP replicas diverged")
            dist.barrier()
        return result


def train(config: TrainConfig, resume: bool = False) -> dict:
    trainer = Trainer(config, resume=resume)
    try:
        return trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

"""The multi-task training loop.

Each optimizer step trains one task (chosen by the sampling strategy) on ``batch_size`` examples,
split over processes (DDP) and accumulation micro-batches. Around it: mixed precision, gradient
clipping, the learning-rate schedule, freezing, dev evaluation, the best checkpoint, and an atomic
training checkpoint that ``resume=True`` continues from exactly.
"""

from __future__ import annotations

import contextlib
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
from minibert.tokenizer import TruncationWarning
from minibert.train import checkpoint, optim
from minibert.train.batches import StepBatches, log_truncation, read_tasks, step_loader
from minibert.train.config import TrainConfig
from minibert.train.distributed import all_sum, init_distributed, pick_device, replicas_identical
from minibert.train.evaluate import evaluate_sets, selection_score
from minibert.train.progress import LogWindow

log = logging.getLogger("minibert.train")
CHECKPOINT = "checkpoint.pt"


class Trainer:
    """A run in four steps, each its own method: the data, the model, the optimizer, and (``resume``) the
    state of a killed run. Then ``fit`` trains."""

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
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        tasks = self.setup_data()
        self.setup_model(tasks)
        self.setup_optimizer()
        self.step, self.best = 0, None
        if resume:
            self.load_checkpoint()
        elif self.rank == 0:
            cfg.save(self.out / "config.json")
            (self.out / "metrics.jsonl").write_text("")
        self.apply_freezing()

    def setup_data(self) -> list:
        """Every task's examples (each process reads every file and later takes its share of each batch),
        and the tasks."""
        tasks, self.train_sets, self.dev_sets, self.test_sets = read_tasks(self.config)
        self.names = [t.name for t in self.config.tasks]
        self.loss_weights = [t.loss_weight for t in self.config.tasks]
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
        self.batches = StepBatches(list(self.model.tasks.values()), self.train_sets, self.model.encoder.tokenizer, cfg,
                                   self.rank, self.world)
        if self.rank == 0:
            log_truncation(self.model.tasks.values(), self.train_sets, self.model.encoder.tokenizer)

    def setup_optimizer(self) -> None:
        """AdamW over parameter groups (layer-wise rates, no decay on biases and norms), the schedule, and
        the gradient scaler that fp16 needs."""
        cfg, opt = self.config, self.config.optim
        self.optimizer = optim.make_optimizer(self.model, opt.lr, opt.layer_decay, opt.head_lr, opt.weight_decay)
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

    def autocast(self):
        if self.config.runtime.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.runtime.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ---- one optimizer step ----------------------------------------------------------------------

    def forward_backward(self, task: str, micro_batches: list[dict]) -> tuple[float, int]:
        """Gradients of the step's loss, summed over micro-batches; returns the loss of the whole batch and
        its real tokens, over every process.

        Each micro-batch's loss is weighted by its share of the step's loss terms (examples, or labelled
        word pieces for NER), over every process, so accumulation and DDP give the gradient of one loss
        averaged over the whole batch, as long as that loss is a mean of per-term losses (CoSENT and the
        pairs type compare the examples within each micro-batch; pairs gathers them across processes).
        """
        spec, model = self.model.task(task), self.ddp or self.model
        terms = [spec.loss_terms(b) for b in micro_batches]
        total_terms = all_sum([sum(terms)], self.world, self.device)[0]
        weight = self.loss_weights[self.names.index(task)]
        loss_sum, tokens = 0.0, 0
        for j, batch in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            with sync:
                with self.autocast():
                    out = model(task, batch)
                share = terms[j] * self.world / total_terms if total_terms else 0.0  # DDP averages over processes
                self.scaler.scale(out.loss * weight * share).backward()
            loss_sum += out.loss.item() * terms[j]
            tokens += int(batch["attention_mask"].sum())
        loss_sum, tokens = all_sum([loss_sum, tokens], self.world, self.device)  # each process holds its share
        return loss_sum / max(1, total_terms), int(tokens)

    def train_step(self, item: tuple[int, list[dict]] | None = None) -> dict:
        """One optimizer step on `item` (task index, micro-batches); by default the step's own batches."""
        cfg = self.config
        if self.frozen_encoder and self.step >= cfg.encoder.freeze_encoder_steps:
            self.apply_freezing()
        t, micro_batches = item if item is not None else self.batches[self.step]
        task = self.names[t]
        if not any(p.requires_grad for p in [*self.model.heads[task].parameters(), *self.model.encoder.parameters()]):
            # e.g. STS (no head weights) while the encoder is frozen: nothing to learn from this batch
            self.optimizer.step()  # a no-op without gradients; keeps the scheduler's bookkeeping in order
            self.scheduler.step()
            self.step += 1
            return {"task": task, "loss": float("nan"), "grad_norm": 0.0, "samples": 0, "tokens": 0}
        micro_batches = [{k: v.to(self.device, non_blocking=True) for k, v in b.items()} for b in micro_batches]
        (self.ddp or self.model).train()
        loss, tokens = self.forward_backward(task, micro_batches)
        if cfg.optim.sam_rho:
            saved = optim.sam_perturb(list(self.model.parameters()), cfg.optim.sam_rho)
            self.optimizer.zero_grad(set_to_none=True)
            self.forward_backward(task, micro_batches)
            optim.sam_restore(saved)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                   cfg.optim.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return {"task": task, "loss": loss, "grad_norm": float(grad_norm), "samples": cfg.batch_size,
                "tokens": tokens}

    # ---- evaluation, checkpoints, logging --------------------------------------------------------

    def log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def save_checkpoint(self) -> None:
        rngs = checkpoint.rng_states_of_all(self.world)
        if self.rank != 0:
            return
        checkpoint.atomic_save({
            "step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rngs,
            "best": self.best, "config": self.config.to_dict(), "world": self.world,
        }, self.out / CHECKPOINT)

    def load_checkpoint(self) -> None:
        """Everything a step depends on: weights, optimizer, schedule, scaler and RNG states. The data
        position is the step itself (see batches.py)."""
        path = self.out / CHECKPOINT
        state = checkpoint.load_training_state(path, self.config.to_dict(), self.world)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"][self.rank])
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
        window = LogWindow()
        loader = step_loader(self.batches, self.step, cfg.runtime.num_workers, pin_memory=self.device.type == "cuda")
        for item in loader:
            window.add(self.train_step(item))
            bar.update(1)
            if self.step % cfg.output.log_every == 0 or self.step == cfg.steps:
                summary = window.summary()
                self.log({"step": self.step, "lr": optim.logged_learning_rates(self.optimizer), **summary})
                if summary["loss"]:
                    bar.set_postfix(loss=f"{np.mean(list(summary['loss'].values())):.3f}",
                                    samples_s=f"{summary['samples_per_s']:.0f}")
                window = LogWindow()
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

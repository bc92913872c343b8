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
import os
import random
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from minibert.multitask import MultiTaskModel
from minibert.tokenizer import TruncationWarning
from minibert.train.config import TrainConfig, changed_keys
from minibert.train.evaluate import evaluate_task, main_metric
from minibert.train.optim import make_optimizer, make_scheduler
from minibert.train.tasks import (
    TaskStream,
    infer_labels,
    load_task_data,
    read_split,
    task_for_step,
    task_probabilities,
    task_spec,
    to_batch,
)

log = logging.getLogger("minibert.train")
CHECKPOINT = "checkpoint.pt"


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); starts the process group when torchrun launched us. NCCL for GPUs, gloo
    for the CPU, whatever else the machine has (a CPU run on a GPU machine still talks over gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return int(os.environ.get("RANK", "0")), world


def pick_device(name: str) -> torch.device:
    """The configured device; "auto" and "cuda" mean this process's GPU, cuda:LOCAL_RANK under torchrun."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process LOCAL_RANK={local_rank} needs GPU {local_rank}, but this machine has "
                             f"{torch.cuda.device_count()}; start fewer processes or set device=cpu")
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill mid-write leaves the old checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def replace_folder(save, target: Path) -> None:
    """Write a model folder next to `target`, then swap it in."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    old = target.with_name(target.name + ".old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        self.config = cfg = config
        self.device = pick_device(cfg.device)
        self.rank, self.world = init_distributed(self.device)
        self.out = Path(cfg.output_dir)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        if cfg.batch_size % (self.world * cfg.grad_accum):
            raise ValueError(f"batch_size {cfg.batch_size} must divide into {self.world} processes x "
                             f"{cfg.grad_accum} accumulation steps")
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 needs CUDA (use bf16 on the CPU)")
        specs = self.load_data()
        self.model = MultiTaskModel.from_encoder(cfg.model, specs, seed=cfg.seed, device=self.device,
                                                 attn_implementation=cfg.attn_implementation)  # same heads everywhere
        random.seed(cfg.seed + self.rank)
        np.random.seed(cfg.seed + self.rank)
        torch.manual_seed(cfg.seed + self.rank)  # then dropout masks differ between replicas, as they should
        if cfg.max_seq_length:
            self.model.encoder.tokenizer.max_length = cfg.max_seq_length
        if cfg.dropout is not None:
            self.model.encoder.bert.set_dropout(cfg.dropout)
        if self.rank == 0:
            self.report_truncation()
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.layer_decay, cfg.head_lr, cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg.steps, cfg.warmup_ratio, cfg.schedule)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
        self.step, self.best = 0, None
        if resume:
            self.load_checkpoint()
        elif self.rank == 0:
            cfg.save(self.out / "config.json")
            (self.out / "metrics.jsonl").write_text("")
        self.apply_freezing()

    def load_data(self) -> list:
        """Every process reads every file and later takes its share of each global batch."""
        cfg = self.config
        self.train_sets, self.dev_sets, self.test_sets, specs = {}, {}, {}, []
        for i, task in enumerate(cfg.tasks):
            train, dev = load_task_data(task, i, cfg.seed)
            self.train_sets[task.name] = train
            if dev:
                self.dev_sets[task.name] = dev
            if task.test:
                self.test_sets[task.name] = read_split(task.type, task.test)
            specs.append(task_spec(task, task.labels or infer_labels(task, train)))
        self.names = [t.name for t in cfg.tasks]
        self.streams = [TaskStream(self.train_sets[n], seed=cfg.seed * 1000 + i) for i, n in enumerate(self.names)]
        self.probabilities = task_probabilities([len(self.train_sets[n]) for n in self.names], cfg.sampling,
                                                cfg.temperature)
        self.weights = {t.name: t.loss_weight for t in cfg.tasks}
        return specs

    def report_truncation(self) -> None:
        """How many training inputs exceed max_seq_length, said once per task instead of every batch."""
        tokenizer = self.model.encoder.tokenizer
        for name, examples in self.train_sets.items():
            batch = to_batch(self.model.spec(name).type, examples)
            fields = [(batch[k], k == "words") for k in ("texts", "a", "b", "words") if k in batch]
            long = sum(bool(e.overflowing) for texts, pretokenized in fields
                       for e in tokenizer.encode(texts, is_pretokenized=pretokenized, warn_truncation=False))
            if long:
                log.info("task %s: %d training inputs are longer than %d tokens and will be truncated",
                         name, long, tokenizer.max_length)

    # ---- freezing and the DDP wrapper ------------------------------------------------------------

    def apply_freezing(self) -> None:
        """The permanent freezes, plus the whole encoder while step < freeze_encoder_steps. DDP only
        tracks parameters that require gradients when it is built, so it is rebuilt on every change."""
        cfg = self.config
        self.model.unfreeze("encoder", "heads")
        if self.step < cfg.freeze_encoder_steps:
            self.model.freeze("encoder")
        self.model.freeze(*cfg.freeze)
        self.frozen_encoder = self.step < cfg.freeze_encoder_steps
        self.ddp = DistributedDataParallel(self.model, find_unused_parameters=True,
                                           device_ids=[self.device.index] if self.device.type == "cuda" else None) \
            if self.world > 1 else None

    def autocast(self):
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ---- one optimizer step ----------------------------------------------------------------------

    def train_step(self) -> dict:
        cfg = self.config
        if self.frozen_encoder and self.step >= cfg.freeze_encoder_steps:
            self.apply_freezing()
        t = task_for_step(self.step, len(self.names), cfg.sampling, self.probabilities, cfg.seed)
        task = self.names[t]
        examples = self.streams[t].take(cfg.batch_size)  # the global batch; every process draws the same one
        local = examples[self.rank::self.world]
        micro = len(local) // cfg.grad_accum
        if not any(p.requires_grad for p in [*self.model.heads[task].parameters(), *self.model.encoder.parameters()]):
            # e.g. STS (no head weights) while the encoder is frozen: nothing to learn from this batch
            self.optimizer.step()  # a no-op without gradients; keeps the scheduler's bookkeeping in order
            self.scheduler.step()
            self.step += 1
            return {"task": task, "loss": float("nan"), "grad_norm": 0.0, "samples": 0, "tokens": 0}
        model = self.ddp or self.model
        model.train()

        def forward_backward() -> tuple[float, int]:
            total_loss, tokens = 0.0, 0
            for j in range(cfg.grad_accum):
                chunk = local[j * micro:(j + 1) * micro]
                last = j == cfg.grad_accum - 1
                sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
                with sync:
                    with self.autocast():
                        out = model(task, to_batch(self.model.spec(task).type, chunk))
                    loss = out.loss * self.weights[task] / cfg.grad_accum
                    self.scaler.scale(loss).backward()
                total_loss += loss.item()
                tokens += out.num_tokens
            return total_loss, tokens

        total_loss, tokens = forward_backward()
        if cfg.sam_rho:
            # Sharpness-aware minimisation: step to the worst point within rho of the weights (along the
            # gradient), take the gradient there, come back, and let the optimizer use that gradient.
            params = [p for p in self.model.parameters() if p.grad is not None]
            with torch.no_grad():
                weights = [p.detach().clone() for p in params]
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
                for p in params:
                    p.add_(p.grad, alpha=cfg.sam_rho / (float(norm) + 1e-12))
            self.optimizer.zero_grad(set_to_none=True)
            forward_backward()
            with torch.no_grad():
                for p, w in zip(params, weights, strict=True):
                    p.copy_(w)  # back to w exactly (w + e - e is not w in floats)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                   cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return {"task": task, "loss": total_loss / self.weights[task] if self.weights[task] else total_loss,
                "grad_norm": float(grad_norm), "samples": len(examples), "tokens": tokens * self.world}

    # ---- evaluation, checkpoints, logging --------------------------------------------------------

    def evaluate(self, sets: dict[str, list], model: MultiTaskModel | None = None) -> dict:
        model = model or self.model
        metrics = {name: evaluate_task(model, name, examples, self.config.eval_batch_size)
                   for name, examples in sets.items()}
        mains = [main_metric(model, name, m) for name, m in metrics.items()]
        if mains:
            metrics["mean"] = float(np.mean(mains))
        return metrics

    def selection_score(self, metrics: dict) -> float:
        key = self.config.best_metric
        if key == "mean":
            return metrics["mean"]
        task, _, metric = key.partition("/")
        if task not in metrics or metric not in metrics[task]:
            raise ValueError(f"best_metric {key!r} is not among the dev metrics {sorted(metrics)}")
        return metrics[task][metric]

    def log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def save_checkpoint(self) -> None:
        rng = rng_state()
        rngs = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(rngs, rng)
        else:
            rngs = [rng]
        if self.rank != 0:
            return
        atomic_save({
            "step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "streams": [s.state() for s in self.streams], "rng": rngs, "best": self.best,
            "config": self.config.to_dict(), "world": self.world,
        }, self.out / CHECKPOINT)

    def load_checkpoint(self) -> None:
        path = self.out / CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        # Our own file. Loaded onto the CPU: the RNG states must stay CPU byte tensors, and
        # load_state_dict copies the rest onto the devices of the parameters they belong to.
        state = torch.load(path, map_location="cpu", weights_only=False)
        saved, now = state["config"], self.config.to_dict()
        changed = changed_keys(saved, now)
        if changed:
            raise ValueError(f"--resume: {path} was written with a different configuration (changed: {changed})")
        if state["world"] != self.world:
            raise ValueError(f"--resume: {path} was written by {state['world']} processes, now {self.world}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for stream, s in zip(self.streams, state["streams"], strict=True):
            stream.load_state(s)
        set_rng_state(state["rng"][self.rank])
        self.step, self.best = state["step"], state["best"]
        if self.rank == 0:  # forget log lines written after the checkpoint: they will be written again
            log_path = self.out / "metrics.jsonl"
            lines = log_path.read_text().splitlines() if log_path.exists() else []
            kept = [line for line in lines if json.loads(line).get("step", 0) <= self.step]
            log_path.write_text("".join(line + "\n" for line in kept))
        log.info("resumed from %s at step %d", path, self.step)

    def maybe_evaluate(self) -> None:
        if not self.dev_sets:
            return
        if self.rank == 0:
            metrics = self.evaluate(self.dev_sets)
            self.log({"step": self.step, "dev": metrics})
            score = self.selection_score(metrics)
            if self.best is None or score > self.best["score"]:
                self.best = {"score": score, "step": self.step, "metrics": metrics}
                replace_folder(self.model.save, self.out / "best")
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
        window = {"samples": 0, "tokens": 0, "start": time.perf_counter(), "losses": {}}
        while self.step < cfg.steps:
            record = self.train_step()
            window["samples"] += record["samples"]
            window["tokens"] += record["tokens"]
            if record["samples"]:
                window["losses"].setdefault(record["task"], []).append(record["loss"])
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                seconds = time.perf_counter() - window["start"]
                rates = {"samples_per_s": window["samples"] / seconds, "tokens_per_s": window["tokens"] / seconds}
                losses = {t: float(np.mean(v)) for t, v in window["losses"].items()}
                self.log({"step": self.step, "lr": self.scheduler.get_last_lr()[0], "loss": losses, **rates})
                if losses:
                    bar.set_postfix(loss=f"{np.mean(list(losses.values())):.3f}",
                                    samples_s=f"{rates['samples_per_s']:.0f}")
                window = {"samples": 0, "tokens": 0, "start": time.perf_counter(), "losses": {}}
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self.maybe_evaluate()
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        bar.close()
        self.maybe_evaluate()
        result = {"steps": self.step, "best": self.best}
        if self.rank == 0:
            replace_folder(self.model.save, self.out / "final")
            if self.test_sets:  # the reported number: the best checkpoint (by dev) on the test files, once
                chosen = MultiTaskModel.load(self.out / "best", device=self.device) if self.best else self.model
                result["test"] = self.evaluate(self.test_sets, chosen)
                self.log({"step": self.step, "test": result["test"]})
            (self.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
            if cfg.plot:
                from minibert.train.plot import plot_curves

                plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")
        if self.world > 1:
            self.check_replicas()
            dist.barrier()
        return result

    def check_replicas(self) -> None:
        """After DDP training every replica must hold the same weights: compare checksums."""
        sums = torch.stack([p.detach().double().sum().cpu() for p in self.model.parameters()])
        gathered = [torch.zeros_like(sums) for _ in range(self.world)]
        dist.all_gather(gathered, sums)
        identical = all(torch.equal(gathered[0], g) for g in gathered[1:])
        self.log({"step": self.step, "replicas_identical": identical})
        if not identical:
            raise RuntimeError("DDP replicas diverged")


def train(config: TrainConfig, resume: bool = False) -> dict:
    trainer = Trainer(config, resume=resume)
    try:
        return trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

"""One optimizer step of the training loop: the gradients of the step's tasks, then the update.

Each task's batch goes forward and backward in micro-batches (accumulation), each process holding its
share (DDP); the loss is weighted (``loss_weight``, and the learned balance of ``balance.py``), a
distillation term may join it (``distill.py``; it reads the embedding the task's head reads, or the
shared encoder's own: ``optim.distill_at``), a task's own teacher may mix its predictions into the
targets (``distill.py``), the whole reaches the encoder scaled by
the task's ``encoder_grad`` (``minibert.adapter``), and the tasks' gradients on the encoder are summed, or
first freed of their conflicts (``pcgrad.py``). Then sharpness-aware minimisation when asked, unscaling
(fp16), clipping, the optimizer and the schedule. ``OptimizerStep`` is the part of ``Trainer`` that
does this; the trainer builds every object it reads (model, DDP wrapper, optimizer, scaler, teacher).
"""

from __future__ import annotations

import contextlib

import torch

from minibert.multitask import to_device
from minibert.train import optim, pcgrad
from minibert.train.distributed import all_sum


class OptimizerStep:
    """``train_step`` and its parts, mixed into ``Trainer``."""

    def autocast(self):
        if self.config.runtime.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.runtime.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def forward_backward(self, task: str, micro_batches: list[dict], weight: float) -> tuple[float, int]:
        """Gradients of one task's loss times ``weight``, summed over micro-batches; returns the loss of
        the task's whole batch and its real tokens, over every process.

        Each micro-batch's loss is weighted by its share of the batch's loss terms (examples, or labelled
        word pieces for NER), over every process, so accumulation and DDP give the gradient of one loss
        averaged over the whole batch, as long as that loss is a mean of per-term losses (CoSENT and the
        pairs type compare the examples within each micro-batch; pairs gathers them across processes).
        The distillation term (``distill.py``), a mean over input rows, is weighted by its share of the rows;
        it is part of the task's gradient (under PCGrad it is projected with it). A task with a teacher of its
        own trains on the mix of gold labels and the teacher's predictions: that is the loss returned, logged
        and weighed by the learned balance.
        """
        spec, model = self.model.task(task), self.ddp or self.model
        terms = [spec.loss_terms(b) for b in micro_batches]
        rows = [len(b["input_ids"]) for b in micro_batches]  # the distillation term averages over input rows
        total_terms, total_rows = all_sum([sum(terms), sum(rows)], self.world, self.device)
        loss_sum, tokens = 0.0, 0
        for j, batch in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            with sync:
                with self.autocast():
                    at_encoder = self.teacher is not None and self.config.optim.distill_at == "encoder"
                    out = model(task, batch, self.encoder_grads[task], at_encoder)
                    distance = 0.0
                    if self.teacher is not None:  # optim.distill_at: the head's embedding, or the encoder's
                        distance = self.teacher.loss(out.encoder_embedding if at_encoder else out.embedding, batch)
                    loss = out.loss  # the gold labels' loss, or the mix with a teacher's predictions
                    if task in self.task_teachers:
                        loss = self.task_teachers[task].loss(out.logits, batch, self.step, self.config.steps)
                share = terms[j] * self.world / total_terms if total_terms else 0.0  # DDP averages over processes
                distill = self.config.optim.distill_weight * rows[j] * self.world / total_rows
                self.scaler.scale(loss * weight * share + distance * distill).backward()
            loss_sum += loss.item() * terms[j]  # what was trained on (the learned balance weights it)
            tokens += int(batch["attention_mask"].sum())
        loss_sum, tokens = all_sum([loss_sum, tokens], self.world, self.device)  # each process holds its share
        return loss_sum / max(1, total_terms), int(tokens)

    def step_gradients(self, tasks: list[int], batches: list[list[dict]]) -> tuple[dict[int, float], int]:
        """The gradients of one step: each task's loss (times its loss_weight and, when learned, its
        balance weight) backpropagated in turn. With PCGrad the shared encoder's gradient of each task is
        kept apart, and the conflicts between them are projected away before they are summed. Returns
        each task's loss (its whole batch, over every process) and the real tokens."""
        shared = [p for p in self.model.encoder.parameters() if p.requires_grad] if self.config.optim.pcgrad else []
        losses, tokens, grads = {}, 0, []
        for t, micro_batches in zip(tasks, batches, strict=True):
            weight = self.loss_weights[t] * self.balance.scale(t)
            losses[t], n = self.forward_backward(self.names[t], micro_batches, weight)
            tokens += n
            if shared:
                grads.append(pcgrad.take_grads(shared))
        if shared:  # the order of the projections: a function of the seed and the step, the same in every process
            order = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step)
            pcgrad.put_grads(shared, pcgrad.project_conflicts(grads, order))
        return losses, tokens

    def trains_anything(self, t: int) -> bool:
        return any(p.requires_grad for p in [*self.model.heads[self.names[t]].parameters(),
                                             *self.model.encoder.parameters()])

    def train_step(self, item: tuple[tuple[int, ...], list[list[dict]]] | None = None) -> dict:
        """One optimizer step on `item` (the step's tasks, each with its micro-batches); by default the
        step's own batches."""
        cfg = self.config
        if self.frozen_encoder and self.step >= cfg.encoder.freeze_encoder_steps:
            self.apply_freezing()
        tasks, batches = item if item is not None else self.batches[self.step]
        # e.g. STS (no head weights) while the encoder is frozen: nothing to learn from that batch
        kept = [(t, b) for t, b in zip(tasks, batches, strict=True) if self.trains_anything(t)]
        if not kept:
            self.optimizer.step()  # a no-op without gradients; keeps the scheduler's bookkeeping in order
            self.scheduler.step()
            self.step += 1
            return {"loss": {}, "grad_norm": 0.0, "samples": 0, "tokens": 0}
        tasks = [t for t, _ in kept]
        batches = [[to_device(b, self.device) for b in micro] for _, micro in kept]
        (self.ddp or self.model).train()
        losses, tokens = self.step_gradients(tasks, batches)
        if cfg.optim.sam_rho:
            saved = optim.sam_perturb(list(self.model.parameters()), cfg.optim.sam_rho)
            self.optimizer.zero_grad(set_to_none=True)
            self.step_gradients(tasks, batches)
            optim.sam_restore(saved)
        self.scaler.unscale_(self.optimizer)
        self.balance.learn_from(losses)  # after unscaling: these gradients never went through the scaler
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                   cfg.optim.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return {"loss": {self.names[t]: loss for t, loss in losses.items()}, "grad_norm": float(grad_norm),
                "samples": cfg.batch_size * len(tasks), "tokens": tokens}

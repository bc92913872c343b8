"""The multi-task methods of the trainer, each against a case worked out by hand: PCGrad's projection,
uncertainty weighting's objective and learned log-variances, annealed sampling; then their wiring into
a training step. (Kill-and-resume and DDP with the methods on are in test_training.py.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from minibert.train import load_config
from minibert.train.balance import UncertaintyWeights
from minibert.train.batches import task_probabilities, task_schedule, tasks_for_step, temperature_at
from minibert.train.config import TrainConfig
from minibert.train.pcgrad import project_conflicts, put_grads, take_grads

from conftest import tiny_config

# ---- PCGrad ----------------------------------------------------------------------------------------


def test_pcgrad_removes_the_conflicting_components():
    # g1 . g2 = -1 < 0: g1 loses (g1.g2)/|g2|^2 g2 = -1/2 (-1, 1), g2 loses (g2.g1)/|g1|^2 g1 = -(1, 0)
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    torch.testing.assert_close(project_conflicts([g1, g2]), torch.tensor([0.5, 0.5]) + torch.tensor([0.0, 1.0]))
    # after the projection neither gradient works against the other
    assert torch.dot(torch.tensor([0.5, 0.5]), g2) == 0 and torch.dot(torch.tensor([0.0, 1.0]), g1) == 0


def test_pcgrad_leaves_agreeing_gradients_alone():
    g1, g2 = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([1.0, 1.0, -0.5])  # dot = 0: no conflict
    torch.testing.assert_close(project_conflicts([g1, g2]), g1 + g2)


def test_pcgrad_with_three_tasks_follows_the_drawn_order():
    g = [torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]), torch.tensor([-1.0, -1.0])]

    def by_hand(orders: list[list[int]]) -> torch.Tensor:  # orders[i]: the other tasks in the order g_i meets them
        total = torch.zeros(2)
        for i, order in enumerate(orders):
            p = g[i].clone()
            for j in order:
                if torch.dot(p, g[j]) < 0:
                    p = p - torch.dot(p, g[j]) / torch.dot(g[j], g[j]) * g[j]
            total += p
        return total

    seen = set()
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        # the draws the function makes: one permutation of the two others, per task in turn
        replay = torch.Generator().manual_seed(seed)
        orders = []
        for i in range(3):
            others = [j for j in range(3) if j != i]
            orders.append([others[k] for k in torch.randperm(2, generator=replay).tolist()])
        torch.testing.assert_close(project_conflicts(g, generator), by_hand(orders))
        seen.add(tuple(project_conflicts(g, torch.Generator().manual_seed(seed)).tolist()))
    assert len(seen) > 1  # the order matters when three gradients conflict


def test_gradients_taken_and_put_back():
    a, b = torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4))
    a.grad = torch.arange(6.0).reshape(2, 3)
    flat = take_grads([a, b])  # b has no gradient: zeros
    assert torch.equal(flat, torch.cat([torch.arange(6.0), torch.zeros(4)])) and a.grad is None
    put_grads([a, b], flat * 2)
    assert torch.equal(a.grad, 2 * torch.arange(6.0).reshape(2, 3)) and torch.equal(b.grad, torch.zeros(4))


# ---- uncertainty weighting -------------------------------------------------------------------------


def test_uncertainty_objective_and_its_gradient():
    weights = UncertaintyWeights(2)
    with torch.no_grad():
        weights.log_vars[1].fill_(math.log(2.0))
    losses = {0: 1.0, 1: 4.0}
    objective = weights.objective({i: torch.tensor(v) for i, v in losses.items()})
    assert objective.item() == pytest.approx(1.0 + 0.0 + 4.0 / 2 + math.log(2.0))  # exp(-s) L + s, summed
    assert weights.scale(1) == pytest.approx(0.5)
    objective.backward()
    autograd = [float(p.grad) for p in weights.log_vars]
    weights.zero_grad()
    weights.learn_from(losses)  # what the trainer sets: 1 - exp(-s) L
    assert [float(p.grad) for p in weights.log_vars] == pytest.approx(autograd)
    assert autograd == pytest.approx([1 - 1.0, 1 - 4.0 / 2])


def test_learned_log_variances_settle_at_the_log_of_the_losses():
    """For fixed losses the objective is lowest at s_i = log L_i: each task's weight becomes 1 / L_i."""
    weights = UncertaintyWeights(3)
    optimizer = torch.optim.AdamW(weights.parameters(), lr=0.02, weight_decay=0.0)
    losses = {0: 0.02, 1: 1.5, 2: 1.0}
    for _ in range(3000):
        weights.learn_from(losses)
        optimizer.step()
    np.testing.assert_allclose([s.item() for s in weights.log_vars], np.log(list(losses.values())), atol=0.03)


# ---- annealed sampling -----------------------------------------------------------------------------


def test_annealed_temperature_moves_from_proportional_to_uniform():
    assert [temperature_at(s, 5, 1.0, 5.0) for s in range(5)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert temperature_at(3, 5, 2.0, None) == 2.0
    tasks = [{"name": n, "type": "classification", "train": "x.tsv"} for n in ("small", "big")]
    config = TrainConfig(tasks=tasks, steps=6000, seed=1,
                         sampling={"strategy": "temperature", "temperature": 1.0, "temperature_end": 10.0})
    schedule = [t for (t,) in task_schedule(config, [100, 900])]
    # step s samples the small task with p = 1 / (1 + 9^(1/T_s)): 0.10 at T=1, 0.445 at T=10
    p = [1 / (1 + 9 ** (1 / temperature_at(s, 6000, 1.0, 10.0))) for s in range(6000)]
    for window in (slice(0, 1000), slice(2500, 3500), slice(5000, 6000)):
        expected = np.mean(p[window])
        standard_error = math.sqrt(expected * (1 - expected) / 1000)
        assert abs(np.mean([t == 0 for t in schedule[window]]) - expected) < 4 * standard_error
    assert np.mean(p[:1000]) < 0.25 and np.mean(p[5000:]) > 0.4
    constant = TrainConfig(tasks=tasks, steps=6000, seed=1, sampling={"strategy": "temperature", "temperature": 1.0})
    assert 0.07 < np.mean([t == 0 for (t,) in task_schedule(constant, [100, 900])]) < 0.13
    with pytest.raises(ValueError, match='temperature_end is for strategy = "temperature"'):
        TrainConfig(tasks=tasks, sampling={"strategy": "proportional", "temperature_end": 4.0})


def test_one_task_a_step_draws_as_before():
    """Runs made before tasks_per_step existed draw the same tasks: the sequence of minibert 628f86f."""
    p = task_probabilities([5749, 8858, 60614, 9001, 14041], "temperature", 2.0)
    assert [t for s in range(30) for t in tasks_for_step(s, 5, "temperature", p, 42)] == [
        4, 0, 4, 2, 1, 1, 0, 2, 1, 2, 4, 4, 1, 2, 0, 4, 1, 0, 0, 0, 2, 2, 2, 3, 1, 2, 2, 4, 2, 0]


def test_settings_of_a_method_that_is_off_are_refused():
    tasks = [{"name": n, "type": "classification", "train": "x.tsv"} for n in ("a", "b")]
    with pytest.raises(ValueError, match="optim.pcgrad .* set sampling.tasks_per_step >= 2"):
        TrainConfig(tasks=tasks, optim={"pcgrad": True})
    with pytest.raises(ValueError, match="sampling.tasks_per_step = 3: the run has 2 tasks"):
        TrainConfig(tasks=tasks, sampling={"tasks_per_step": 3})
    with pytest.raises(ValueError, match="optim.loss_balance must be one of"):
        TrainConfig(tasks=tasks, optim={"loss_balance": "gradnorm"})
    with pytest.raises(ValueError, match='optim.balance_lr is for optim.loss_balance = "uncertainty"'):
        TrainConfig(tasks=tasks, optim={"balance_lr": 0.1})
    with pytest.raises(ValueError, match="optim.distill_weight needs optim.distill_from"):
        TrainConfig(tasks=tasks, optim={"distill_weight": 2.0})


# ---- in the trainer --------------------------------------------------------------------------------


def make_trainer(tiny_model_dir, tiny_data, tmp_path, **overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    from minibert.train.trainer import Trainer

    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", eval={"every": 0}, **overrides)
    (tmp_path / "c.json").write_text(json.dumps(config))
    return Trainer(load_config(tmp_path / "c.json"))


def flat_grads(params) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def test_a_pcgrad_step_projects_the_encoder_and_not_the_heads(tiny_model_dir, tiny_data, tmp_path):
    trainer = make_trainer(tiny_model_dir, tiny_data, tmp_path, steps=20, sampling={"strategy": "round_robin",
                                                                                    "tasks_per_step": 2},
                           optim={"lr": 1e-3, "pcgrad": True})
    trainer.model.train()
    encoder = list(trainer.model.encoder.parameters())
    heads = list(trainer.model.heads.parameters())
    for step in range(20):  # the first step whose two tasks' encoder gradients conflict
        tasks, batches = trainer.batches[step]
        alone = []
        for t, micro in zip(tasks, batches, strict=True):  # each task's gradients on their own
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.forward_backward(trainer.names[t], micro, trainer.loss_weights[t])
            alone.append((flat_grads(encoder), flat_grads(heads)))
        (enc_a, head_a), (enc_b, head_b) = alone
        if torch.dot(enc_a, enc_b) < 0:
            break
    assert torch.dot(enc_a, enc_b) < 0, "no step of two conflicting tasks to test on"
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.step_gradients(list(tasks), batches)
    # by hand: each loses its component along the other, then the two are summed
    expected = enc_a - enc_a.dot(enc_b) / enc_b.dot(enc_b) * enc_b + enc_b - enc_b.dot(enc_a) / enc_a.dot(enc_a) * enc_a
    torch.testing.assert_close(flat_grads(encoder), expected)
    assert not torch.allclose(expected, enc_a + enc_b)
    torch.testing.assert_close(flat_grads(heads), head_a + head_b)  # each head: its own task's gradient


def test_uncertainty_weight_multiplies_the_loss_weight(tiny_model_dir, tiny_data, tmp_path):
    """The model's gradient from task i is loss_weight_i * exp(-s_i) times the gradient of its loss alone."""
    trainer = make_trainer(tiny_model_dir, tiny_data, tmp_path, optim={"loss_balance": "uncertainty"})
    t = trainer.names.index("topic")
    trainer.loss_weights[t] = 3.0
    with torch.no_grad():
        trainer.balance.log_vars[t].fill_(math.log(2.0))
    trainer.model.train()
    batch = [trainer.model.collate("topic", topic_examples(tiny_data))]
    params = list(trainer.model.parameters())
    trainer.forward_backward("topic", batch, 1.0)
    plain = flat_grads(params)
    trainer.optimizer.zero_grad(set_to_none=True)
    losses, _ = trainer.step_gradients([t], [batch])
    torch.testing.assert_close(flat_grads(params), 3.0 * 0.5 * plain)
    trainer.balance.learn_from(losses)  # and s's own gradient: 1 - exp(-s) * L, from the loss without weights
    assert trainer.balance.log_vars[t].grad.item() == pytest.approx(1 - 0.5 * losses[t])


def topic_examples(tiny_data):
    from minibert.data import read_classification

    return read_classification(tiny_data / "topic.tsv")[:4]


def test_uncertainty_weighting_in_a_step(tiny_model_dir, tiny_data, tmp_path):
    """The first AdamW step moves each trained s_i by -lr * sign(1 - L_i) (Adam's first step is the sign of
    the gradient), and leaves the others at 0; the encoder's loss is exp(-s_i) * loss_weight * L_i."""
    trainer = make_trainer(tiny_model_dir, tiny_data, tmp_path, schedule={"warmup_ratio": 0.0, "shape": "constant"},
                           optim={"lr": 1e-3, "loss_balance": "uncertainty", "balance_lr": 0.01})
    record = trainer.train_step()
    (name, loss), = record["loss"].items()
    t = trainer.names.index(name)
    s = [p.item() for p in trainer.balance.log_vars]
    assert s[t] == pytest.approx(-0.01 * math.copysign(1.0, 1.0 - loss), rel=1e-3)
    assert all(v == 0 for i, v in enumerate(s) if i != t)
    assert trainer.balance.scale(t) == pytest.approx(math.exp(-s[t]))


# ---- distillation ----------------------------------------------------------------------------------


def test_distillation_loss_is_the_mean_cosine_distance(tiny_model_dir, tiny_data):
    from minibert.sentence import SentenceEncoder
    from minibert.train.distill import EmbeddingTeacher

    student = SentenceEncoder.from_pretrained(tiny_model_dir)
    teacher = EmbeddingTeacher(str(tiny_model_dir), student, "fast")
    batch = student.tokenizer(["A man plays a guitar.", "Stocks fell.", "It rains"]).tensors()
    same = student.features(batch["input_ids"], batch["attention_mask"]).embedding
    assert float(teacher.loss(same, batch)) == pytest.approx(0.0, abs=1e-6)
    assert float(teacher.loss(-same, batch)) == pytest.approx(2.0, abs=1e-6)  # opposite: cosine -1
    # a row at 90 degrees to the teacher's (cosine 0) adds 1 / B
    turned = same.clone()
    e = same[0] / same[0].norm()
    other = torch.randn(same.shape[1], generator=torch.Generator().manual_seed(0))
    turned[0] = other - other.dot(e) * e
    assert float(teacher.loss(turned, batch)) == pytest.approx(1 / 3, abs=1e-5)


def test_a_teacher_must_read_the_same_tokens_and_give_the_same_width(tiny_model_dir, minilm_dir, tmp_path):
    from minibert.sentence import SentenceEncoder
    from minibert.train.distill import EmbeddingTeacher

    student = SentenceEncoder.from_pretrained(tiny_model_dir)  # MiniLM's tokenizer, 32-wide embeddings
    with pytest.raises(ValueError, match=r"optim.distill_from = '.*': its embeddings are 384-wide, the model's 32"):
        EmbeddingTeacher(str(minilm_dir), student, "fast")
    with pytest.raises(ValueError, match=r"optim.distill_from = '.*nowhere'"):
        EmbeddingTeacher(str(tmp_path / "nowhere"), student, "fast")


def test_distillation_keeps_the_embedding_near_the_teacher(tiny_model_dir, tiny_data, tmp_path):
    """With the starting model as its teacher, the distilled run's embeddings stay closer to it than the
    plain run's, and its first step is the plain one's (student = teacher: the term and its gradient are 0)."""
    from minibert.sentence import SentenceEncoder
    from minibert.train.distill import EmbeddingTeacher

    runs: dict = {}
    after_one: dict = {}
    for name, optim in (("plain", {}), ("distilled", {"distill_from": str(tiny_model_dir), "distill_weight": 50.0})):
        trainer = make_trainer(tiny_model_dir, tiny_data, tmp_path / name, steps=30,
                               optim={"lr": 1e-2, **optim}, output={"checkpoint_every": 30})
        params = list(trainer.model.parameters())
        def record(*_, name=name, params=params) -> None:  # the gradients the first step applies
            after_one.setdefault(name, flat_grads(params))

        hook = trainer.optimizer.register_step_pre_hook(record)
        trainer.train_step()
        hook.remove()
        for _ in range(29):
            trainer.train_step()
        runs[name] = trainer.model.encoder
    # student = teacher at the first step: the term and its gradient are 0 (to rounding, times the weight 50)
    torch.testing.assert_close(after_one["distilled"], after_one["plain"], atol=2e-5, rtol=0)
    teacher = EmbeddingTeacher(str(tiny_model_dir), SentenceEncoder.from_pretrained(tiny_model_dir), "fast")
    sentences = ["A man plays a guitar.", "Stocks fell sharply.", "Peter went to Paris.", "It is raining."]
    batch = teacher.encoder.tokenizer(sentences).tensors()
    distance = {name: float(teacher.loss(encoder.eval().features(batch["input_ids"], batch["attention_mask"])
                                         .embedding, batch)) for name, encoder in runs.items()}
    assert distance["distilled"] < 0.1 * distance["plain"], distance  # measured: 0.011 against 0.87

"""A task's own teacher (minibert.train.distill.TaskTeacher): the soft-target loss by hand, equal to the task's
own loss once the targets are all gold, teacher annealing or a held share (teacher_gold), the teacher's checks,
and a training step whose gradient the teacher sets as the formula says. (DDP and kill-and-resume with a
teacher on: test_training.)"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from minibert.multitask import MultiTaskModel
from minibert.train import load_config
from minibert.train.batches import single_task_config
from minibert.train.config import TrainConfig
from minibert.train.distill import TaskTeacher, gold_share, soft_target_loss

from conftest import tiny_config

IGNORED = -100


def test_soft_target_loss_by_hand():
    """Two classes: the student's probabilities (1/4, 3/4), the teacher's (1/2, 1/2), gold class 1."""
    logits, teacher = torch.tensor([[0.0, math.log(3.0)]]), torch.zeros(1, 2)
    gold = torch.tensor([1])
    # half and half: target (1/4, 3/4), the student's own distribution: its entropy
    assert float(soft_target_loss(logits, teacher, gold, 0.5)) == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    # all teacher: target (1/2, 1/2)
    assert float(soft_target_loss(logits, teacher, gold, 0.0)) == pytest.approx(
        -(0.5 * math.log(0.25) + 0.5 * math.log(0.75)))
    # all gold: -log 3/4
    assert float(soft_target_loss(logits, teacher, gold, 1.0)) == pytest.approx(-math.log(0.75))
    # per token (B, L, C): a row labelled IGNORED is no term of the mean, whatever its logits
    tokens = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0]]])
    assert float(soft_target_loss(tokens, torch.zeros(1, 2, 2), torch.tensor([[1, IGNORED]]), 0.5)) == \
        pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    # no labelled term at all: 0, not NaN, so an accumulated step adds nothing
    assert float(soft_target_loss(tokens, torch.zeros(1, 2, 2), torch.full((1, 2), IGNORED), 0.5)) == 0.0


def test_teacher_annealing_goes_from_teacher_to_gold():
    assert [gold_share(s, 4) for s in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert [gold_share(s, 4, held=0.5) for s in range(4)] == [0.5] * 4  # teacher_gold: the same share throughout
    assert [gold_share(s, 4, held=0.0) for s in range(4)] == [0.0] * 4


def test_a_held_gold_share_needs_a_teacher_and_a_share_in_0_1():
    topic = {"name": "topic", "type": "classification", "train": "agnews/train.tsv"}
    for teacher in ({}, {"teacher": ""}):
        with pytest.raises(ValueError, match="'topic': teacher_gold = 0.5 needs a teacher"):
            TrainConfig(tasks=[{**topic, **teacher, "teacher_gold": 0.5}])
    with pytest.raises(ValueError, match=r"'topic': teacher_gold must be in \[0, 1\], got 1.5"):
        TrainConfig(tasks=[{**topic, "teacher": "runs/alone/best", "teacher_gold": 1.5}])
    # the task trained alone (the baseline a taught run is measured against) has neither
    taught = TrainConfig(tasks=[{**topic, "teacher": "runs/alone/best", "teacher_gold": 0.5}])
    alone = single_task_config(taught, "topic", 10).tasks[0]
    assert (alone.teacher, alone.teacher_gold) == (None, None)


@pytest.fixture(scope="module")
def teacher_and_batches(tiny_model_dir, tiny_data, tiny_teacher_dir):
    """The tiny teacher, a student built from the same config (other heads), and a batch of each teachable task."""
    config = load_config(base=tiny_config(tiny_model_dir, tiny_data, tiny_teacher_dir / "unused"))
    from minibert.train.batches import read_tasks

    tasks, train_sets = read_tasks(config)[:2]
    student = MultiTaskModel.from_encoder(tiny_model_dir, tasks, seed=1)
    batches = {t.name: student.collate(t.name, examples[:5]) for t, examples in zip(tasks, train_sets, strict=True)}
    return student, batches


@pytest.mark.parametrize("task", ["topic", "nli", "ner"])
def test_all_gold_is_the_tasks_own_loss(teacher_and_batches, tiny_teacher_dir, task):
    student, batches = teacher_and_batches
    teacher = TaskTeacher(str(tiny_teacher_dir), student.task(task), student, "fast")
    out = student(task, batches[task])
    torch.testing.assert_close(teacher.loss(out.logits, batches[task], step=3, steps=3), out.loss)  # annealed to 1
    held = TaskTeacher(str(tiny_teacher_dir), student.task(task), student, "fast", held=1.0)
    torch.testing.assert_close(held.loss(out.logits, batches[task], step=0, steps=3), out.loss)
    # the teacher's own head on the same rows: its logits, not the student's
    assert not torch.allclose(teacher.logits(batches[task]), out.logits)


def test_a_teacher_must_hold_the_task_with_its_labels(teacher_and_batches, tiny_teacher_dir, tmp_path):
    student, _ = teacher_and_batches
    topic, sentiment = student.task("topic"), student.task("sentiment")
    swapped = type(sentiment)(name="sentiment", labels=["positive", "negative"])
    with pytest.raises(ValueError, match=r"task 'sentiment': teacher = '.*': its labels \['negative', 'positive'\] "
                                         r"are not this task's \['positive', 'negative'\] \(in this order\)"):
        TaskTeacher(str(tiny_teacher_dir), swapped, student, "fast")
    with pytest.raises(ValueError, match=r"task 'news': teacher = '.*': it has no classification task named 'news' "
                                         r"\(it has: sts \(sts\), topic \(classification\)"):
        TaskTeacher(str(tiny_teacher_dir), type(topic)(name="news", labels=topic.labels), student, "fast")
    with pytest.raises(ValueError, match=r"task 'topic': teacher = '.*nowhere'"):
        TaskTeacher(str(tmp_path / "nowhere"), topic, student, "fast")
    other = tmp_path / "other-vocabulary"  # the same teacher, one token of its vocabulary renamed
    shutil.copytree(tiny_teacher_dir, other)
    data = json.loads((other / "tokenizer.json").read_text())
    data["model"]["vocab"]["[unused999]"] = data["model"]["vocab"].pop("[unused0]")
    (other / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"task 'topic': teacher = '.*': its vocabulary differs from the model's"):
        TaskTeacher(str(other), topic, student, "fast")
    with pytest.raises(ValueError, match=r"task 'sts': teacher: the loss of a task of type 'sts' is not a cross"):
        TrainConfig(tasks=[{"name": "sts", "type": "sts", "teacher": str(tiny_teacher_dir)}])


def test_the_first_steps_gradient_is_what_the_teacher_leaves(tiny_model_dir, tiny_data, tmp_path):
    """Teacher = the student as it starts. The targets' gradient on the logits is p - target. At the first
    step (all teacher) that is p - p = 0: nothing to learn. Half-way (half gold) it is (p - one_hot) / 2: half
    the plain run's gradient, in every parameter. With a gold share held at 1/4 (``teacher_gold``) it is a
    quarter of it at the first step and half-way alike."""
    from minibert.train.trainer import Trainer

    def trainer(out, **task_keys):
        config = tiny_config(tiny_model_dir, tiny_data, tmp_path / out, steps=10, eval={"every": 0})
        config["tasks"] = [{**t, **task_keys} for t in config["tasks"] if t["name"] == "topic"]
        (tmp_path / f"{out}.json").write_text(json.dumps(config))
        return Trainer(load_config(tmp_path / f"{out}.json"))

    plain = trainer("plain")
    plain.model.save(tmp_path / "start")  # the student as it starts: heads from the same seed
    taught = trainer("taught", teacher=str(tmp_path / "start"))
    held = trainer("held", teacher=str(tmp_path / "start"), teacher_gold=0.25)
    grads = {}
    for name, t, step in (("plain", plain, 0), ("first", taught, 0), ("half-way", taught, 5),
                          ("held first", held, 0), ("held half-way", held, 5)):
        t.model.train()
        t.optimizer.zero_grad(set_to_none=True)
        t.step = step
        tasks, batches = t.batches[0]  # the same batch each time
        t.step_gradients(list(tasks), batches)
        grads[name] = torch.cat([p.grad.reshape(-1) for p in t.model.parameters() if p.grad is not None])
    assert not taught.task_teachers["topic"].model.training  # the student trains, the teacher does not
    assert grads["plain"].abs().max() > 1e-3
    torch.testing.assert_close(grads["first"], torch.zeros_like(grads["first"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(grads["half-way"], grads["plain"] / 2, atol=1e-6, rtol=1e-4)
    for name in ("held first", "held half-way"):
        torch.testing.assert_close(grads[name], grads["plain"] / 4, atol=1e-6, rtol=1e-4)

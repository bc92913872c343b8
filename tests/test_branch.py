"""A task's own top layers (minibert.branch): a new branch computes what the encoder computes, a branched
task reads head(pool(own blocks(states below them))), the shared encoder's top gets none of that task's
gradient, branches are saved with their heads, learn at the rates of the layers they copy, and are refused
where they cannot be saved. (Kill-and-resume and DDP with a branch on are in test_training.py.)"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_adapters import SENTENCES, TAGGED, TASKS  # sentiment, NER and STS tasks, and examples of them
from test_multitask_methods import flat_grads, make_trainer

from minibert.branch import Branch
from minibert.multitask import MultiTaskModel
from minibert.tasks import make_task
from minibert.train.batches import single_task_config
from minibert.train.optim import freeze, param_groups, trainable_report

from conftest import tiny_config


def with_branches(n: int) -> list[dict]:
    return [{**t, "branch": n} if t["type"] != "sts" else t for t in TASKS]


def perturb(branch: Branch, seed: int = 0) -> None:
    """A branch that has moved away from the blocks it copied."""
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in branch.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=noise))


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_a_new_branch_computes_what_the_encoder_does(minilm_dir, path):
    """Copies of the top blocks: the same logits as the model without branches (bit for bit on the reference
    path, whose blocks the branch runs; to float rounding beside the fast path). Once moved, they differ."""
    plain = MultiTaskModel.from_encoder(minilm_dir, TASKS, seed=3, path=path)
    branched = MultiTaskModel.from_encoder(minilm_dir, with_branches(2), seed=3, path=path)
    with torch.no_grad():
        for task, examples in (("sentiment", SENTENCES), ("ner", TAGGED)):
            batch = plain.collate(task, examples)
            a, b = plain(task, batch), branched(task, batch)
            if path == "reference":
                assert torch.equal(a.logits, b.logits), task
            real = batch["attention_mask"].bool() if task == "ner" else slice(None)  # the fast path leaves
            torch.testing.assert_close(a.logits[real], b.logits[real], rtol=0, atol=1e-5)  # padding's states 0
        perturb(branched.heads["sentiment"].branch)
        batch = plain.collate("sentiment", SENTENCES)
        assert not torch.allclose(plain("sentiment", batch).logits, branched("sentiment", batch).logits, atol=1e-3)


def test_a_branched_task_reads_its_own_blocks(minilm_dir):
    """head(pool(own block 5(own block 4(hidden_states[4])))) by hand, for a sentence task and a token task;
    the exported sentence-transformers model and the output's encoder_embedding are the shared encoder's."""
    model = MultiTaskModel.from_encoder(minilm_dir, with_branches(2), seed=0, path="reference")
    for name in ("sentiment", "ner"):
        perturb(model.heads[name].branch)
    assert model.heads["ner"].branch.start == 4 and not hasattr(model.heads["sts"], "branch")
    with torch.no_grad():
        for task, examples in (("sentiment", SENTENCES), ("ner", TAGGED)):
            batch = model.collate(task, examples)
            mask = batch["attention_mask"]
            hidden = model.encoder.bert(batch["input_ids"], mask, output_hidden_states=True)
            states = hidden.hidden_states[4]
            for block in model.heads[task].branch.blocks:
                states = block(states, mask)
            out = model(task, batch, encoder_embedding=True)
            assert model(task, batch).encoder_embedding is None  # only when asked
            if task == "ner":
                expected = model.heads[task].out(states)
            else:
                pooled = F.normalize(model.encoder.pooling(states, mask), dim=-1)  # mean, Normalize
                expected = model.heads[task].out(model.heads[task].hidden(pooled))
                shared = F.normalize(model.encoder.pooling(hidden.last_hidden_state, mask), dim=-1)
                torch.testing.assert_close(out.encoder_embedding, shared, rtol=0, atol=0)
                torch.testing.assert_close(out.encoder_embedding, model.encoder.encode(
                    [e.text for e in examples], convert_to="torch"))
            torch.testing.assert_close(out.logits, expected)


def test_the_shared_top_gets_none_of_a_branched_tasks_gradient(minilm_dir):
    model = MultiTaskModel.from_encoder(minilm_dir, with_branches(1), seed=0, path="reference").train()
    model.encoder.bert.set_dropout(0.0)
    model.heads["sentiment"].branch.set_dropout(0.0)
    model("sentiment", model.collate("sentiment", SENTENCES)).loss.backward()
    blocks = model.encoder.bert.blocks
    assert all(p.grad is None for p in blocks[5].parameters())  # the encoder's own top: not on this task's way
    assert flat_grads(blocks[4].parameters()).abs().sum() > 0  # below the branch: shared, and moved
    assert flat_grads(model.heads["sentiment"].branch.parameters()).abs().sum() > 0


def test_encoder_grad_scales_what_a_branch_sends_to_the_encoder(minilm_dir):
    """With ``encoder_grad = 0.25`` the encoder's gradient from a branched task is a quarter of its gradient
    at 1; the branch's and the head's are the same."""
    model = MultiTaskModel.from_encoder(minilm_dir, with_branches(2), seed=0, path="reference").train()
    model.encoder.bert.set_dropout(0.0)
    model.heads["sentiment"].branch.set_dropout(0.0)
    perturb(model.heads["sentiment"].branch)
    batch = model.collate("sentiment", SENTENCES)
    grads = []
    for scale in (1.0, 0.25):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the head's dropout: the same mask both times
        model("sentiment", batch, scale).loss.backward()
        grads.append([flat_grads(part.parameters()) for part in (model.encoder, model.heads["sentiment"])])
    torch.testing.assert_close(grads[1][0], 0.25 * grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])
    assert grads[0][0].abs().sum() > 0


def test_branches_are_saved_with_their_heads(minilm_dir, tmp_path):
    model = MultiTaskModel.from_encoder(minilm_dir, with_branches(1), seed=0)
    perturb(model.heads["ner"].branch)
    model.save(tmp_path / "mt")
    spec = json.loads((tmp_path / "mt" / "tasks.json").read_text())
    assert [t["branch"] for t in spec["tasks"]] == [1, 1, 0]
    batch = model.collate("ner", TAGGED)
    for path in ("reference", "fast"):
        loaded = MultiTaskModel.load(tmp_path / "mt", path=path)
        assert loaded.encoder.path == path
        real = batch["attention_mask"].bool()  # the fast path leaves padding's states 0
        with torch.no_grad():
            torch.testing.assert_close(model("ner", batch).logits[real], loaded("ner", batch).logits[real],
                                       rtol=0, atol=1e-5)
    # strict: a tasks.json whose branch the weights do not hold is an error naming the key
    spec["tasks"][0] = {**spec["tasks"][0], "branch": 2}
    (tmp_path / "mt" / "tasks.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"missing 16 tensors: sentiment\.branch\.blocks\.1\."):
        MultiTaskModel.load(tmp_path / "mt")


def test_a_branch_is_refused_where_it_cannot_be(minilm_dir):
    with pytest.raises(ValueError, match="branch is a number of layers"):
        make_task({**TASKS[0], "branch": -1})
    with pytest.raises(ValueError, match="a branch of 7 layers: the encoder has 6"):
        MultiTaskModel.from_encoder(minilm_dir, [{**TASKS[0], "branch": 7}])
    for kind in ("cross_sts", "masked_lm", "sts", "pairs"):  # saved in forms that have no place for one
        with pytest.raises(ValueError, match=rf"task 'x' \({kind}\) takes no branch"):
            make_task({"name": "x", "type": kind, "branch": 1})


def test_a_branch_learns_at_the_rates_of_the_layers_it_copies(minilm_dir):
    model = MultiTaskModel.from_encoder(minilm_dir, with_branches(2), seed=0)
    rates = {g["name"]: g["lr"] for g in param_groups(model, lr=1e-4, layer_decay=0.5, head_lr=1e-2)}
    assert rates["branch:ner/layer.5/decay"] == rates["layer.5/decay"] == 1e-4
    assert rates["branch:ner/layer.4/no_decay"] == rates["layer.4/no_decay"] == 5e-5
    assert rates["head:ner/decay"] == 1e-2
    groups = param_groups(model, lr=1e-4)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen))  # every parameter in one group only
    assert set(seen) == {id(p) for n, p in model.named_parameters() if "pooler" not in n}
    freeze(model, "head:ner")  # the branch belongs to its head
    assert not any(p.requires_grad for p in model.heads["ner"].parameters())
    assert "branch:ner/layer.4" in trainable_report(model)


def test_a_branch_in_a_training_configuration(tiny_model_dir, tiny_data, tmp_path):
    """The branch is a head option; encoder.dropout reaches it; "alone" drops it."""
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run")
    for t in config["tasks"]:
        if t["name"] == "topic":
            t["head"] = {**t["head"], "branch": 1}
    trainer = make_trainer(tiny_model_dir, tiny_data, tmp_path / "t", tasks=config["tasks"],
                           encoder={"dropout": 0.25})
    branch = trainer.model.heads["topic"].branch
    dropouts = [m.p for m in branch.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and set(dropouts) == {0.25} and branch.blocks[0].attention.dropout_p == 0.25
    alone = single_task_config(trainer.config, "topic", 10).tasks[0]
    assert trainer.config.tasks[1].head["branch"] == 1 and "branch" not in alone.head
    before = torch.cat([p.detach().reshape(-1) for p in branch.parameters()])
    for _ in range(20):
        if "topic" in trainer.train_step()["loss"]:
            break
    assert not torch.equal(torch.cat([p.detach().reshape(-1) for p in branch.parameters()]), before)  # it trains

"""Task adapters and the scaled encoder gradient (minibert.adapter): a new adapter is the identity, an
adapted task computes head(pool(adapter(states))), adapters are saved with their heads, and a task's
``encoder_grad`` scales exactly its gradient on the encoder. (Kill-and-resume and DDP with them on are
in test_training.py.)"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_multitask_methods import flat_grads, make_trainer, topic_examples

from minibert.adapter import Adapter, scale_gradient
from minibert.data import TaggedSentence, TextExample
from minibert.multitask import MultiTaskModel
from minibert.tasks import make_task
from minibert.train import load_config
from minibert.train.batches import single_task_config

from conftest import tiny_config

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TASKS = [{"name": "sentiment", "type": "classification", "labels": ["negative", "positive"], "hidden_layer": True},
         {"name": "ner", "type": "token_classification", "labels": NER_LABELS},
         {"name": "sts", "type": "sts"}]
SENTENCES = [TextExample("I loved every minute of it", 1), TextExample("Terrible.", 0)]
TAGGED = [TaggedSentence(["Peter", "lives", "in", "Paris"], ["B-PER", "O", "O", "B-LOC"]),
          TaggedSentence(["Hello"], ["O"])]


def with_adapters(width: int) -> list[dict]:
    return [{**t, "adapter": width} if t["type"] != "sts" else t for t in TASKS]


def test_a_new_adapter_is_the_identity(minilm_dir):
    """Zero-initialised ``up``: a model with adapters gives the base model's logits, bit for bit (same seed,
    same heads: the adapters are drawn after every head). Once ``up`` is not zero, it no longer does."""
    plain = MultiTaskModel.from_encoder(minilm_dir, TASKS, seed=3)
    adapted = MultiTaskModel.from_encoder(minilm_dir, with_adapters(8), seed=3)
    with torch.no_grad():
        for task, examples in (("sentiment", SENTENCES), ("ner", TAGGED)):
            batch = plain.collate(task, examples)
            a, b = plain(task, batch), adapted(task, batch)
            assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss), task
        adapted.heads["sentiment"].adapter.up.weight.normal_()
        batch = plain.collate("sentiment", SENTENCES)
        assert not torch.allclose(plain("sentiment", batch).logits, adapted("sentiment", batch).logits)


def test_an_adapted_task_reads_the_adapted_states(minilm_dir):
    """head(pool(x + up(GELU(down(LN(x)))))) by hand from the encoder's states, for a sentence task and a
    token task; a task of a type that takes no adapter has none."""
    model = MultiTaskModel.from_encoder(minilm_dir, with_adapters(16), seed=0)
    for head in model.heads.values():
        if hasattr(head, "adapter"):
            torch.nn.init.normal_(head.adapter.up.weight, std=0.05)
    with torch.no_grad():
        for task, examples in (("sentiment", SENTENCES), ("ner", TAGGED)):
            batch = model.collate(task, examples)
            states = model.encoder.bert(batch["input_ids"], batch["attention_mask"]).last_hidden_state
            a = model.heads[task].adapter
            hand = states + F.linear(F.gelu(F.linear(F.layer_norm(states, (states.shape[-1],), a.norm.weight,
                                                                   a.norm.bias), a.down.weight, a.down.bias)),
                                     a.up.weight, a.up.bias)
            if task == "ner":
                expected = model.heads[task].out(hand)  # the token head: a linear layer on each state
            else:
                pooled = model.encoder.pooling(hand, batch["attention_mask"])
                assert model.encoder.normalize and not model.encoder.dense  # all-MiniLM-L6-v2: mean, Normalize
                expected = model.heads[task].out(model.heads[task].hidden(F.normalize(pooled, dim=-1)))
            torch.testing.assert_close(model(task, batch).logits, expected)
    assert not hasattr(model.heads["sts"], "adapter")


def test_the_exported_embedding_is_the_unadapted_one(minilm_dir, tmp_path):
    """The sentence-transformers folder holds the encoder alone: the same embeddings as the model without
    adapters, while an adapted task's own embedding differs."""
    from minibert.sentence import SentenceEncoder

    model = MultiTaskModel.from_encoder(minilm_dir, with_adapters(16), seed=0)
    torch.nn.init.normal_(model.heads["sentiment"].adapter.up.weight, std=0.05)
    model.export_sentence_transformers(tmp_path / "st")
    texts = [e.text for e in SENTENCES]
    exported = SentenceEncoder.from_pretrained(tmp_path / "st").encode(texts, convert_to="torch")
    plain = MultiTaskModel.from_encoder(minilm_dir, TASKS, seed=0).encoder.encode(texts, convert_to="torch")
    assert torch.equal(exported, plain)
    with torch.no_grad():
        adapted = model("sentiment", model.collate("sentiment", SENTENCES)).embedding
    assert not torch.allclose(adapted, plain, atol=1e-3)


def test_adapters_are_saved_with_their_heads(minilm_dir, tmp_path):
    model = MultiTaskModel.from_encoder(minilm_dir, with_adapters(8), seed=0)
    torch.nn.init.normal_(model.heads["ner"].adapter.up.weight, std=0.05)
    model.save(tmp_path / "mt")
    spec = json.loads((tmp_path / "mt" / "tasks.json").read_text())
    assert [t["adapter"] for t in spec["tasks"]] == [8, 8, 0]
    loaded = MultiTaskModel.load(tmp_path / "mt")
    with torch.no_grad():
        batch = model.collate("ner", TAGGED)
        assert torch.equal(model("ner", batch).logits, loaded("ner", batch).logits)
    # strict: a tasks.json whose adapter the weights do not hold is an error naming the key
    spec["tasks"][0] = {**spec["tasks"][0], "adapter": 4}
    (tmp_path / "mt" / "tasks.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"sentiment\.adapter\.down\.weight"):
        MultiTaskModel.load(tmp_path / "mt")
    with pytest.raises(ValueError, match="adapter is a width"):
        MultiTaskModel.from_encoder(minilm_dir, [{**TASKS[0], "adapter": -1}])
    # a type whose model is also saved in a transformers layout cannot hold one: never dropped silently
    for kind, layout in (("cross_sts", "sequence classifier"), ("masked_lm", "masked language model"),
                         ("sts", "sentence-transformers folder"), ("pairs", "encoder's own embedding")):
        with pytest.raises(ValueError, match=rf"task 'x' \({kind}\) takes no adapter: .*{layout}"):
            make_task({"name": "x", "type": kind, "adapter": 8})


def test_scale_gradient_by_hand():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.tensor([4.0, 8.0, -12.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 2.0, -3.0]))
    assert scale_gradient(x, 1.0) is x  # nothing in the graph at the default


def test_encoder_grad_scales_the_encoder_and_not_the_head(tiny_model_dir, tiny_data, tmp_path):
    """A task's gradient on the encoder with ``encoder_grad = 0.25`` is a quarter of its gradient at 1; its
    head's and adapter's are the same."""
    tasks = tiny_config(tiny_model_dir, tiny_data, tmp_path)["tasks"]
    tasks[1]["head"] = {**tasks[1]["head"], "adapter": 4}  # topic
    trainer = make_trainer(tiny_model_dir, tiny_data, tmp_path, tasks=tasks)
    trainer.model.train()
    with torch.no_grad():  # an adapter that is not the identity, so the encoder's gradient passes through it
        trainer.model.heads["topic"].adapter.up.weight.normal_(std=0.1)
    encoder, head = list(trainer.model.encoder.parameters()), list(trainer.model.heads["topic"].parameters())
    assert any(p is trainer.model.heads["topic"].adapter.up.weight for p in head)
    batch = [trainer.model.collate("topic", topic_examples(tiny_data))]
    trainer.forward_backward("topic", batch, 1.0)
    full = flat_grads(encoder), flat_grads(head)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.encoder_grads["topic"] = 0.25
    trainer.forward_backward("topic", batch, 1.0)
    torch.testing.assert_close(flat_grads(encoder), 0.25 * full[0])
    assert flat_grads(encoder).abs().sum() > 0
    torch.testing.assert_close(flat_grads(head), full[1])


def test_encoder_grad_scales_a_masked_lm_tasks_tied_word_embeddings(tiny_model_dir):
    """The masked-LM head decodes with the word embeddings: their whole gradient, through the input and the
    decoder alike, is scaled."""
    from minibert.data import MaskedText

    model = MultiTaskModel.from_encoder(tiny_model_dir, [{"name": "mlm", "type": "masked_lm", "probability": 0.5}])
    batch = model.collate("mlm", [MaskedText("a man plays a guitar on the stage"), MaskedText("stocks fell")])
    word = model.encoder.bert.embeddings.word.weight
    grads = []
    for scale in (1.0, 0.25):
        model.zero_grad(set_to_none=True)
        model("mlm", batch, scale).loss.backward()
        grads.append(word.grad.clone())
    torch.testing.assert_close(grads[1], 0.25 * grads[0])


def test_an_adapter_trains_at_the_heads_rate(tiny_model_dir, tiny_data, tmp_path):
    tasks = tiny_config(tiny_model_dir, tiny_data, tmp_path)["tasks"]
    tasks[1]["head"] = {**tasks[1]["head"], "adapter": 4}  # topic
    trainer = make_trainer(tiny_model_dir, tiny_data, tmp_path, tasks=tasks, sampling={"strategy": "round_robin"},
                           optim={"lr": 1e-4, "head_lr": 1e-2})
    up = trainer.model.heads["topic"].adapter.up.weight
    groups = [g for g in trainer.optimizer.param_groups if any(p is up for p in g["params"])]
    assert len(groups) == 1 and groups[0]["lr"] == max(g["lr"] for g in trainer.optimizer.param_groups)
    while "topic" not in trainer.train_step()["loss"]:
        pass
    assert up.abs().sum() > 0  # it started at zero


def test_encoder_grad_that_would_do_nothing_is_refused(tiny_model_dir, tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"task 'sts': encoder_grad = 0, and a sts task has no head weights"):
        make_trainer(tiny_model_dir, tiny_data, tmp_path / "a", tasks=[
            {**tiny_config(tiny_model_dir, tiny_data, tmp_path)["tasks"][0], "encoder_grad": 0.0}])
    tasks = tiny_config(tiny_model_dir, tiny_data, tmp_path)["tasks"]
    tasks[1]["encoder_grad"] = 0.5
    with pytest.raises(ValueError, match=r"task 'topic': encoder_grad = 0.5 with encoder.freeze"):
        make_trainer(tiny_model_dir, tiny_data, tmp_path / "b", tasks=tasks, encoder={"freeze": ["encoder"]})


def test_an_adapter_in_a_training_configuration(tiny_model_dir, tiny_data, tmp_path):
    """The adapter is a head option, encoder_grad a task setting; both are checked, and "alone" drops both."""
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run")
    for t in config["tasks"]:
        if t["name"] == "topic":
            t["head"] = {**t["head"], "adapter": 4}
            t["encoder_grad"] = 0.5
    cfg = load_config(None, base=config)
    topic = next(t for t in cfg.tasks if t.name == "topic")
    alone = single_task_config(cfg, "topic", 10).tasks[0]
    assert (alone.encoder_grad, alone.head) == (1.0, {"dropout": 0.0}) and topic.head["adapter"] == 4
    with pytest.raises(ValueError, match=r"task 'topic': encoder_grad must be in \[0, 1\], got 2"):
        load_config(None, ["tasks.topic.encoder_grad=2"], base=config)
    trainer = make_trainer(tiny_model_dir, tiny_data, tmp_path / "t", tasks=config["tasks"])
    assert isinstance(trainer.model.heads["topic"].adapter, Adapter)
    assert trainer.encoder_grads["topic"] == 0.5


def test_a_run_saved_before_encoder_grad_existed_is_the_same_recipe(tiny_model_dir, tiny_data, tmp_path):
    """--resume and reused study runs compare configurations: a task setting the saved one lacks counts as its
    default, and a real change of it is one."""
    from minibert.train.recipe import changed_keys

    now = load_config(None, base=tiny_config(tiny_model_dir, tiny_data, tmp_path)).to_dict()
    saved = json.loads(json.dumps(now))
    for t in saved["tasks"]:
        del t["encoder_grad"]
    assert changed_keys(saved, now) == []
    saved["tasks"][1]["encoder_grad"] = 0.5
    assert changed_keys(saved, now) == ["tasks"]


def test_distillation_at_the_encoder_leaves_the_adapter_free(tiny_model_dir, tiny_data, tmp_path):
    """optim.distill_at = "encoder" pulls the encoder's own embedding (the exported model's) towards the
    teacher's: the term adds exactly the gradient of w * mean(1 - cos) on that embedding to the encoder and
    nothing to the adapter. At "head" (the default) it pulls the adapted embedding, adapter included."""
    tasks = tiny_config(tiny_model_dir, tiny_data, tmp_path)["tasks"]
    tasks[1]["head"] = {**tasks[1]["head"], "adapter": 4}  # topic
    teacher = {"distill_from": str(tiny_model_dir), "distill_weight": 3.0}
    grads, trainers = {}, {}
    for at in ("none", "head", "encoder"):
        optim = {} if at == "none" else {**teacher, "distill_at": at}
        trainer = trainers[at] = make_trainer(tiny_model_dir, tiny_data, tmp_path / at, tasks=tasks, optim=optim)
        trainer.model.train()
        noise = torch.Generator().manual_seed(0)
        matrix = next(p for p in trainer.model.encoder.parameters() if p.dim() == 2 and p.shape[0] < 1000)
        with torch.no_grad():  # a student that is not its teacher, and an adapter that is not the identity
            for p in (matrix, trainer.model.heads["topic"].adapter.up.weight):
                p.add_(0.1 * torch.randn(p.shape, generator=noise))
        batch = trainer.model.collate("topic", topic_examples(tiny_data))
        trainer.forward_backward("topic", [batch], 1.0)
        grads[at] = (flat_grads(trainer.model.encoder.parameters()),
                     flat_grads(trainer.model.heads["topic"].adapter.parameters()))
    torch.testing.assert_close(grads["encoder"][1], grads["none"][1], rtol=0, atol=0)  # the adapter: free
    assert not torch.allclose(grads["head"][1], grads["none"][1])  # at the head it is pulled too
    # by hand: the plain task gradient plus that of the term on the encoder's own embedding
    plain, taught = trainers["none"], trainers["encoder"]
    own = plain.model.encoder.features(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    distance = (1 - F.cosine_similarity(own.embedding, taught.teacher.embed(batch), dim=-1)).mean()
    assert float(distance.detach()) > 1e-3
    (3.0 * distance).backward()
    torch.testing.assert_close(grads["encoder"][0], flat_grads(plain.model.encoder.parameters()))


def test_distill_at_needs_a_teacher_and_a_known_place(tiny_model_dir, tiny_data, tmp_path):
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path)
    with pytest.raises(ValueError, match="optim.distill_at needs optim.distill_from"):
        load_config(None, ["optim.distill_at=encoder"], base=config)
    with pytest.raises(ValueError, match="optim.distill_at must be one of"):
        load_config(None, ["optim.distill_from=x", "optim.distill_at=pooler"], base=config)

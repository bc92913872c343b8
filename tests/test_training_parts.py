"""The training building blocks: readers, configuration, task sampling, data streams, optimizer groups,
schedules and metrics."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from minibert.data import read_classification, read_conll, read_nli, read_sts_tsv
from minibert.metrics import entity_prf, macro_f1
from minibert.multitask import BATCH_KEYS
from minibert.task_spec import HEAD_OPTIONS, TASK_TYPES
from minibert.train.config import load_config
from minibert.train.evaluate import MAIN_METRIC
from minibert.train.optim import lr_multiplier, make_optimizer, param_groups
from minibert.train.tasks import READERS, TaskStream, hold_out, infer_labels, task_for_step, task_probabilities

# ---- readers -------------------------------------------------------------------------------------


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_readers_read_the_tiny_files(tiny_data):
    sts = read_sts_tsv(tiny_data / "sts.tsv")
    assert len(sts) == 8 and sts[0].label == 5.0 and sts[0].a == "A man plays a guitar."
    assert [e.label for e in read_classification(tiny_data / "sentiment.tsv")] == [1, 0, 1, 0, 1, 0]  # header skipped
    assert read_classification(tiny_data / "topic.tsv")[0].label == "Business"
    assert [e.label for e in read_nli(tiny_data / "nli.tsv")] == [0, 2, 0, 1, 2, 1]
    ner = read_conll(tiny_data / "ner.txt")
    assert len(ner) == 4 and ner[1].words == ["Peter", "Blackburn"] and ner[1].tags == ["B-PER", "I-PER"]


GOOD_STS = "g\ts\ty\t1\t2.0\tA\tB\n"


@pytest.mark.parametrize("name,text,reader,match", [
    ("a.tsv", GOOD_STS + "g\ts\ty\t2\tnope\tA\tB\n", read_sts_tsv, r"a.tsv:2: score 'nope' is not a number"),
    ("b.tsv", GOOD_STS + "g\ts\ty\t1\t7.5\tA\tB\n", read_sts_tsv, r"b.tsv:2: score 7.5 is outside 0..5"),
    ("c.tsv", "x\ty\t0\nonly two\tfields\n", read_nli, r"c.tsv:2: expected 3 tab-separated fields"),
    ("d.tsv", "good\tWorld\nno label here\n", read_classification, r"d.tsv:2: expected 2 fields"),
    ("e.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP X-FOO\n", read_conll, r"e.txt:2: tag 'X-FOO' is not a BIO tag"),
    ("f.jsonl", '{"sentence1": "a", "sentence2": "b", "gold_label": "entailment"}\n{"oops": 1}\n', read_nli,
     r"f.jsonl:2: not an NLI json line"),
])
def test_malformed_lines_name_file_and_line(tmp_path, name, text, reader, match):
    path = write(tmp_path, name, text)
    with pytest.raises(ValueError, match=match):
        reader(path)
    with warnings.catch_warnings(record=True) as caught:  # the explicit option: skip and say how many
        warnings.simplefilter("always")
        examples = reader(path, skip_bad=True)
    assert len(examples) == 1
    assert any("skipped 1 bad line(s)" in str(w.message) for w in caught)


def test_snli_jsonl_and_no_consensus_pairs(tmp_path):
    lines = [{"sentence1": "a", "sentence2": "b", "gold_label": "contradiction"},
             {"sentence1": "c", "sentence2": "d", "gold_label": "-"}]
    path = write(tmp_path, "snli.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.warns(UserWarning, match="left out 1 pair"):
        examples = read_nli(path)
    assert [(e.a, e.label) for e in examples] == [("a", "contradiction")]


def test_csv_classification_with_quotes(tmp_path):
    path = write(tmp_path, "x.csv", 'text,label\n"Hello, world",1\n"say ""hi""",0\n')
    assert [(e.text, e.label) for e in read_classification(path)] == [("Hello, world", 1), ('say "hi"', 0)]


def test_missing_data_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_sts_tsv(tmp_path / "nope.tsv")


# ---- configuration -------------------------------------------------------------------------------

TOML = """
model = "m"
steps = 10
[[tasks]]
name = "sts"
type = "sts"
train = "${TINY:-/data}/sts.tsv"
[[tasks]]
name = "topic"
type = "classification"
train = "t.tsv"
head = { hidden_layer = true }
"""


def test_toml_config_with_overrides_and_variables(tmp_path, monkeypatch):
    path = write(tmp_path, "c.toml", TOML)
    config = load_config(path, ["steps=25", "tasks.topic.loss_weight=0.5", 'freeze=["embeddings"]', "lr=3e-5"])
    assert config.steps == 25 and config.lr == 3e-5 and config.freeze == ["embeddings"]
    assert config.tasks[0].train == "/data/sts.tsv"
    assert config.tasks[1].loss_weight == 0.5 and config.tasks[1].head == {"hidden_layer": True}
    monkeypatch.setenv("TINY", "/elsewhere")
    assert load_config(path).tasks[0].train == "/elsewhere/sts.tsv"
    config.save(tmp_path / "resolved.json")  # a resolved configuration reads back the same
    assert load_config(tmp_path / "resolved.json").to_dict() == config.to_dict()


def test_every_task_type_has_a_reader_batch_keys_and_a_metric():
    """The per-type tables must name the same types, or a new type would fail with a bare KeyError."""
    assert set(READERS) == set(BATCH_KEYS) == set(MAIN_METRIC) == set(HEAD_OPTIONS) == set(TASK_TYPES)


@pytest.mark.parametrize("override,match", [
    ("stepz=3", r"unknown key\(s\) \['stepz'\]"),
    ("tasks.pos.lr=1", "no task named 'pos'"),
    ("tasks.topic.dropuot=1", r"task 'topic': unknown key\(s\) \['dropuot'\]"),
    ('tasks.sts.head={"loss": "cosent", "dropout": 0.2}',
     r"task 'sts': option\(s\) \['dropout'\] do not apply to task type 'sts'; "
     r"its options are \['loss', 'max_score'\]"),
    ("tasks.topic.head.hiden_layer=true",
     r"task 'topic': option\(s\) \['hiden_layer'\] do not apply to task type 'classification'"),
    ("tasks.topic.head=dropout", "task 'topic': head must be a table of options, got 'dropout'"),
    ("tasks.topic.type=regression", "task 'topic': unknown type 'regression'"),
    ("sampling=random", "sampling must be one of"),
    ("grad_accum=3", "not divisible by grad_accum"),
    ("sam_rho=-0.05", "sam_rho must be >= 0, got -0.05"),
    ("steps", "is not KEY=VALUE"),
])
def test_bad_configuration_names_the_key(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        load_config(write(tmp_path, "c.toml", TOML), [override])


# ---- sampling and data position ------------------------------------------------------------------


def test_task_probabilities():
    sizes = [100, 400, 10000]
    np.testing.assert_allclose(task_probabilities(sizes, "proportional"), np.array(sizes) / 10500)
    np.testing.assert_allclose(task_probabilities(sizes, "round_robin"), [1 / 3] * 3)
    t2 = task_probabilities(sizes, "temperature", 2.0)
    np.testing.assert_allclose(t2, np.sqrt(sizes) / np.sqrt(sizes).sum())
    np.testing.assert_allclose(task_probabilities(sizes, "temperature", 1.0), task_probabilities(sizes, "proportional"))
    assert task_probabilities(sizes, "temperature", 1e6).std() < 1e-4  # T -> inf: uniform


def test_task_sequence_is_a_function_of_the_step():
    p = task_probabilities([1, 3], "proportional")
    seq = [task_for_step(s, 2, "proportional", p, seed=1) for s in range(4000)]
    assert seq == [task_for_step(s, 2, "proportional", p, seed=1) for s in range(4000)]
    assert abs(np.mean(seq) - 0.75) < 0.03
    assert [task_for_step(s, 3, "round_robin", None, 0) for s in range(5)] == [0, 1, 2, 0, 1]


def test_stream_covers_each_epoch_once_and_resumes():
    stream = TaskStream(list(range(10)), seed=3)
    first = stream.take(7) + stream.take(3)
    assert sorted(first) == list(range(10))
    state = stream.state()
    ahead = stream.take(15)
    other = TaskStream(list(range(10)), seed=3)
    other.load_state(state)
    assert other.take(15) == ahead
    assert sorted(ahead[:10]) == list(range(10)) and ahead[:10] != first  # a new shuffle each epoch


def test_hold_out_and_label_inference(tiny_data):
    train, dev = hold_out(list(range(100)), 0.1, seed=0)
    assert len(dev) == 10 and sorted(train + dev) == list(range(100))
    from minibert.train.config import TaskConfig

    ner = read_conll(tiny_data / "ner.txt")
    labels = infer_labels(TaskConfig("ner", "token_classification", "x"), ner)
    assert labels == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    sst = read_classification(tiny_data / "sentiment.tsv")
    assert infer_labels(TaskConfig("s", "classification", "x"), sst) == ["0", "1"]


# ---- optimisation --------------------------------------------------------------------------------


def test_param_groups_decay_and_layerwise_rates(tiny_model_dir):
    from minibert.multitask import MultiTaskModel

    model = MultiTaskModel.from_encoder(tiny_model_dir, [{"name": "t", "type": "classification",
                                                          "labels": ["a", "b"]}])
    groups = {g["name"]: g for g in param_groups(model, lr=1e-4, layer_decay=0.5, head_lr=1e-3, weight_decay=0.1)}
    assert groups["layer.1/decay"]["lr"] == pytest.approx(1e-4)  # the top layer
    assert groups["layer.0/decay"]["lr"] == pytest.approx(5e-5)
    assert groups["embeddings/decay"]["lr"] == pytest.approx(2.5e-5)  # lowest
    assert groups["head:t/decay"]["lr"] == pytest.approx(1e-3)  # highest
    for name, group in groups.items():
        expected = 0.1 if name.endswith("/decay") else 0.0
        assert group["weight_decay"] == expected
        assert all((p.ndim > 1) == name.endswith("/decay") for p in group["params"])
    norm = model.encoder.bert.blocks[0].attention_norm.weight
    assert any(p is norm for p in groups["layer.0/no_decay"]["params"])  # LayerNorm: no decay
    in_groups = {id(p) for g in groups.values() for p in g["params"]}
    pooler = {id(p) for p in model.encoder.bert.pooler.parameters()}
    assert in_groups | pooler == {id(p) for p in model.parameters()} and not in_groups & pooler


def test_fused_optimizer_takes_the_same_step_as_plain_adamw(tiny_model_dir):
    from minibert.multitask import MultiTaskModel

    spec = [{"name": "t", "type": "classification", "labels": ["a", "b"]}]
    fused_model, plain_model = (MultiTaskModel.from_encoder(tiny_model_dir, spec, seed=0) for _ in range(2))
    fused = make_optimizer(fused_model, lr=1e-3, layer_decay=0.5, head_lr=1e-2, weight_decay=0.1)
    plain = torch.optim.AdamW(param_groups(plain_model, 1e-3, 0.5, 1e-2, 0.1), lr=1e-3, fused=False, foreach=False)
    assert fused.defaults["fused"] and [g["lr"] for g in fused.param_groups] == [g["lr"] for g in plain.param_groups]
    batch = {"texts": ["a b c", "d e"], "labels": ["a", "b"]}
    start = {k: v.clone() for k, v in fused_model.state_dict().items()}
    for step in range(3):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            torch.manual_seed(step)  # the same dropout masks for both
            model.train()
            model("t", batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    for (name, a), b in zip(fused_model.state_dict().items(), plain_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    moved = [k for k, v in fused_model.state_dict().items() if not torch.equal(v, start[k])]
    assert len(moved) > 10  # the steps did move the weights


def test_schedules():
    assert [lr_multiplier(s, 10, 4, "linear") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(7, 10, 4, "linear") == pytest.approx(0.5)
    assert lr_multiplier(7, 10, 4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(10, 10, 4, "linear") == 0.0 and lr_multiplier(9, 10, 0, "constant") == 1.0


def test_gradient_clipping_and_accumulation_match_one_big_batch(tiny_model_dir, tiny_data, tmp_path):
    """grad_accum=2 with half batches equals one full batch (no dropout in the tiny model)."""
    from conftest import tiny_config

    from minibert.train import Trainer

    results = []
    for accum in (1, 2):
        config = tiny_config(tiny_model_dir, tiny_data, tmp_path / f"run{accum}", steps=3, eval_every=0,
                             grad_accum=accum, max_grad_norm=0.05)
        config["tasks"] = [t for t in config["tasks"] if t["name"] == "topic"]
        (tmp_path / f"c{accum}.json").write_text(json.dumps(config))
        trainer = Trainer(load_config(tmp_path / f"c{accum}.json"))
        records = [trainer.train_step() for _ in range(3)]
        assert all(r["grad_norm"] > 0.05 for r in records)  # clipping was active
        results.append(torch.cat([p.detach().flatten() for p in trainer.model.parameters()]))
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=1e-5)


# ---- metrics -------------------------------------------------------------------------------------


def test_macro_f1_and_entity_scores():
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx((2 / 3 + 0.8) / 2)
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O"]]  # wrong type; stray I- still counts (conlleval)
    scores = entity_prf(pred, gold)
    assert scores == {"precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3)}
    partial = entity_prf([["B-PER", "O", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]])  # span must match
    assert partial["precision"] == 0.5 and partial["recall"] == 0.5

"""The training building blocks: readers, configuration, task sampling, data streams, optimizer groups,
schedules and metrics."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from minibert.data import TextExample, read_classification, read_conll, read_nli, read_pairs_tsv, read_sts_tsv
from minibert.metrics import entity_prf, macro_f1
from minibert.tasks import Classification, TokenClassification
from minibert.train.batches import StepBatches, hold_out, load_task_data, task_probabilities, tasks_for_step
from minibert.train.config_file import load_config
from minibert.train.optim import lr_multiplier, make_optimizer, param_groups
from minibert.train.recipe import changed_keys

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
    ("g.tsv", "query\tanswer\nonly one field\n", read_pairs_tsv, r"g.tsv:2: expected 2 or 3 non-empty"),
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


def test_labels_that_look_almost_like_numbers_are_names(tmp_path):
    """Only plain integers are class ids: '--3' once reached int() and failed with a bare ValueError."""
    from minibert.data import label_value

    assert [label_value(t) for t in ("3", " -1 ", "--3", "3.0", "\u0663", "+2", "World")] == [
        3, -1, "--3", "3.0", "\u0663", "+2", "World"]
    path = write(tmp_path, "odd.tsv", "fine\t1\nodd\t--3\n")
    assert [e.label for e in read_classification(path)] == [1, "--3"]
    nli = write(tmp_path, "odd_nli.tsv", "a\tb\t--3\n")
    assert [e.label for e in read_nli(nli)] == ["--3"]


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
train = "stsb/train.tsv"
[[tasks]]
name = "topic"
type = "classification"
train = "t.tsv"
head = { hidden_layer = true }
"""


def test_toml_config_with_overrides_and_data_dir(tmp_path, monkeypatch):
    path = write(tmp_path, "c.toml", TOML)
    config = load_config(path, ["steps=25", "tasks.topic.loss_weight=0.5", 'encoder.freeze=["embeddings"]',
                                "optim.lr=3e-5"])
    assert config.steps == 25 and config.optim.lr == 3e-5 and config.encoder.freeze == ["embeddings"]
    assert config.tasks[1].loss_weight == 0.5 and config.tasks[1].head == {"hidden_layer": True}
    monkeypatch.setenv("MINIBERT_DATA", "/elsewhere")
    assert load_config(path).data_path(config.tasks[0].train) == Path("/elsewhere/stsb/train.tsv")
    assert load_config(path, ["data_dir=/d"]).data_path("stsb/train.tsv") == Path("/d/stsb/train.tsv")
    assert load_config(path).data_path("/abs/x.tsv") == Path("/abs/x.tsv")
    config.save(tmp_path / "resolved.json")  # a resolved configuration reads back the same
    assert load_config(tmp_path / "resolved.json").to_dict() == config.to_dict()


def test_a_missing_data_file_names_the_task_and_the_setting(tmp_path):
    config = load_config(write(tmp_path, "c.toml", TOML), [f"data_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match=rf"task 'sts': train file not found: {tmp_path}/stsb/train.tsv "
                                                r"\(data_dir = .*: set data_dir, or MINIBERT_DATA"):
        load_task_data(config, config.tasks[0], 0)


@pytest.mark.parametrize("override,match", [
    ("stepz=3", r"unknown key\(s\) \['stepz'\]"),
    ("tasks.pos.lr=1", "no task named 'pos'"),
    ("tasks.topic.dropuot=1", r"task 'topic': unknown key\(s\) \['dropuot'\]"),
    ('tasks.sts.head={"loss": "cosent", "dropout": 0.2}',
     r"task 'sts': option\(s\) \['dropout'\] do not apply to task type 'sts'; "
     r"its options are \['adapter', 'branch', 'loss', 'max_score', 'cosent_scale'\]"),
    ("tasks.topic.head.hiden_layer=true",
     r"task 'topic': option\(s\) \['hiden_layer'\] do not apply to task type 'classification'"),
    ("tasks.topic.head=dropout", "task 'topic': head must be dict.*, got 'dropout'"),
    ("tasks.topic.type=regression", "task 'topic': unknown type 'regression'"),
    ("sampling.strategy=random", "sampling.strategy must be one of"),
    ("optim.grad_accum=3", "not divisible by optim.grad_accum"),
    ("optim.sam_rho=-0.05", r"optim.sam_rho must be in \[0, inf\], got -0.05"),
    ("optim.max_grad_norm=0", r"optim.max_grad_norm must be in \(0, inf\], got 0"),
    ('optim.lr=NaN', r"optim.lr must be in \(0, inf\], got nan"),
    ('encoder.freeze=["layers:x"]', "encoder.freeze: 'layers:x' is not a part"),
    ('encoder.freeze=["head:pos"]', r"encoder.freeze: \['head:pos'\] name no task"),
    ("eval.best_metric=foo", 'eval.best_metric must be "mean" or TASK/METRIC'),
    ("runtime.path=int8", 'runtime.path "int8" is for inference'),
    ("fast=false", 'fast is now runtime.path = "reference"'),
    ("optim.lr=fast", "optim.lr must be float, got 'fast'"),
    ("optim.lrr=1", r"\[optim\]: unknown key\(s\) \['lrr'\]"),
    ("optim=3", r"optim must be a table of settings \(\[optim\]\), got 3"),
    ("steps", "is not KEY=VALUE"),
    ("lr=3e-5", "settings moved into tables: lr is now optim.lr$"),
    ("sampling=round_robin", "sampling is now sampling.strategy"),
    ("fast=true", 'fast is now runtime.path = "fast"'),
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


def test_task_sequence_follows_the_probabilities():
    p = task_probabilities([1, 3], "proportional")
    seq = [tasks_for_step(s, 2, "proportional", p, seed=1)[0] for s in range(4000)]
    assert abs(np.mean(seq) - 0.75) < 0.03  # 4000 draws: the standard error is 0.007
    other = [tasks_for_step(s, 2, "proportional", p, seed=2)[0] for s in range(4000)]
    assert abs(np.mean(other) - 0.75) < 0.03 and sum(a != b for a, b in zip(seq, other, strict=True)) > 1000
    assert [tasks_for_step(s, 3, "round_robin", None, 0) for s in range(5)] == [(0,), (1,), (2,), (0,), (1,)]
    assert [tasks_for_step(s, 3, "round_robin", None, 0, per_step=2) for s in range(3)] == [(0, 1), (2, 0), (1, 2)]
    pairs = [tasks_for_step(s, 3, "proportional", task_probabilities([1, 1, 2], "proportional"), 1, per_step=2)
             for s in range(2000)]
    assert all(len(set(p)) == 2 for p in pairs)  # two different tasks in every step
    # without replacement, the biggest task is in a step more often than not, but not always
    assert 0.7 < np.mean([2 in p for p in pairs]) < 0.95


class RecordingTask:
    """A task whose "collate" returns the examples, to see which ones each step draws (no tokenizer needed)."""

    def __init__(self, name):
        self.name = name

    def collate(self, examples, tokenizer):
        return {"examples": examples}


def test_step_batches_are_consecutive_shuffled_passes(tmp_path):
    """Against a straightforward reference: each task's draws, in step order, read one endless sequence of
    per-epoch shuffles, batch_size at a time; each process gets every world-th example, cut into
    grad_accum micro-batches."""
    sets = [list(range(10)), list(range(100, 107))]
    config = load_config(write(tmp_path, "c.toml", TOML), ["steps=30", "batch_size=4", "optim.grad_accum=2",
                                                           "seed=5", "sampling.strategy=proportional"])
    tasks = [RecordingTask("a"), RecordingTask("b")]
    whole = StepBatches(tasks, sets, None, config)
    sequences = {t: [sets[t][i] for epoch in range(20)
                     for i in np.random.default_rng([5 * 1000 + t, epoch]).permutation(len(sets[t]))] for t in (0, 1)}
    used = {0: 0, 1: 0}
    for step in range(30):
        (t,), (micro,) = whole[step]
        assert (t,) == tasks_for_step(step, 2, "proportional", task_probabilities([10, 7], "proportional"), 5)
        expected = sequences[t][used[t]:used[t] + 4]
        used[t] += 4
        assert [x for m in micro for x in m["examples"]] == expected
        assert [len(m["examples"]) for m in micro] == [2, 2]
        halves = [StepBatches(tasks, sets, None, config, rank=r, world=2)[step][1][0] for r in (0, 1)]
        assert [[x for m in h for x in m["examples"]] for h in halves] == [expected[0::2], expected[1::2]]
    assert min(used.values()) > 10  # both tasks went past the end of their first pass


def test_hold_out_and_subsampling_do_not_depend_on_the_seed(tmp_path):
    train, dev = hold_out(list(range(100)), 0.1, seed=0)
    assert len(dev) == 10 and sorted(train + dev) == list(range(100))
    lines = "".join(f"text {i}\t{'ab'[i % 2]}\n" for i in range(50))
    write(tmp_path, "cls.tsv", lines)
    toml = f'data_dir = "{tmp_path}"\n[[tasks]]\nname = "c"\ntype = "classification"\ntrain = "cls.tsv"\n' \
           "dev_split = 0.2\nmax_dev_examples = 5\nmax_train_examples = 20\n"
    path = write(tmp_path, "c.toml", toml)
    data = {seed: load_task_data(load_config(path, [f"seed={seed}"]), load_config(path).tasks[0], 0)
            for seed in (1, 2)}
    assert data[1] == data[2] and len(data[1][1]) == 5 and len(data[1][0]) == 20
    other_split = load_task_data(load_config(path, ["split_seed=7"]), load_config(path).tasks[0], 0)
    assert other_split[1] != data[1][1]


def test_label_inference(tiny_data, tmp_path):
    ner = read_conll(tiny_data / "ner.txt")
    labels = TokenClassification.infer_labels(ner)
    assert labels == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    sst = read_classification(tiny_data / "sentiment.tsv")
    assert Classification.infer_labels(sst) == ["0", "1"]
    # 1-based ids (AG News' original numbering) name four classes, not five with a phantom class 0
    one_based = [TextExample(f"t{i}", i % 4 + 1) for i in range(12)] + [TextExample("t", 10)]
    names = Classification.infer_labels(one_based)
    assert names == ["1", "2", "3", "4", "10"]
    task = Classification("c", names)
    assert task.label_ids([1, 4, 10, "2"]).tolist() == [0, 3, 4, 1]


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
    batch = fused_model.collate("t", [TextExample("a b c", "a"), TextExample("d e", "b")])
    start = {k: v.clone() for k, v in fused_model.state_dict().items()}
    for step in range(3):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            torch.manual_seed(step)  # the same dropout masks for both
            model.train()
            model("t", batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    # A key bias gets a gradient of pure rounding noise (softmax ignores it), which Adam scales up to steps of
    # about lr: 1% of the smallest lr (1e-5) is the tolerance, far below any wrong step.
    for (name, a), b in zip(fused_model.state_dict().items(), plain_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    moved = [k for k, v in fused_model.state_dict().items() if not torch.equal(v, start[k])]
    assert len(moved) > 10  # the steps did move the weights


def test_schedules():
    assert [lr_multiplier(s, 10, 4, "linear") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(7, 10, 4, "linear") == pytest.approx(0.5)
    assert lr_multiplier(7, 10, 4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(10, 10, 4, "linear") == 0.0 and lr_multiplier(9, 10, 0, "constant") == 1.0


def accumulated_weights(tiny_model_dir, tiny_data, tmp_path, task: str, accum: int, max_grad_norm: float = 1.0,
                        head: dict | None = None):
    from minibert.train import Trainer

    from conftest import tiny_config

    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / f"{task}{accum}", steps=3, eval={"every": 0},
                         optim={"grad_accum": accum, "max_grad_norm": max_grad_norm})
    config["tasks"] = [t for t in config["tasks"] if t["name"] == task]
    if head:
        config["tasks"][0]["head"] = head
    (tmp_path / f"c{accum}.json").write_text(json.dumps(config))
    trainer = Trainer(load_config(tmp_path / f"c{accum}.json"))
    records = [trainer.train_step() for _ in range(3)]
    return records, torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


@pytest.mark.parametrize("task", ["topic", "nli", "sts", "ner"])
def test_gradient_clipping_and_accumulation_match_one_big_batch(tiny_model_dir, tiny_data, tmp_path, task):
    """grad_accum=2 with half batches equals one full batch (no dropout in the tiny model): for NER too,
    whose loss averages over labelled word pieces, which the two halves hold unequal numbers of."""
    (records, one), (_, two) = (accumulated_weights(tiny_model_dir, tiny_data, tmp_path, task, accum,
                                                    max_grad_norm=0.05) for accum in (1, 2))
    assert all(r["grad_norm"] > 0.05 for r in records)  # clipping was active
    torch.testing.assert_close(one, two, atol=1e-6, rtol=1e-5)


def test_cosent_accumulation_ranks_within_micro_batches(tiny_model_dir, tiny_data, tmp_path):
    """What holds for CoSENT, which compares every pair of a batch with every other: accumulation gives
    the mean of the micro-batches' losses, not the loss of the whole batch (documented in sts.py)."""
    from minibert.tasks import STS

    task, cos = STS("s", loss="cosent"), torch.tensor([0.9, 0.1, 0.5, 0.4], requires_grad=True)
    scores = torch.tensor([4.0, 1.0, 2.0, 3.0])
    whole = task.compute_loss(cos, {"labels": scores})
    halves = sum(task.compute_loss(cos[i:i + 2], {"labels": scores[i:i + 2]}) for i in (0, 2)) / 2
    assert not torch.allclose(whole, halves)
    (_, one), (_, two) = (accumulated_weights(tiny_model_dir, tiny_data, tmp_path, "sts", accum,
                                              head={"loss": "cosent"}) for accum in (1, 2))
    assert not torch.allclose(one, two, atol=1e-6, rtol=1e-5)


# ---- metrics -------------------------------------------------------------------------------------


def test_macro_f1_and_entity_scores():
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx((2 / 3 + 0.8) / 2)
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O"]]  # wrong type; stray I- still counts (conlleval)
    scores = entity_prf(pred, gold)
    assert scores == {"precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3)}
    partial = entity_prf([["B-PER", "O", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]])  # span must match
    assert partial["precision"] == 0.5 and partial["recall"] == 0.5


def test_numeric_label_names_never_read_as_positions():
    """Names "0", "1", "3" (class 2 absent from the training file): label 3 is the name "3", and label 2 is
    an error, not a silent alias of the third class."""
    task = Classification("c", ["0", "1", "3"])
    assert task.label_ids([0, 3, "1"]).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match=r"task 'c': label 2 \(example 1\) is not one of \['0', '1', '3'\]"):
        task.label_ids([0, 2])
    named = Classification("s", ["negative", "positive"])  # names are words: integers are ids
    assert named.label_ids([1, 0, "negative"]).tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match=r"label 2 \(example 0\) is not one of .* nor an id in 0..1"):
        named.label_ids([2])


def test_a_token_batch_without_labelled_pieces_adds_zero():
    task = TokenClassification("ner", ["O", "B-PER", "I-PER"])
    logits = torch.randn(1, 2, 3, requires_grad=True)
    loss = task.compute_loss(logits, {"labels": torch.full((1, 2), -100)})
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_the_last_steps_can_go_to_chosen_tasks(tmp_path):
    from minibert.train.batches import task_schedule
    from minibert.train.config import TrainConfig

    tasks = [{"name": n, "type": "classification", "train": "x.tsv"} for n in ("a", "b", "c")]
    plain = TrainConfig(tasks=tasks, steps=40, sampling={"strategy": "proportional"}, seed=3)
    finished = TrainConfig(tasks=tasks, steps=40, seed=3,
                           sampling={"strategy": "proportional", "finish_with": ["c", "a"], "finish_steps": 5})
    before, after = task_schedule(plain, [10, 20, 30]), task_schedule(finished, [10, 20, 30])
    assert after[:35] == before[:35]  # the sampled part is unchanged
    assert after[35:] == [(0,), (2,), (0,), (2,), (0,)]  # step s of the closing phase: finish_with[s % 2]
    with pytest.raises(ValueError, match=r"sampling.finish_with \['d'\] and finish_steps 5"):
        TrainConfig(tasks=tasks, sampling={"finish_with": ["d"], "finish_steps": 5})
    with pytest.raises(ValueError, match="or neither"):
        TrainConfig(tasks=tasks, sampling={"finish_steps": 5})


def test_a_setting_added_after_a_run_was_saved_counts_as_its_default():
    base = {"tasks": [{"name": "sts", "type": "sts", "train": "x.tsv"}], "steps": 5}
    now = load_config(None, base=base).to_dict()
    saved = {**now, "encoder": {k: v for k, v in now["encoder"].items() if k not in ("init", "heads_from")}}
    assert changed_keys(saved, now) == []  # an older run's, without two settings
    changed = load_config(None, ["encoder.init=random", "steps=6"], base=base).to_dict()
    assert changed_keys(saved, changed) == ["encoder.init", "steps"]


def test_a_run_saved_in_the_flat_form_of_older_versions_still_compares():
    """Resuming a run saved before the settings had tables: its config is read in today's form."""
    base = {"tasks": [{"name": "sts", "type": "sts", "train": "x.tsv"}], "steps": 5}
    flat = {"tasks": load_config(None, base=base).to_dict()["tasks"], "steps": 5, "lr": 1e-4,
            "warmup_ratio": 0.1, "schedule": "linear",  # in the old field order: schedule's table after its key
            "sampling": "round_robin", "eval_every": 50,
            "fast": True, "compile": False, "plot": False}
    now = load_config(None, ["optim.lr=1e-4", "sampling.strategy=round_robin", "eval.every=50",
                             'runtime.path="fast"'], base=base).to_dict()
    assert changed_keys(flat, now) == []
    assert changed_keys({**flat, "fast": False}, now) == ["runtime.path"]  # it ran the reference path

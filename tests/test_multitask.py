"""The multi-task model: each task type's batch and loss, predictions, save/load, export, freezing,
a new task type, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minibert.data import PairExample, TaggedSentence, TextExample
from minibert.multitask import MultiTaskModel
from minibert.predict import predict, predict_pairs
from minibert.tasks import STS, TASK_TYPES, Classification, TokenClassification, make_task
from minibert.train.evaluate import evaluate_task
from minibert.train.optim import freeze, trainable_report, unfreeze

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
TASKS = [
    {"name": "topic", "type": "classification", "labels": ["World", "Sports", "Business", "Sci/Tech"]},
    {"name": "sentiment", "type": "classification", "labels": ["negative", "positive"], "hidden_layer": True},
    {"name": "ner", "type": "token_classification", "labels": NER_LABELS},
    {"name": "nli", "type": "nli", "concat_multiplication": True},
    {"name": "sts", "type": "sts", "loss": "cosent"},
    {"name": "cross", "type": "cross_sts"},
]
PAIRS_A = ["a man sleeps", "kids play", "a dog"]
PAIRS_B = ["a person rests", "nobody plays", "a cat"]
EXAMPLES = {
    "topic": [TextExample("Stocks rallied on Friday.", "Business"), TextExample("The match ended 2-1.", "Sports")],
    "sentiment": [TextExample("I loved it", 1), TextExample("Terrible, boring film.", 0)],
    "ner": [TaggedSentence(["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
            TaggedSentence(["Peter", "Blackburn", "unaffable"], ["B-PER", "I-PER", "O"])],
    "nli": [PairExample("a man sleeps", "a person rests", 0), PairExample("kids play", "nobody plays", 2)],
    "sts": [PairExample(a, b, s) for a, b, s in zip(PAIRS_A, PAIRS_B, [4.0, 1.0, 2.0], strict=True)],
    "cross": [PairExample(a, b, s) for a, b, s in zip(PAIRS_A, PAIRS_B, [4.0, 1.0, 2.0], strict=True)],
}


def unlabelled(examples: list) -> list:
    return [TaggedSentence(e.words) if isinstance(e, TaggedSentence) else
            TextExample(e.text) if isinstance(e, TextExample) else PairExample(e.a, e.b) for e in examples]


@pytest.fixture(scope="module")
def model(minilm_dir):
    return MultiTaskModel.from_encoder(minilm_dir, TASKS, seed=1)


def embed(model: MultiTaskModel, texts: list[str]) -> torch.Tensor:
    return model.encoder.encode(texts, convert_to="torch")


def test_each_loss_is_its_formula_on_the_encoder_outputs(model):
    """Logits and loss of every type, against the same quantities computed from the plain encoder."""
    with torch.no_grad():
        topic = model("topic", model.collate("topic", EXAMPLES["topic"]))
        assert_close(topic.logits, model.heads["topic"].out(embed(model, ["Stocks rallied on Friday.",
                                                                           "The match ended 2-1."])), atol=1e-5, rtol=0)
        assert_close(topic.loss, F.cross_entropy(topic.logits, torch.tensor([2, 1])), atol=1e-6, rtol=0)

        nli = model("nli", model.collate("nli", EXAMPLES["nli"]))
        u, v = embed(model, ["a man sleeps", "kids play"]), embed(model, ["a person rests", "nobody plays"])
        expected = model.heads["nli"].classifier(torch.cat([u, v, (u - v).abs(), u * v], dim=-1))
        assert_close(nli.logits, expected, atol=1e-5, rtol=0)
        assert_close(nli.loss, F.cross_entropy(expected, torch.tensor([0, 2])), atol=1e-5, rtol=0)

        sts = model("sts", model.collate("sts", EXAMPLES["sts"]))
        cos = F.cosine_similarity(embed(model, PAIRS_A), embed(model, PAIRS_B))
        assert_close(sts.logits, cos, atol=1e-6, rtol=0)
        gold = [4.0 / 5, 1.0 / 5, 2.0 / 5]  # CoSENT, written as the sum over wrongly ordered pairs
        terms = [torch.exp(20 * (cos[j] - cos[i])) for i in range(3) for j in range(3) if gold[i] > gold[j]]
        assert_close(sts.loss, torch.log(1 + torch.stack(terms).sum()), atol=1e-5, rtol=1e-6)

        cross = model("cross", model.collate("cross", EXAMPLES["cross"]))
        tokens = model.encoder.tokenizer(list(zip(PAIRS_A, PAIRS_B, strict=True)))
        cls = model.encoder.bert(tokens.input_ids, tokens.attention_mask, tokens.token_type_ids).last_hidden_state[:, 0]
        head = model.heads["cross"]
        logit = head.out(torch.tanh(head.dense(cls))).squeeze(-1)
        assert_close(cross.logits, logit, atol=1e-5, rtol=0)
        assert_close(cross.loss, F.binary_cross_entropy_with_logits(logit, torch.tensor(gold)), atol=1e-6, rtol=0)

        for task, examples in EXAMPLES.items():  # without labels: the same logits and no loss
            labelled = model(task, model.collate(task, examples))
            out = model(task, model.collate(task, unlabelled(examples)))
            assert out.loss is None and torch.equal(out.logits, labelled.logits), task


def test_nli_projection_compares_projected_embeddings(minilm_dir):
    model = MultiTaskModel.from_encoder(minilm_dir, [{"name": "nli", "type": "nli", "projection": True}], seed=2)
    with torch.no_grad():
        out = model("nli", model.collate("nli", EXAMPLES["nli"]))
        head = model.heads["nli"]
        u = head.projection(embed(model, ["a man sleeps", "kids play"]))
        v = head.projection(embed(model, ["a person rests", "nobody plays"]))
        assert_close(out.logits, head.classifier(torch.cat([u, v, (u - v).abs()], dim=-1)), atol=1e-5, rtol=0)
    assert MultiTaskModel.from_encoder(minilm_dir, TASKS[3:4]).heads["nli"].projection is None  # off by default


def test_pooling_can_be_chosen_and_survives_saving(minilm_dir, tmp_path):
    model = MultiTaskModel.from_encoder(minilm_dir, TASKS[:1], pooling=["cls"])
    batch = model.encoder.tokenizer(PAIRS_A).tensors()
    with torch.no_grad():
        cls = model.encoder.bert(**batch).last_hidden_state[:, 0]
        assert_close(embed(model, PAIRS_A), F.normalize(cls, dim=-1), atol=1e-6, rtol=0)
    model.save(tmp_path / "cls")
    assert MultiTaskModel.load(tmp_path / "cls").encoder.pooling.config.modes == ("cls",)
    with pytest.raises(ValueError, match="pooling"):
        MultiTaskModel.from_encoder(minilm_dir, TASKS[:1], pooling=["median"])


def test_ner_loss_counts_first_pieces_only(model):
    batch = model.collate("ner", EXAMPLES["ner"])
    out = model("ner", batch)
    tokens = model.encoder.tokenizer([e.words for e in EXAMPLES["ner"]], is_pretokenized=True)
    logp = out.logits.log_softmax(-1)
    picks = []
    for i, example in enumerate(EXAMPLES["ner"]):
        seen = set()
        for position, w in enumerate(tokens.word_ids[i]):
            if w is not None and w not in seen:
                seen.add(w)
                picks.append(logp[i, position, NER_LABELS.index(example.tags[w])])
    assert len(picks) == 7  # one per word, although "unaffable" has several pieces
    assert_close(out.loss, -torch.stack(picks).mean(), atol=1e-6, rtol=0)
    assert model.task("ner").loss_terms(batch) == 7


def test_predict_agrees_with_forward(model):
    texts = [e.text for e in EXAMPLES["topic"]]
    rows = predict(model, texts)
    with torch.no_grad():
        probs = model("topic", model.collate("topic", unlabelled(EXAMPLES["topic"]))).logits.softmax(-1)
    for i, row in enumerate(rows):
        assert set(row) == {"text", "embedding", "topic", "sentiment", "ner"}
        assert row["topic"]["probability"] == pytest.approx(probs[i].max().item(), abs=1e-5)
        assert row["topic"]["probabilities"]["Business"] == pytest.approx(probs[i, 2].item(), abs=1e-5)
        np.testing.assert_allclose(row["embedding"], model.encoder.encode(texts)[i], atol=1e-6)
        assert len(row["ner"]["tags"]) == len(row["ner"]["words"])
    pairs = predict_pairs(model, PAIRS_A, PAIRS_B)
    with torch.no_grad():
        nli_probs = model("nli", model.collate("nli", unlabelled(EXAMPLES["sts"]))).logits.softmax(-1)
        cross = model("cross", model.collate("cross", EXAMPLES["cross"])).logits
    cosine = F.cosine_similarity(embed(model, PAIRS_A), embed(model, PAIRS_B))
    for i, row in enumerate(pairs):
        assert row["nli"]["probabilities"]["contradiction"] == pytest.approx(nli_probs[i, 2].item(), abs=1e-5)
        assert row["similarity"] == pytest.approx(cosine[i].item(), abs=1e-6)
        assert row["sts"]["score"] == pytest.approx(5 * cosine[i].item(), abs=1e-5)
        assert row["cross"]["score"] == pytest.approx(5 * torch.sigmoid(cross[i]).item(), abs=1e-5)


def test_ner_prediction_is_per_word_with_spans(minilm_dir):
    model = MultiTaskModel.from_encoder(minilm_dir, [{"name": "ner", "type": "token_classification",
                                                      "labels": NER_LABELS}])
    with torch.no_grad():  # a head that tags everything B-LOC, whatever the input
        model.heads["ner"].out.weight.zero_()
        model.heads["ner"].out.bias.copy_(torch.tensor([0.0, 0, 0, 5, 0, 0, 0, 0, 0]))
    row = predict(model, ["Unaffable Johanson lives."])[0]["ner"]
    assert row["words"] == ["Unaffable", "Johanson", "lives", "."]
    assert row["tags"] == ["B-LOC"] * 4  # one tag per word, although the words have several pieces
    assert [e["text"] for e in row["entities"]] == ["Unaffable", "Johanson", "lives", "."]
    model.encoder.tokenizer.max_length = 4  # [CLS] + 2 pieces + [SEP]: the last words are cut off
    with pytest.warns(UserWarning, match="truncated"):
        cut = predict(model, ["Unaffable Johanson lives."])[0]["ner"]
    assert cut["tags"][-2:] == ["O", "O"] and cut["tags"][0] == "B-LOC"


def test_save_load_round_trip_is_bit_identical(model, tmp_path):
    model.save(tmp_path / "mt")
    assert {p.name for p in (tmp_path / "mt").iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json", "heads.safetensors", "tasks.json", "modules.json",
        "1_Pooling", "sentence_bert_config.json"}
    loaded = MultiTaskModel.load(tmp_path / "mt")
    assert [t.to_dict() for t in loaded.tasks.values()] == [t.to_dict() for t in model.tasks.values()]
    with torch.no_grad():
        for task, examples in EXAMPLES.items():
            a, b = model(task, model.collate(task, examples)), loaded(task, loaded.collate(task, examples))
            assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss), task
    text = ["Angela Merkel met Emmanuel Macron in Paris."]
    assert predict(model, text)[0]["ner"] == predict(loaded, text)[0]["ner"]


def test_a_version_1_folder_still_loads(model, tmp_path):
    """Version 1 of tasks.json listed every option of every type on each task."""
    model.save(tmp_path / "mt")
    spec = json.loads((tmp_path / "mt" / "tasks.json").read_text())
    everything = {"dropout": 0.1, "hidden_layer": False, "label_all_pieces": False, "concat_rep": True,
                  "concat_difference": True, "concat_multiplication": False, "loss": "cosine_mse", "max_score": 5.0}
    spec["tasks"] = [t for t in spec["tasks"] if t["type"] in ("classification", "ner")]
    spec["tasks"] = [{**everything, **t} for t in spec["tasks"]]
    spec["version"] = 1
    (tmp_path / "mt" / "tasks.json").write_text(json.dumps(spec))
    (tmp_path / "mt" / "heads.safetensors").rename(tmp_path / "heads")
    from safetensors.torch import load_file, save_file

    save_file({k: v for k, v in load_file(tmp_path / "heads").items() if k.split(".")[0] in ("topic", "sentiment")},
              tmp_path / "mt" / "heads.safetensors")
    loaded = MultiTaskModel.load(tmp_path / "mt")
    assert loaded.task("sentiment").hidden_layer and not loaded.task("topic").hidden_layer


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_export_loads_in_sentence_transformers_with_identical_embeddings(minilm_dir, tmp_path, sentences, path):
    """Trained weights, exported: sentence-transformers gives bit-identical embeddings to the reference
    path's, and the fast path's to float rounding (its fused QKV is split on the way out)."""
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
    trained = MultiTaskModel.from_encoder(minilm_dir, TASKS, path=path)
    # move the weights away from the pretrained ones, so that the export must carry *these* weights
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.5)
    trained.train()
    trained("sts", trained.collate("sts", EXAMPLES["sts"])).loss.backward()
    optimizer.step()
    trained.eval()
    trained.export_sentence_transformers(tmp_path / "st")
    reference = st.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    ours = trained.encoder.encode(sentences, batch_size=64, convert_to="torch")
    theirs = reference.encode(sentences, batch_size=64, convert_to_tensor=True)
    if path == "reference":
        assert torch.equal(ours, theirs.cpu())  # one batch, same padding: bit-identical
    torch.testing.assert_close(ours, theirs.cpu(), atol=1e-6, rtol=0)
    pretrained = st.SentenceTransformer(str(minilm_dir), device="cpu")
    assert not torch.allclose(theirs, pretrained.encode(sentences, convert_to_tensor=True), atol=1e-4)


def test_freezing_keeps_frozen_parameters_bit_identical(minilm_dir):
    model = MultiTaskModel.from_encoder(minilm_dir, TASKS)
    freeze(model, "embeddings", "layers:2", "head:sentiment")
    report = trainable_report(model)
    assert "embeddings                       0" in report and "layer.1                          0" in report
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    model.train()
    for _ in range(2):
        for task in ("topic", "sentiment", "ner", "nli", "cross"):
            optimizer.zero_grad()
            model(task, model.collate(task, EXAMPLES[task])).loss.backward()
            optimizer.step()
    frozen = ("encoder.bert.embeddings.", "encoder.bert.blocks.0.", "encoder.bert.blocks.1.", "heads.sentiment.",
              "encoder.bert.pooler.")
    for name, p in model.named_parameters():
        if name.startswith(frozen):
            assert torch.equal(p, before[name]), f"{name} moved although frozen"
        else:
            assert not torch.equal(p, before[name]), f"{name} did not move"
    unfreeze(model, "encoder")
    assert model.encoder.bert.embeddings.word.weight.requires_grad
    assert not model.encoder.bert.pooler.dense.weight.requires_grad
    freeze(model, "encoder")
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.heads["topic"].parameters())


def documented_task_type() -> str:
    """The task-type example of docs/adding-a-task-type.md (the README points there), as code."""
    readme = (Path(__file__).resolve().parents[1] / "docs" / "adding-a-task-type.md").read_text(encoding="utf-8")
    start = readme.index("**Adding a task type**")
    block = readme[readme.index("```python\n", start) + len("```python\n"):]
    return block[:block.index("```")]


def test_a_new_task_type_is_one_class(minilm_dir, tmp_path):
    """The documented example type, defined nowhere else: the model, evaluation, prediction and save/load
    all take it."""
    try:
        exec(compile(documented_task_type(), "docs/adding-a-task-type.md", "exec"), {})
        model = MultiTaskModel.from_encoder(minilm_dir, [{"name": "length", "type": "regression", "scale": 5.0}])
        examples = [TextExample(t, len(t.split())) for t in ("a b", "a b c d e", "one", "x y z w")]
        model.train()
        optimizer = torch.optim.Adam(model.heads.parameters(), lr=0.05)
        for _ in range(30):
            optimizer.zero_grad()
            model("length", model.collate("length", examples)).loss.backward()
            optimizer.step()
        assert evaluate_task(model, "length", examples)["spearman"] > 0.7
        model.save(tmp_path / "m")
        assert json.loads((tmp_path / "m" / "tasks.json").read_text())["tasks"][0]["scale"] == 5.0
        loaded = MultiTaskModel.load(tmp_path / "m")
        assert predict(loaded, ["a b c"])[0]["length"] == predict(model, ["a b c"])[0]["length"]
    finally:
        TASK_TYPES.pop("regression", None)


def test_bad_input_names_the_culprit(model):
    batch = model.collate("topic", EXAMPLES["topic"])
    with pytest.raises(KeyError, match="unknown task 'pos'; known tasks: topic, sentiment, ner, nli, sts, cross"):
        model("pos", batch)
    with pytest.raises(ValueError, match=r"task 'topic': label 'Politics' \(example 1\) is not one of"):
        model.collate("topic", [TextExample("a", "World"), TextExample("b", "Politics")])
    with pytest.raises(ValueError, match=r"task 'sentiment': label 7 \(example 0\)"):
        model.collate("sentiment", [TextExample("a", 7)])
    with pytest.raises(ValueError, match="task 'ner': sentence 1 has 2 words but 3 labels"):
        model.collate("ner", [TaggedSentence(["a"], ["O"]), TaggedSentence(["b", "c"], ["O", "O", "O"])])
    with pytest.raises(ValueError, match="task 'ner': label 'B-FOO'"):
        model.collate("ner", [TaggedSentence(["a"], ["B-FOO"])])
    with pytest.raises(ValueError, match=r"task 'nli': the batch lacks \['input_ids'\]"):
        model("nli", {"attention_mask": batch["attention_mask"]})
    with pytest.raises(ValueError, match="unknown type 'regression'"):
        make_task({"name": "x", "type": "regression"})
    with pytest.raises(ValueError, match=r"option\(s\) \['hiden_layer'\] do not apply to task type 'classification'"):
        make_task({"name": "x", "type": "classification", "labels": ["a", "b"], "hiden_layer": True})
    with pytest.raises(ValueError, match=r"task 'x': option\(s\) \['loss'\] do not apply to task type 'cross_sts'"):
        make_task({"name": "x", "type": "cross_sts", "loss": "cosent"})
    with pytest.raises(ValueError, match=r"option\(s\) \['dropout', 'hidden_layer'\] do not apply to task type 'nli'"):
        make_task({"name": "x", "type": "nli", "dropout": 0.3, "hidden_layer": True})
    with pytest.raises(ValueError, match=r"task 'x' \(sts\) scores pairs and takes no label names, got \['a'\]"):
        STS("x", ["a"])
    with pytest.raises(ValueError, match=r"task 'x': loss 'mse' is not one of \('cosine_mse', 'cosent'\)"):
        STS("x", loss="mse")
    with pytest.raises(ValueError, match="task 'x': max_score must be positive, got 0"):
        make_task({"name": "x", "type": "cross_sts", "max_score": 0})
    with pytest.raises(ValueError, match="'PER' is not a BIO tag"):
        TokenClassification("ner2", ["O", "PER"])
    with pytest.raises(ValueError, match="needs at least two label names"):
        Classification("c", ["only"])
    with pytest.raises(ValueError, match="used twice"):
        MultiTaskModel(model.encoder, [STS("a"), STS("a")])


def test_folder_whose_spec_and_weights_disagree(model, tmp_path):
    folder = tmp_path / "mt"
    model.save(folder)
    spec = json.loads((folder / "tasks.json").read_text())
    spec["tasks"][0]["labels"].append("Politics")  # 5 labels, but the saved head has 4 outputs
    (folder / "tasks.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"topic.out.(bias|weight) has shape \(4,.*\), but .*tasks.json implies \(5,"):
        MultiTaskModel.load(folder)
    spec["tasks"][0]["labels"].pop()
    spec["tasks"].append({"name": "extra", "type": "classification", "labels": ["a", "b"]})
    (folder / "tasks.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"tasks.json: missing 2 tensors: extra.out.weight, extra.out.bias"):
        MultiTaskModel.load(folder)
    spec["tasks"][-1]["type"] = "regression"
    (folder / "tasks.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"tasks.json: task 'extra': unknown type 'regression'"):
        MultiTaskModel.load(folder)
    spec["tasks"].pop()
    (folder / "tasks.json").write_text(json.dumps({**spec, "version": 3}))
    with pytest.raises(ValueError, match=r"tasks.json: format version 3 is not one this minibert reads"):
        MultiTaskModel.load(folder)
    (folder / "tasks.json").write_text(json.dumps({**spec, "version": 1}))
    with pytest.raises(ValueError, match=r"a version-1 cross_sts head .* train the cross-encoder again"):
        MultiTaskModel.load(folder)
    (folder / "tasks.json").unlink()
    with pytest.raises(FileNotFoundError, match="no tasks.json"):
        MultiTaskModel.load(folder)


def test_cli_predict(model, tmp_path, capsys):
    from minibert.cli import main

    model.save(tmp_path / "mt")
    assert main(["predict", "--model", str(tmp_path / "mt"), "Peter Blackburn works in Berlin."]) == 0
    out = capsys.readouterr().out
    for name in ("topic", "sentiment", "ner", "embedding"):
        assert name in out
    expected = predict(model, ["Peter Blackburn works in Berlin."])[0]["topic"]
    assert f"{expected['label']} ({expected['probability']:.2f})" in out
    assert main(["predict", "--model", str(tmp_path / "mt"), "--pairs", "a man sleeps", "a person rests"]) == 0
    out = capsys.readouterr().out
    row = predict_pairs(model, ["a man sleeps"], ["a person rests"])[0]
    assert f"{row['nli']['label']} ({row['nli']['probability']:.2f})" in out and f"{row['similarity']:.4f}" in out
    assert f"cross        {row['cross']['score']:.2f} / 5" in out
    assert main(["predict", "--model", str(tmp_path / "mt"), "--pairs", "odd"]) == 2
    retrieval = MultiTaskModel.from_encoder(tmp_path / "mt", [{"name": "retrieval", "type": "pairs"}])
    retrieval.save(tmp_path / "pairs")
    assert main(["predict", "--model", str(tmp_path / "pairs"), "--pairs", "a man sleeps", "a person rests"]) == 0
    row = predict_pairs(retrieval, ["a man sleeps"], ["a person rests"])[0]
    assert f"retrieval    {row['retrieval']['score']:.4f}" in capsys.readouterr().out


def test_evaluation_scores_examples_in_any_order(model):
    """evaluate_task sorts by length for speed; predictions must stay paired with their gold labels."""
    from minibert.metrics import accuracy, entity_prf, spearman

    scores = [4.0, 0.5, 2.0, 3.0, 1.5, 2.5]  # six distinct pairs: no tied cosines whose order batching could flip
    b_side = PAIRS_B[1:] + PAIRS_B[:1] + PAIRS_B
    pairs = [PairExample(a, b, s) for a, b, s in zip(PAIRS_A * 2, b_side, scores, strict=True)]
    texts = ["Stocks rallied on Friday.", "The match ended 2-1.", "I loved it", "Terrible, boring film.",
             "A much longer headline about markets."]
    gold = ["Business", "Sports", "World", "Sci/Tech", "Business"]
    with torch.inference_mode():
        model.eval()
        cos = model("sts", model.collate("sts", unlabelled(pairs))).logits.numpy()
        pred = model("topic", model.collate("topic", [TextExample(t) for t in texts])).logits.argmax(-1).tolist()
    assert evaluate_task(model, "sts", pairs, batch_size=2)["spearman"] == pytest.approx(
        spearman(cos, np.array(scores)), abs=1e-6)
    topic = evaluate_task(model, "topic", [TextExample(t, g) for t, g in zip(texts, gold, strict=True)], batch_size=2)
    assert topic["accuracy"] == pytest.approx(accuracy(pred, model.task("topic").label_ids(gold).tolist()))
    ner = EXAMPLES["ner"]
    tags = [e.tags for e in ner] + [["O"] * 4, ["B-PER", "O", "O"]]
    sentences = [TaggedSentence(e.words, t) for e, t in zip(ner * 2, tags, strict=True)]
    predicted = [row["ner"]["tags"] for row in predict(model, [" ".join(s.words) for s in sentences])]
    expected = entity_prf(predicted, [s.tags for s in sentences])
    assert evaluate_task(model, "ner", sentences, batch_size=1) == pytest.approx(expected)


def test_a_gold_tag_that_training_never_saw_is_a_miss(model):
    """Evaluation compares tag strings: an entity type outside the task's labels counts against recall."""
    from minibert.metrics import entity_prf

    sentences = [TaggedSentence(["Paris", "is", "big"], ["B-CITY", "O", "O"]), EXAMPLES["ner"][0]]
    predicted = [row["ner"]["tags"] for row in predict(model, [" ".join(s.words) for s in sentences])]
    scores = evaluate_task(model, "ner", sentences)
    assert scores == pytest.approx(entity_prf(predicted, [s.tags for s in sentences]))


def test_pairs_mask_duplicates_and_rank_the_whole_set(minilm_dir):
    """A candidate with the same text as an anchor's positive is not a negative; the metrics rank every
    positive of the evaluation set for each anchor."""
    from minibert.data import RetrievalPair
    from minibert.tasks import Pairs

    model = MultiTaskModel.from_encoder(minilm_dir, [{"name": "pairs", "type": "pairs"}])
    examples = [RetrievalPair("a man sleeps", "a person rests"), RetrievalPair("kids play", "children play"),
                RetrievalPair("a man naps", "a person rests")]  # the same positive twice
    batch = model.collate("pairs", examples)
    with torch.no_grad():
        out = model("pairs", batch)
        scores, labels = model.task("pairs").scores(out.logits, batch)
    assert labels.tolist() == [0, 1, 2] and torch.isfinite(scores.diagonal()).all()
    assert torch.isinf(scores[0, 2]) and torch.isinf(scores[2, 0]) and torch.isfinite(scores[1]).all()
    assert_close(out.loss, F.cross_entropy(scores, torch.arange(3)), atol=1e-6, rtol=0)
    # metrics on hand-made embeddings: anchor 0 ranks its positive 2nd, anchor 1 first, anchor 2 third
    eye = np.eye(3, dtype=np.float32)
    positives = [eye[1], eye[1] * 0.8 + eye[2] * 0.6, eye[0]]
    anchors = [eye[1] * 0.6 + eye[0] * 0.8, eye[1] * 0.7 + eye[2] * 0.7, eye[1]]
    predictions = [{"anchor": a, "positive": p} for a, p in zip(anchors, positives, strict=True)]
    metrics = Pairs("p").metrics(predictions, examples)
    assert metrics == pytest.approx({"mrr@10": (1 / 2 + 1 + 1 / 3) / 3, "recall@1": 1 / 3, "recall@10": 1.0})

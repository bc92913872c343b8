"""The multi-task model: forward per task, predictions, save/load, export, freezing, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from minibert.multitask import MultiTaskModel
from minibert.task_spec import TaskSpec

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
TASKS = [
    {"name": "topic", "type": "classification", "labels": ["World", "Sports", "Business", "Sci/Tech"]},
    {"name": "sentiment", "type": "classification", "labels": ["negative", "positive"], "hidden_layer": True},
    {"name": "ner", "type": "token_classification", "labels": NER_LABELS},
    {"name": "nli", "type": "nli", "concat_multiplication": True},
    {"name": "sts", "type": "sts", "loss": "cosent"},
]
BATCHES = {
    "topic": {"texts": ["Stocks rallied on Friday.", "The match ended 2-1."], "labels": ["Business", "Sports"]},
    "sentiment": {"texts": ["I loved it", "Terrible, boring film."], "labels": [1, 0]},
    "ner": {"words": [["EU", "rejects", "German", "call"], ["Peter", "Blackburn", "unaffable"]],
            "labels": [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER", "O"]]},
    "nli": {"a": ["a man sleeps", "kids play"], "b": ["a person rests", "nobody plays"], "labels": [0, 2]},
    "sts": {"a": ["a man sleeps", "kids play", "a dog"], "b": ["a person rests", "nobody plays", "a cat"],
            "scores": [4.0, 1.0, 2.0]},
}


@pytest.fixture(scope="module")
def model(minilm_dir):
    return MultiTaskModel.from_encoder(minilm_dir, TASKS, seed=1)


def test_every_task_gives_a_loss_and_logits(model):
    expected_shapes = {"topic": (2, 4), "sentiment": (2, 2), "ner": (2, None, 9), "nli": (2, 3), "sts": (3,)}
    for task, batch in BATCHES.items():
        out = model(task, batch)
        assert out.loss is not None and torch.isfinite(out.loss), task
        shape = expected_shapes[task]
        assert out.logits.shape[0] == shape[0] and out.logits.shape[-1] == shape[-1], task
        unlabelled = {k: v for k, v in batch.items() if k not in ("labels", "scores")}
        assert model(task, unlabelled).loss is None


def test_classification_loss_is_cross_entropy_of_the_pooled_embedding(model):
    batch = BATCHES["topic"]
    out = model("topic", batch)
    emb = model.encoder.encode(batch["texts"], convert_to="torch")
    with torch.no_grad():
        logits = model.heads["topic"](emb)
    assert_close(out.logits, logits, atol=1e-5, rtol=0)
    assert_close(out.loss, torch.nn.functional.cross_entropy(logits, torch.tensor([2, 1])), atol=1e-6, rtol=0)


def test_ner_loss_counts_first_pieces_only(model):
    out = model("ner", BATCHES["ner"])
    tokens = model.tokenize_words(BATCHES["ner"]["words"])
    # the word-level gold tags, read off the first piece of each word
    logp = out.logits.log_softmax(-1)
    picks = []
    for i, labels in enumerate(BATCHES["ner"]["labels"]):
        seen = set()
        for position, w in enumerate(tokens.word_ids[i]):
            if w is not None and w not in seen:
                seen.add(w)
                picks.append(logp[i, position, NER_LABELS.index(labels[w])])
    assert len(picks) == 7  # one per word, although "unaffable" has several pieces
    assert_close(out.loss, -torch.stack(picks).mean(), atol=1e-6, rtol=0)


def test_predict_agrees_with_forward(model):
    texts = BATCHES["topic"]["texts"]
    rows = model.predict(texts)
    probs = model("topic", {"texts": texts}).logits.softmax(-1)
    for i, row in enumerate(rows):
        assert set(row) == {"text", "embedding", "topic", "sentiment", "ner"}
        assert row["topic"]["probability"] == pytest.approx(probs[i].max().item(), abs=1e-5)
        assert sum(row["topic"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(row["embedding"], model.encoder.encode(texts)[i], atol=1e-6)
        assert len(row["ner"]["tags"]) == len(row["ner"]["words"])
    pairs = model.predict_pairs(BATCHES["nli"]["a"], BATCHES["nli"]["b"])
    nli_probs = model("nli", {k: BATCHES["nli"][k] for k in ("a", "b")}).logits.softmax(-1)
    cosine = model("sts", {k: BATCHES["nli"][k] for k in ("a", "b")}).logits
    for i, row in enumerate(pairs):
        assert row["nli"]["probabilities"]["contradiction"] == pytest.approx(nli_probs[i, 2].item(), abs=1e-5)
        assert row["similarity"] == pytest.approx(cosine[i].item(), abs=1e-6)


def test_ner_prediction_is_per_word_with_spans(minilm_dir):
    model = MultiTaskModel.from_encoder(minilm_dir, [{"name": "ner", "type": "token_classification",
                                                      "labels": NER_LABELS}])
    with torch.no_grad():  # a head that tags everything B-LOC, whatever the input
        model.heads["ner"].out.weight.zero_()
        model.heads["ner"].out.bias.copy_(torch.tensor([0.0, 0, 0, 5, 0, 0, 0, 0, 0]))
    row = model.predict(["Unaffable Johanson lives."])[0]["ner"]
    assert row["words"] == ["Unaffable", "Johanson", "lives", "."]
    assert row["tags"] == ["B-LOC"] * 4  # one tag per word, although the words have several pieces
    assert [e["text"] for e in row["entities"]] == ["Unaffable", "Johanson", "lives", "."]


def test_save_load_round_trip_is_bit_identical(model, tmp_path):
    model.save(tmp_path / "mt")
    assert {p.name for p in (tmp_path / "mt").iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json", "heads.safetensors", "tasks.json", "modules.json",
        "1_Pooling", "sentence_bert_config.json"}
    loaded = MultiTaskModel.load(tmp_path / "mt")
    assert [t.__dict__ for t in loaded.tasks.values()] == [t.__dict__ for t in model.tasks.values()]
    for task, batch in BATCHES.items():
        a, b = model(task, batch), loaded(task, batch)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss), task
    text = ["Angela Merkel met Emmanuel Macron in Paris."]
    assert model.predict(text)[0]["ner"] == loaded.predict(text)[0]["ner"]


def test_export_loads_in_sentence_transformers_with_identical_embeddings(minilm_dir, tmp_path, sentences):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
    trained = MultiTaskModel.from_encoder(minilm_dir, TASKS)
    # move the weights away from the pretrained ones, so that the export must carry *these* weights
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.5)
    trained.train()
    trained("sts", BATCHES["sts"]).loss.backward()
    optimizer.step()
    trained.eval()
    trained.export_sentence_transformers(tmp_path / "st")
    reference = st.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    ours = trained.encoder.encode(sentences, batch_size=64, convert_to="torch")
    theirs = reference.encode(sentences, batch_size=64, convert_to_tensor=True)
    assert torch.equal(ours, theirs.cpu())  # one batch, same padding: bit-identical
    pretrained = st.SentenceTransformer(str(minilm_dir), device="cpu")
    assert not torch.allclose(theirs, pretrained.encode(sentences, convert_to_tensor=True), atol=1e-4)


def test_freezing_keeps_frozen_parameters_bit_identical(minilm_dir):
    model = MultiTaskModel.from_encoder(minilm_dir, TASKS)
    model.freeze("embeddings", "layers:2", "head:sentiment")
    report = model.trainable_report()
    assert "embeddings                       0" in report and "layer.1                          0" in report
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    model.train()
    for _ in range(2):
        for task in ("topic", "sentiment", "ner", "nli"):
            optimizer.zero_grad()
            model(task, BATCHES[task]).loss.backward()
            optimizer.step()
    frozen = ("encoder.bert.embeddings.", "encoder.bert.blocks.0.", "encoder.bert.blocks.1.", "heads.sentiment.",
              "encoder.bert.pooler.")
    for name, p in model.named_parameters():
        if name.startswith(frozen):
            assert torch.equal(p, before[name]), f"{name} moved although frozen"
        else:
            assert not torch.equal(p, before[name]), f"{name} did not move"
    model.unfreeze("encoder")
    assert model.encoder.bert.embeddings.word.weight.requires_grad
    assert not model.encoder.bert.pooler.dense.weight.requires_grad
    model.freeze("encoder")
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.heads["topic"].parameters())


def test_bad_input_names_the_culprit(model):
    with pytest.raises(KeyError, match="unknown task 'pos'; known tasks: topic, sentiment, ner, nli, sts"):
        model("pos", {"texts": ["x"]})
    with pytest.raises(ValueError, match=r"task 'topic': label 'Politics' \(example 1\) is not one of"):
        model("topic", {"texts": ["a", "b"], "labels": ["World", "Politics"]})
    with pytest.raises(ValueError, match=r"task 'sentiment': label 7 \(example 0\)"):
        model("sentiment", {"texts": ["a"], "labels": [7]})
    with pytest.raises(ValueError, match="task 'ner': sentence 1 has 2 words but 3 labels"):
        model("ner", {"words": [["a"], ["b", "c"]], "labels": [["O"], ["O", "O", "O"]]})
    with pytest.raises(ValueError, match="task 'ner': label 'B-FOO'"):
        model("ner", {"words": [["a"]], "labels": [["B-FOO"]]})
    with pytest.raises(ValueError, match=r"task 'nli' \(nli\) needs batch keys \['a', 'b'\], got \['a', 'labels'\]"):
        model("nli", {"a": ["x"], "labels": [0]})
    with pytest.raises(ValueError, match="unknown type 'regression'"):
        TaskSpec("x", "regression")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hiden_layer'\]"):
        TaskSpec.from_dict({"name": "x", "type": "classification", "labels": ["a", "b"], "hiden_layer": True})
    with pytest.raises(ValueError, match=r"task 'x': option\(s\) \['loss'\] do not apply to task type 'cross_sts'"):
        TaskSpec.from_dict({"name": "x", "type": "cross_sts", "loss": "cosent"})
    with pytest.raises(ValueError, match=r"option\(s\) \['dropout', 'hidden_layer'\] do not apply to task type 'nli'"):
        TaskSpec("x", "nli", dropout=0.3, hidden_layer=True)
    with pytest.raises(ValueError, match=r"task 'x' \(sts\) scores pairs and takes no label names, got \['a'\]"):
        TaskSpec("x", "sts", ["a"])
    with pytest.raises(ValueError, match=r"task 'x': loss 'mse' is not one of \('cosine_mse', 'cosent'\)"):
        TaskSpec("x", "sts", loss="mse")
    with pytest.raises(ValueError, match="task 'x': max_score must be positive, got 0"):
        TaskSpec("x", "cross_sts", max_score=0)
    with pytest.raises(ValueError, match="'PER' is not a BIO tag"):
        TaskSpec("ner2", "token_classification", ["O", "PER"])
    with pytest.raises(ValueError, match="used twice"):
        MultiTaskModel(model.encoder, [TaskSpec("a", "sts"), TaskSpec("a", "sts")])


def test_folder_whose_spec_and_weights_disagree(model, tmp_path):
    folder = tmp_path / "mt"
    model.save(folder)
    spec = json.loads((folder / "tasks.json").read_text())
    spec["tasks"][0]["labels"].append("Politics")  # 5 labels, but the saved head has 4 outputs
    (folder / "tasks.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"topic.out.(bias|weight) has shape \(4,.*\) but .*tasks.json implies \(5,"):
        MultiTaskModel.load(folder)
    spec["tasks"][0]["labels"].pop()
    spec["tasks"].append({"name": "extra", "type": "classification", "labels": ["a", "b"]})
    (folder / "tasks.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"missing \['extra.out.bias', 'extra.out.weight'\]"):
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
    expected = model.predict(["Peter Blackburn works in Berlin."])[0]["topic"]
    assert f"{expected['label']} ({expected['probability']:.2f})" in out
    assert main(["predict", "--model", str(tmp_path / "mt"), "--pairs", "a man sleeps", "a person rests"]) == 0
    out = capsys.readouterr().out
    row = model.predict_pairs(["a man sleeps"], ["a person rests"])[0]
    assert f"{row['nli']['label']} ({row['nli']['probability']:.2f})" in out and f"{row['similarity']:.4f}" in out
    assert main(["predict", "--model", str(tmp_path / "mt"), "--pairs", "odd"]) == 2


def test_evaluation_scores_examples_in_any_order(model):
    """evaluate_task sorts by length for speed; predictions must stay paired with their gold labels."""
    from minibert.data import PairExample, TaggedSentence, TextExample
    from minibert.metrics import accuracy, entity_prf, spearman
    from minibert.train.evaluate import evaluate_task

    sts = BATCHES["sts"]
    scores = [4.0, 0.5, 2.0, 3.0, 1.5, 2.5]  # six distinct pairs: no tied cosines whose order batching could flip
    b_side = sts["b"][1:] + sts["b"][:1] + sts["b"]
    pairs = [PairExample(a, b, s) for a, b, s in zip(sts["a"] * 2, b_side, scores, strict=True)]
    with torch.inference_mode():
        model.eval()
        cos = model("sts", {"a": [p.a for p in pairs], "b": [p.b for p in pairs]}).logits.numpy()
        texts = BATCHES["topic"]["texts"] + BATCHES["sentiment"]["texts"] + ["A much longer headline about markets."]
        gold = ["Business", "Sports", "World", "Sci/Tech", "Business"]
        pred = model("topic", {"texts": texts}).logits.argmax(-1).tolist()
    assert evaluate_task(model, "sts", pairs, batch_size=2)["spearman"] == pytest.approx(
        spearman(cos, np.array([p.label for p in pairs])), abs=1e-6)
    topic = evaluate_task(model, "topic", [TextExample(t, g) for t, g in zip(texts, gold, strict=True)], batch_size=2)
    assert topic["accuracy"] == pytest.approx(accuracy(pred, model.label_ids("topic", gold).tolist()))
    ner = BATCHES["ner"]
    tags = ner["labels"] + [["O"] * 4, ["B-PER", "O", "O"]]
    sentences = [TaggedSentence(w, t) for w, t in zip(ner["words"] * 2, tags, strict=True)]
    expected = entity_prf(model.predict_tags("ner", [s.words for s in sentences]), [s.tags for s in sentences])
    assert evaluate_task(model, "ner", sentences, batch_size=1) == pytest.approx(expected)

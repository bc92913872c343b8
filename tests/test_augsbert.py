"""AugSBERT: the cross-encoder task (against transformers), silver-pair sampling and labelling, and a
bi-encoder run on gold plus silver files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from torch.testing import assert_close

from minibert.data import PairExample, read_sts_tsv
from minibert.metrics import pearson, spearman
from minibert.multitask import MultiTaskModel
from minibert.task_spec import TaskSpec
from minibert.train import load_config, train
from minibert.train.evaluate import evaluate_task
from minibert.train.silver import (
    distinct_sentences,
    label_pairs,
    nearest_neighbour_pairs,
    predict_scores,
    sample_silver_pairs,
    write_sts_tsv,
)
from minibert.train.tasks import load_task_data

A = ["A man is playing a guitar.", "Two dogs run in a field.", "A woman slices an onion.", "The kids are asleep."]
B = ["Someone plays an instrument.", "Animals are outside.", "A man is cooking.", "The children are playing."]
SCORES = [4.2, 3.5, 0.8, 1.0]


@pytest.fixture(scope="module")
def cross(minilm_dir):
    return MultiTaskModel.from_encoder(minilm_dir, [{"name": "cross", "type": "cross_sts"},
                                                    {"name": "sts", "type": "sts"}], seed=3)


def test_cross_encoder_reads_the_pair_as_transformers_does(cross, minilm_dir):
    """Same weights in transformers' BertModel, its tokenizer's pair encoding (token types 0 and 1),
    the [CLS] state through our linear layer: equal logits, and the loss is BCE on score / 5."""
    transformers = pytest.importorskip("transformers", reason="transformers is the reference")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    reference = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    inputs = tokenizer(A, B, padding=True, return_tensors="pt")
    assert inputs["token_type_ids"].max() == 1  # the second sentence really is segment 1
    with torch.no_grad():
        cls = reference(**inputs).last_hidden_state[:, 0]
        expected = cross.heads["cross"].out(cls).squeeze(-1)
    out = cross("cross", {"a": A, "b": B, "scores": SCORES})
    assert_close(out.logits, expected, atol=1e-5, rtol=0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(expected, torch.tensor(SCORES) / 5)
    assert_close(out.loss, bce, atol=1e-6, rtol=0)
    rows = cross.predict_pairs(A, B)
    assert_close(torch.tensor([r["cross"]["score"] for r in rows]), torch.sigmoid(expected) * 5, atol=1e-5, rtol=0)


def test_cross_encoder_saves_loads_and_evaluates(cross, tmp_path):
    cross.save(tmp_path / "m")
    loaded = MultiTaskModel.load(tmp_path / "m")
    assert loaded.spec("cross").type == "cross_sts"
    assert_close(loaded("cross", {"a": A, "b": B}).logits, cross("cross", {"a": A, "b": B}).logits)
    examples = [PairExample(a, b, s) for a, b, s in zip(A, B, SCORES, strict=True)]
    pairs = list(zip(A, B, strict=True))
    predicted = predict_scores(loaded, "cross", pairs)
    metrics = evaluate_task(loaded, "cross", examples)
    assert metrics["spearman"] == pytest.approx(spearman(predicted, np.array(SCORES)))
    assert metrics["pearson"] == pytest.approx(pearson(predicted, np.array(SCORES)))
    # a bi-encoder teacher scores cos(u, v) * 5, clipped at 0; several teachers are averaged
    cosine = torch.nn.functional.cosine_similarity(*(loaded.encoder.encode(x, convert_to="torch") for x in (A, B)))
    assert_close(torch.from_numpy(predict_scores(loaded, "sts", pairs)), cosine.double().clamp(min=0) * 5,
                 atol=1e-5, rtol=0)  # the batches differ (each sentence once), so float32 rounding does too
    assert_close(label_pairs([(loaded, "cross"), (loaded, "sts")], pairs),
                 (predicted + predict_scores(loaded, "sts", pairs)) / 2)
    nli = MultiTaskModel(loaded.encoder, [TaskSpec("nli", "nli")])
    with pytest.raises(ValueError, match="task 'nli' is nli; scoring pairs needs an sts or cross_sts task"):
        predict_scores(nli, "nli", pairs)
    with pytest.raises(ValueError, match="task 'sts' is sts, not cross_sts"):
        loaded.cross_scores("sts", A, B)


def test_nearest_neighbour_pairs_match_brute_force():
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
    cos = torch.nn.functional.cosine_similarity(x[:, None], x[None], dim=-1).numpy()
    np.fill_diagonal(cos, -np.inf)
    expected = {tuple(sorted((i, int(j)))) for i in range(40) for j in np.argsort(-cos[i])[:3]}
    pairs = nearest_neighbour_pairs(x, 3)
    assert pairs == sorted(expected)
    assert all(i < j for i, j in pairs)
    assert nearest_neighbour_pairs(x[:2], 5) == [(0, 1)]  # k larger than the rest: everything once
    with pytest.raises(ValueError, match="k must be >= 1"):
        nearest_neighbour_pairs(x, 0)


def test_silver_pairs_are_new_pairs_of_training_sentences(cross):
    gold = [PairExample(a, b, s) for a, b, s in zip(A, B, SCORES, strict=True)]
    gold.append(PairExample(B[0], A[0], 4.2))  # a sentence pair seen twice, once reversed
    sentences = distinct_sentences(gold)
    assert sentences == [A[0], B[0], A[1], B[1], A[2], B[2], A[3], B[3]]
    pairs = sample_silver_pairs(cross.encoder, gold, k=2)
    gold_pairs = {frozenset((e.a, e.b)) for e in gold}
    assert pairs and all(frozenset(p) not in gold_pairs and p[0] != p[1] for p in pairs)
    assert all(a in sentences and b in sentences for a, b in pairs)
    assert len({frozenset(p) for p in pairs}) == len(pairs)
    # against brute force: each sentence's 2 most cosine-similar others, gold pairs removed
    emb = cross.encoder.encode(sentences, normalize_embeddings=True)
    cos = emb @ emb.T
    np.fill_diagonal(cos, -np.inf)
    nearest = {frozenset((sentences[i], sentences[j])) for i in range(len(sentences)) for j in np.argsort(-cos[i])[:2]}
    assert {frozenset(p) for p in pairs} == nearest - gold_pairs


def test_silver_file_reads_back_as_sts(tmp_path):
    pairs, scores = [("a b", "c d"), ("e", "f g")], [4.25, 0.5]
    write_sts_tsv(tmp_path / "s.tsv", pairs, scores)
    back = read_sts_tsv(tmp_path / "s.tsv")
    assert [(e.a, e.b, e.label) for e in back] == [("a b", "c d", 4.25), ("e", "f g", 0.5)]
    with pytest.raises(ValueError, match="pair 1 holds a tab"):
        write_sts_tsv(tmp_path / "t.tsv", [("a", "b"), ("c\td", "e")], [1.0, 2.0])


def test_gold_plus_silver_training_files(tiny_model_dir, tiny_data, tmp_path):
    """A task's train may be a list of files; a tiny cross-encoder and a bi-encoder both train."""
    silver = tmp_path / "silver.tsv"
    write_sts_tsv(silver, [("A man cuts an onion.", "Two birds fly.")], [0.3])
    sts = {"name": "sts", "type": "sts", "train": [str(tiny_data / "sts.tsv"), str(silver)],
           "dev": str(tiny_data / "sts.tsv")}
    cross = {"name": "cross", "type": "cross_sts", "train": str(tiny_data / "sts.tsv"),
             "dev": str(tiny_data / "sts.tsv"), "test": str(tiny_data / "sts.tsv")}
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", tasks=[sts, cross], steps=4, eval_every=4)
    (tmp_path / "c.json").write_text(json.dumps(config))
    resolved = load_config(tmp_path / "c.json")
    gold = read_sts_tsv(tiny_data / "sts.tsv")
    train_examples, _ = load_task_data(resolved.tasks[0], 0, resolved.seed)
    assert [(e.a, e.b) for e in train_examples] == [(e.a, e.b) for e in gold] + [("A man cuts an onion.",
                                                                                  "Two birds fly.")]
    result = train(resolved)
    assert "sts" not in result["test"]  # it has no test file
    best = MultiTaskModel.load(tmp_path / "run" / "best")
    assert result["test"]["cross"] == pytest.approx(evaluate_task(best, "cross", gold))  # the saved cross-encoder
    config["tasks"][0]["train"] = [str(silver), 3]
    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="train must be a path or a list of paths"):
        load_config(tmp_path / "c.json")

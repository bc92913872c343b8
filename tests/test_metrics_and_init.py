"""Small pieces: the metrics against scipy, scikit-learn and seqeval, BERT's random initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minibert import BertConfig, BertModel
from minibert.metrics import accuracy, entity_prf, macro_f1, pearson, rankdata, spearman

stats = pytest.importorskip("scipy.stats", reason="scipy is the reference for the metrics")


def test_rank_correlations_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 200).astype(float)  # many ties
    y = x + rng.normal(size=200)
    np.testing.assert_allclose(rankdata(x), stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


def test_random_init_follows_bert():
    config = BertConfig(vocab_size=3000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, initializer_range=0.05, pad_token_id=1)
    model = BertModel(config)
    weights = torch.cat([model.embeddings.word.weight[2:].flatten(), model.blocks[0].ffn_in.weight.flatten()])
    assert weights.std().item() == pytest.approx(0.05, rel=0.02)
    assert abs(weights.mean().item()) < 1e-3
    assert torch.all(model.embeddings.word.weight[1] == 0)  # the padding row
    assert torch.all(model.blocks[1].ffn_out.bias == 0)
    assert torch.all(model.blocks[1].attention_norm.weight == 1)


def test_macro_f1_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the reference for F1")
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.6, gold, rng.integers(0, 4, 300))
    pred[pred == 3] = 2  # class 3 is never predicted: its F1 is 0 and still counts
    expected = sklearn_metrics.f1_score(gold, pred, average="macro", labels=[0, 1, 2, 3], zero_division=0)
    assert macro_f1(pred.tolist(), gold.tolist(), 4) == pytest.approx(expected, abs=1e-12)
    assert accuracy(pred.tolist(), gold.tolist()) == pytest.approx(sklearn_metrics.accuracy_score(gold, pred))


def test_entity_scores_match_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics", reason="seqeval is the reference for entity F1")
    rng = np.random.default_rng(2)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    gold = [[tags[i] for i in rng.integers(0, 7, rng.integers(1, 12))] for _ in range(200)]
    pred = [[t if rng.random() < 0.7 else tags[rng.integers(0, 7)] for t in sentence] for sentence in gold]
    ours = entity_prf(pred, gold)  # conlleval's reading: a stray I- opens an entity, as seqeval's default does
    assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, pred), abs=1e-12)
    assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, pred), abs=1e-12)
    assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, pred), abs=1e-12)

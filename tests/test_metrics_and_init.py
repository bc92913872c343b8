"""Small pieces: rank correlation against scipy, BERT's random initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minibert import BertConfig, BertModel
from minibert.metrics import pearson, rankdata, spearman

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

"""Search over embeddings against sentence-transformers' util.semantic_search and paraphrase mining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minibert.search import paraphrase_mining, semantic_search

util = pytest.importorskip("sentence_transformers.util", reason="sentence-transformers is the reference")


def random_embeddings(n: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("score", ["cos", "dot"])
def test_semantic_search_matches_sentence_transformers(score):
    queries, corpus = random_embeddings(7, seed=1), random_embeddings(300, seed=2)
    function = util.cos_sim if score == "cos" else util.dot_score
    expected = util.semantic_search(queries, corpus, top_k=12, score_function=function)
    for chunk_size in (300, 64, 7):  # the answer must not depend on how the corpus is cut
        ours = semantic_search(queries, corpus, top_k=12, score=score, chunk_size=chunk_size)
        for q, (row, ref) in enumerate(zip(ours, expected, strict=True)):
            assert [h["corpus_id"] for h in row] == [h["corpus_id"] for h in ref], (q, chunk_size)
            np.testing.assert_allclose([h["score"] for h in row], [h["score"] for h in ref], atol=1e-6)


def test_ties_go_to_the_lower_index_and_a_memmap_corpus_works(tmp_path):
    corpus = np.repeat(random_embeddings(5, seed=3).numpy(), 4, axis=0)  # every vector four times: rows 4k..4k+3
    np.save(tmp_path / "corpus.npy", corpus)
    on_disk = np.load(tmp_path / "corpus.npy", mmap_mode="r")
    query = corpus[9]  # equal best scores at rows 8, 9, 10, 11
    for chunk_size in (20, 3, 1):
        hits = semantic_search(query, on_disk, top_k=6, chunk_size=chunk_size)[0]
        assert [h["corpus_id"] for h in hits[:4]] == [8, 9, 10, 11]
    assert len(semantic_search(query, on_disk, top_k=100)[0]) == 20  # never more hits than entries
    with pytest.raises(ValueError, match="queries have 16 dimensions but the corpus 8"):
        semantic_search(query, corpus[:, :8])
    with pytest.raises(ValueError, match=r"similarity must be one of \['cosine', 'dot', 'euclidean', 'manhattan'\]"):
        semantic_search(query, corpus, score="l2")


def test_paraphrase_mining_matches_sentence_transformers():
    x = random_embeddings(120, seed=4)
    expected = util.paraphrase_mining_embeddings(x, top_k=5, max_pairs=200)
    ours = paraphrase_mining(x, top_k=5, max_pairs=200, chunk_size=50)
    assert [(i, j) for _, i, j in ours] == [(i, j) for _, i, j in expected]
    np.testing.assert_allclose([s for s, _, _ in ours], [s for s, _, _ in expected], atol=1e-6)
    assert all(i < j for _, i, j in ours)


def test_bad_input_is_a_clear_error():
    corpus = random_embeddings(4).numpy()
    with pytest.raises(ValueError, match="corpus embeddings: the corpus is empty"):
        semantic_search(corpus[:1], corpus[:0])
    with pytest.raises(ValueError, match="query embeddings: expected a non-empty"):
        semantic_search(corpus[:0], corpus)
    with pytest.raises(ValueError, match="corpus embeddings: expected float embeddings, got int64"):
        semantic_search(corpus, np.arange(8).reshape(4, 2))
    with pytest.raises(ValueError, match=r"expected a non-empty \(n, dim\) matrix .* shape \(2, 2, 4\)"):
        semantic_search(corpus[:1], np.zeros((2, 2, 4), np.float32))
    with pytest.raises(ValueError, match="top_k and chunk_size must be >= 1, got 0"):
        semantic_search(corpus, corpus, top_k=0)


def test_retrieval_metrics_on_a_hand_computed_example():
    from minibert.search import retrieval_metrics

    results = [[{"corpus_id": i, "score": 0.0} for i in ranking] for ranking in ([3, 1, 2], [0, 2, 1], [2, 0, 1])]
    relevant = [{1}, {0, 1}, {5}]
    # query 0: its one relevant id at rank 2; query 1: relevant at ranks 1 and 3; query 2: none retrieved
    metrics = retrieval_metrics(results, relevant, ks=(1, 3))
    ndcg_1 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert metrics == pytest.approx({"mrr@10": (1 / 2 + 1 + 0) / 3, "ndcg@10": (1 / np.log2(3) + ndcg_1 + 0) / 3,
                                     "recall@1": (0 + 1 / 2 + 0) / 3, "recall@3": (1 + 1 + 0) / 3})

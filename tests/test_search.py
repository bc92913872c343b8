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
    with pytest.raises(ValueError, match="corpus embeddings: expected float embeddings, got torch.int64"):
        semantic_search(corpus, np.arange(8).reshape(4, 2))
    with pytest.raises(ValueError, match=r"expected a vector or an \(n, dim\) matrix .* shape \(2, 2, 4\)"):
        semantic_search(corpus[:1], np.zeros((2, 2, 4), np.float32))
    with pytest.raises(ValueError, match="top_k must be an integer >= 1, got 0"):
        semantic_search(corpus, corpus, top_k=0)
    with pytest.raises(ValueError, match="corpus embeddings: expected float embeddings, got torch.uint8"):
        semantic_search(corpus, torch.from_numpy(np.packbits(corpus > 0, axis=-1)))  # encode(precision="ubinary")
    for name, value in (("top_k", -1), ("max_pairs", -1), ("chunk_size", 0)):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1, got {value}"):
            paraphrase_mining(corpus, **{name: value})


def test_a_one_vector_corpus_is_one_entry():
    queries, corpus = random_embeddings(3, seed=5), random_embeddings(1, seed=6)[0]
    expected = util.semantic_search(queries, corpus, top_k=5)
    for chunk_size in (1, 4):
        ours = semantic_search(queries, corpus, top_k=5, chunk_size=chunk_size)
        assert [[h["corpus_id"] for h in row] for row in ours] == [[h["corpus_id"] for h in row] for row in expected]
        np.testing.assert_allclose([row[0]["score"] for row in ours], [row[0]["score"] for row in expected], atol=1e-6)


def test_similarity_reads_its_inputs_as_sentence_transformers_does():
    from minibert.similarity import cos_sim, pairwise, similarity

    a, b = random_embeddings(3, seed=7), random_embeddings(4, seed=8)
    # Python floats are float32 there (torch.tensor); float64 stays float64; the enum names a function
    for x, y in ((a.tolist(), b.tolist()), (a.double(), b.double()), (list(a), list(b))):
        expected = util.cos_sim(x, y)
        got = similarity(x, y)
        assert got.dtype == expected.dtype
        torch.testing.assert_close(got, expected)
    expected = util.cos_sim(a.double(), b.double()).numpy()
    torch.testing.assert_close(cos_sim(a.double().numpy(), b.double().numpy()), expected)
    rows = [(1.0, 2.0), (3.0, 1.0)], [(1.0, 2.0), (-3.0, -1.0)]  # rows as tuples (from zip, say)
    torch.testing.assert_close(pairwise(*rows), util.pairwise_cos_sim(*map(torch.tensor, rows)))
    function = util.SimilarityFunction.DOT_PRODUCT
    torch.testing.assert_close(similarity(a, b, function), util.dot_score(a, b))
    torch.testing.assert_close(pairwise(a, a, function), util.pairwise_dot_score(a, a))
    torch.testing.assert_close(similarity(a.double(), b), util.cos_sim(a.double(), b.double()))  # (refused there)
    with pytest.raises(ValueError, match=r"a: expected a vector or an \(n, dim\) matrix .* shape \(1, 3, 16\)"):
        similarity(a[None], b)
    with pytest.raises(ValueError, match="b: expected float embeddings, got torch.uint8"):
        similarity(a, torch.from_numpy(np.packbits(b.numpy() > 0, axis=-1)))
    with pytest.raises(ValueError, match="a has 16 dimensions but b 8"):
        similarity(a, b[:, :8])


def test_retrieval_metrics_on_a_hand_computed_example():
    from minibert.search import retrieval_metrics

    rankings = [3, 1, 2, 0], [0, 2, 1, 3], [2, 0, 1, 3]
    results = [[{"corpus_id": i, "score": 0.0} for i in ranking] for ranking in rankings]
    relevant = [{1}, [0, 1], {5}]  # (any collection of ids)
    # query 0: its one relevant id at rank 2; query 1: relevant at ranks 1 and 3; query 2: none retrieved
    metrics = retrieval_metrics(results, relevant, ks=(1, 3), corpus_size=4)
    ndcg_1 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert metrics == pytest.approx({"mrr@10": (1 / 2 + 1 + 0) / 3, "ndcg@10": (1 / np.log2(3) + ndcg_1 + 0) / 3,
                                     "recall@1": (0 + 1 / 2 + 0) / 3, "recall@3": (1 + 1 + 0) / 3})
    # a metric read from fewer hits than it needs would miss what lies below them: an error, not a lower number
    with pytest.raises(ValueError, match="query 0: 4 hits, but these metrics read 10: search with top_k >= 10"):
        retrieval_metrics(results, relevant, ks=(1, 3))
    with pytest.raises(ValueError, match="query 0: 4 hits, but these metrics read 5"):
        retrieval_metrics(results, relevant, ks=(1, 100), corpus_size=5)
    with pytest.raises(ValueError, match="ks: give at least one k"):
        retrieval_metrics(results, relevant, ks=(), corpus_size=4)
    with pytest.raises(ValueError, match=r"query 1: relevant ids must be corpus indices \(integers\), got 'a'"):
        retrieval_metrics(results, [{1}, {"a"}, {5}], ks=(1,), corpus_size=4)


@pytest.mark.parametrize("chunk_size", [1024, 7])
def test_community_detection_matches_sentence_transformers(chunk_size):
    """Clusters of near-copies around random centres, of sizes on both sides of min_community_size, some of them
    close enough to each other to compete for members."""
    from minibert.search import community_detection

    generator = torch.Generator().manual_seed(9)
    centres = torch.randn(12, 16, generator=generator)
    centres[1] = centres[0] + 0.3 * torch.randn(16, generator=generator)  # two clusters that overlap
    sizes = [9, 7, 2, 3, 6, 4, 1, 8, 5, 3, 2, 6]
    x = torch.cat([c + 0.25 * torch.randn(n, 16, generator=generator) for c, n in zip(centres, sizes, strict=True)])
    x = x[torch.randperm(len(x), generator=generator)]
    for threshold, min_size in ((0.9, 3), (0.8, 5), (0.95, 2), (0.99, 40)):
        expected = util.community_detection(x, threshold=threshold, min_community_size=min_size)
        got = community_detection(x, threshold=threshold, min_community_size=min_size, chunk_size=chunk_size)
        assert got == [list(c) for c in expected], (threshold, min_size)
    assert len(community_detection(x, threshold=0.9, min_community_size=3)) > 3  # (the cases find communities)
    # float64 embeddings are scored in float64, and the threshold rounded to float32, as there: thresholds a hair
    # (1e-12) off pairs' cosines and off those rounded to float32 fall on the same side
    x64 = x.double()
    cosines = torch.nn.functional.normalize(x64, dim=-1) @ torch.nn.functional.normalize(x64, dim=-1).T
    for threshold in [f(c) + d for c in cosines[0, 1:6].tolist() for d in (-1e-12, 1e-12)
                      for f in (float, lambda c: float(np.float32(c)))]:
        assert community_detection(x64, threshold=threshold, min_community_size=2) == \
            [list(c) for c in util.community_detection(x64, threshold=threshold, min_community_size=2)]
    with pytest.raises(ValueError, match="min_community_size must be an integer >= 1, got 0"):
        community_detection(x, min_community_size=0)
    for threshold in (float("nan"), 1.5):
        with pytest.raises(ValueError, match=f"threshold must be a cosine, in -1..1, got {threshold}"):
            community_detection(x, threshold=threshold)
    # a NumPy float64 threshold stays float64 there (torch.tensor keeps its dtype): at a pair's cosine exactly
    for threshold in [kind(c) for c in cosines[0, 1:6].tolist() for kind in (np.float64, float, torch.tensor)]:
        assert community_detection(x64, threshold=threshold, min_community_size=2) == \
            [list(c) for c in util.community_detection(x64, threshold=threshold, min_community_size=2)], threshold

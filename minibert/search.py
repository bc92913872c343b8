"""Search with embeddings: the corpus entries closest to each query, the closest pairs within one set, and groups
of near-duplicates (communities).

Search and mining scan the corpus in chunks and keep only each query's best ``top_k`` so far, so memory is bounded
by (queries x chunk), not by the corpus; a chunk may come from a memory-mapped ``.npy`` on disk (communities hold
the embeddings, and score a chunk of them against all at a time). Equal scores go to the lower corpus index,
whatever the chunk size. Scores are float32 (of float64 embeddings too, but for communities, as there), and a
product's last bit can depend on the shape of the chunk it is computed in, as a BLAS sums it: two copies of one
entry can score one rounding step apart, as in sentence-transformers.
"""

from __future__ import annotations

import numbers
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from minibert.inputs import whole_number
from minibert.similarity import SIMILARITIES, check_name, matrix

Score = Literal["cosine", "dot", "euclidean", "manhattan", "cos"]  # "cos": cosine, its older name here


def as_matrix(embeddings: np.ndarray | torch.Tensor, what: str, offset: int = 0,
              keep_float64: bool = False) -> torch.Tensor:
    """Float32 rows (n, dim) (float64 ones kept where ``keep_float64``), finite; ``offset``: the index of the first
    row, for the errors."""
    if not isinstance(embeddings, torch.Tensor):  # a NumPy chunk (of a read-only memmap, perhaps) is read into
        embeddings = np.array(embeddings)  # memory: it is only a chunk
    x = matrix(embeddings, what)
    x = x if keep_float64 and x.dtype == torch.float64 else x.float()
    if len(x) == 0 or x.shape[1] == 0:
        raise ValueError(f"{what}: expected a non-empty (n, dim) matrix of embeddings, got shape {tuple(x.shape)}")
    bad = (~torch.isfinite(x)).any(dim=1).nonzero()
    if len(bad):  # a NaN would rank anywhere: an error, not a silently wrong result
        raise ValueError(f"{what}: row {offset + int(bad[0])} holds NaN or infinite values")
    return x


def prepare(x: torch.Tensor, score: str) -> torch.Tensor:
    """Rows ready to be scored: unit vectors for the cosine (then it is their dot product), else as they are."""
    return F.normalize(x, dim=-1) if score == "cosine" else x


def scores(queries: torch.Tensor, chunk: torch.Tensor, score: str) -> torch.Tensor:
    """(queries, chunk) scores of prepared rows, larger meaning closer (distances negated)."""
    return queries @ chunk.T if score in ("cosine", "dot") else SIMILARITIES[score](queries, chunk)


def merge_top_k(best_scores: torch.Tensor, best_ids: torch.Tensor, new_scores: torch.Tensor, new_ids: torch.Tensor,
                top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's top_k of the kept candidates and a new chunk, kept in id order, ties to the lower id.

    The kept ids are all below the chunk's and stay in id order, so the candidates come in id order; a
    stable sort by score then puts the lower id first among equal scores, whatever the chunking.
    """
    all_scores, all_ids = torch.cat([best_scores, new_scores], dim=1), torch.cat([best_ids, new_ids], dim=1)
    top = torch.sort(all_scores, dim=1, descending=True, stable=True).indices[:, :top_k]
    top = top.sort(dim=1).values  # back to id order (positions in id order are ids in id order)
    return all_scores.gather(1, top), all_ids.gather(1, top)


def best_first(scores: torch.Tensor, ids: torch.Tensor) -> tuple[list, list]:
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return scores.gather(1, order).tolist(), ids.gather(1, order).tolist()


@torch.inference_mode()
def semantic_search(query_embeddings: np.ndarray | torch.Tensor, corpus_embeddings: np.ndarray | torch.Tensor,
                    top_k: int = 10, score: Score = "cosine", chunk_size: int = 50_000) -> list[list[dict]]:
    """For each query, its ``top_k`` corpus entries as ``{"corpus_id", "score"}``, best first (fewer when
    the corpus is smaller than ``top_k``, as in sentence-transformers).

    ``score``: one of ``minibert.similarity``'s (cosine, dot, euclidean, manhattan; larger is closer), the one
    the model was trained for (``SentenceEncoder.settings.similarity_fn_name``). The corpus may be a
    ``np.memmap``: only ``chunk_size`` rows of it are in memory at a time. (sentence-transformers gives empty
    lists for no queries, an empty corpus or ``top_k`` 0; here each is an error.)
    """
    score = check_name(score)
    top_k, chunk_size = whole_number("top_k", top_k), whole_number("chunk_size", chunk_size)
    queries = prepare(as_matrix(query_embeddings, "query embeddings"), score)
    if getattr(corpus_embeddings, "ndim", 2) == 1:  # one vector: a corpus of one entry
        corpus_embeddings = corpus_embeddings[None]
    n = len(corpus_embeddings)
    if n == 0:
        raise ValueError("corpus embeddings: the corpus is empty")
    best_scores = torch.empty(len(queries), 0)
    best_ids = torch.empty(len(queries), 0, dtype=torch.long)
    for start in range(0, n, chunk_size):
        chunk = as_matrix(corpus_embeddings[start:start + chunk_size], "corpus embeddings", offset=start)
        if chunk.shape[1] != queries.shape[1]:
            raise ValueError(f"queries have {queries.shape[1]} dimensions but the corpus {chunk.shape[1]}")
        ids = torch.arange(start, start + len(chunk)).expand(len(queries), -1)
        best_scores, best_ids = merge_top_k(best_scores, best_ids, scores(queries, prepare(chunk, score), score),
                                            ids, top_k)
    return [[{"corpus_id": int(i), "score": float(s)} for s, i in zip(row_s, row_i, strict=True)]
            for row_s, row_i in zip(*best_first(best_scores, best_ids), strict=True)]


@torch.inference_mode()
def paraphrase_mining(embeddings: np.ndarray | torch.Tensor, top_k: int = 100, max_pairs: int = 500_000,
                      score: Score = "cosine", chunk_size: int = 5_000) -> list[tuple[float, int, int]]:
    """The best-scoring distinct pairs (score, i, j), i < j, within one set: each entry is paired with its
    ``top_k`` nearest other entries, a pair found from both ends counts once, best first (ties: lower
    i, then lower j), at most ``max_pairs``."""
    score = check_name(score)
    top_k, max_pairs = whole_number("top_k", top_k), whole_number("max_pairs", max_pairs)
    chunk_size = whole_number("chunk_size", chunk_size)
    x = prepare(as_matrix(embeddings, "embeddings"), score)
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(x), chunk_size):
        queries = x[start:start + chunk_size]
        rows = torch.arange(start, start + len(queries))
        best_scores = torch.empty(len(queries), 0)
        best_ids = torch.empty(len(queries), 0, dtype=torch.long)
        for corpus_start in range(0, len(x), chunk_size):
            chunk = x[corpus_start:corpus_start + chunk_size]
            chunk_scores = scores(queries, chunk, score)
            ids = torch.arange(corpus_start, corpus_start + len(chunk)).expand(len(queries), -1)
            chunk_scores = chunk_scores.masked_fill(ids == rows[:, None], float("-inf"))  # not with itself
            best_scores, best_ids = merge_top_k(best_scores, best_ids, chunk_scores, ids, top_k)
        for i, row_scores, row_ids in zip(rows.tolist(), best_scores.tolist(), best_ids.tolist(), strict=True):
            for s, j in zip(row_scores, row_ids, strict=True):
                if s != float("-inf"):
                    pairs[(min(i, j), max(i, j))] = s
    ranked = sorted(((s, i, j) for (i, j), s in pairs.items()), key=lambda p: (-p[0], p[1], p[2]))
    return ranked[:max_pairs]


@torch.inference_mode()
def community_detection(embeddings: np.ndarray | torch.Tensor, threshold: float = 0.75, min_community_size: int = 10,
                        chunk_size: int = 1024) -> list[list[int]]:
    """Groups of near-duplicates, as sentence-transformers' ``util.community_detection`` finds them, largest
    first: an entry with at least ``min_community_size`` entries (itself among them) at a cosine of at least
    ``threshold`` is a candidate centre; candidates, the larger first (equal sizes: the lower index), each keep
    the members no community before them took, and stay if they still have ``min_community_size``. Each
    community lists its centre, then its members closest first (ties: the lower index)."""
    min_community_size = whole_number("min_community_size", min_community_size)
    chunk_size = whole_number("chunk_size", chunk_size)
    threshold = cosine_threshold(threshold)
    x = prepare(as_matrix(embeddings, "embeddings", keep_float64=True), "cosine")  # (float64 scored in float64)
    candidates = []
    for start in range(0, len(x), chunk_size):
        chunk_scores = x[start:start + chunk_size] @ x.T
        close = chunk_scores >= threshold
        for row in (close.sum(1) >= min_community_size).nonzero().flatten().tolist():
            members = close[row].nonzero().flatten()
            order = torch.sort(chunk_scores[row, members], descending=True, stable=True).indices
            candidates.append((start + row, members[order].numpy()))
    candidates.sort(key=lambda c: -len(c[1]))  # (stable: equal sizes stay in the order of their centres)
    taken, communities = np.zeros(len(x), dtype=bool), []
    for centre, members in candidates:
        if taken[centre]:
            continue
        free = members[~taken[members]]
        if len(free) >= min_community_size:
            community = [centre, *(int(m) for m in free if m != centre)]
            communities.append(community)
            taken[community] = True
    return sorted(communities, key=len, reverse=True)


def cosine_threshold(threshold, name: str = "threshold") -> float:
    """``threshold`` as sentence-transformers compares with it, a tensor of it (a Python float becomes float32,
    torch's default dtype), if it is a cosine (-1..1), else an error naming ``name`` (NaN too: nothing is close)."""
    try:
        value = torch.as_tensor(threshold)
    except (TypeError, ValueError, RuntimeError):
        value = None
    if value is None or value.numel() != 1 or value.dtype == torch.bool or not -1 <= value.item() <= 1:
        raise ValueError(f"{name} must be a cosine, in -1..1, got {threshold!r}")
    return value.item()


def retrieval_metrics(results: list[list[dict]], relevant: list[set[int]], ks: tuple[int, ...] = (1, 10, 100),
                      corpus_size: int | None = None) -> dict:
    """MRR@10, nDCG@10 (binary relevance) and recall@k of search results (``semantic_search``'s) against each
    query's relevant corpus ids. Each query needs max(10, *ks) hits, or the whole corpus where ``corpus_size``
    says it is smaller: a metric read from fewer hits would miss what lies below them."""
    if len(results) != len(relevant):
        raise ValueError(f"{len(results)} result lists but {len(relevant)} relevance sets")
    if not ks:
        raise ValueError("ks: give at least one k for recall@k")
    ks = tuple(whole_number(f"ks[{i}]", k) for i, k in enumerate(ks))
    needed = max(10, *ks) if corpus_size is None else min(max(10, *ks), whole_number("corpus_size", corpus_size))
    mrr, ndcg, recall = [], [], {k: [] for k in ks}
    for q, (hits, gold) in enumerate(zip(results, relevant, strict=True)):
        gold = set(gold)
        if not gold:
            raise ValueError(f"query {q}: every query needs at least one relevant corpus id")
        bad = next((i for i in gold if isinstance(i, bool) or not isinstance(i, numbers.Integral)), None)
        if bad is not None:
            raise ValueError(f"query {q}: relevant ids must be corpus indices (integers), got {bad!r}")
        if len(hits) < needed:
            raise ValueError(f"query {q}: {len(hits)} hits, but these metrics read {needed}: search with top_k >= "
                             f"{needed} (or give corpus_size, where the corpus has fewer entries)")
        ids = [h["corpus_id"] for h in hits]
        first = next((rank for rank, i in enumerate(ids[:10], start=1) if i in gold), None)
        mrr.append(1.0 / first if first else 0.0)
        dcg = sum(1.0 / np.log2(rank + 1) for rank, i in enumerate(ids[:10], start=1) if i in gold)
        ideal = sum(1.0 / np.log2(rank + 1) for rank in range(1, min(len(gold), 10) + 1))
        ndcg.append(dcg / ideal)
        for k in ks:
            recall[k].append(len(gold & set(ids[:k])) / len(gold))
    return {"mrr@10": float(np.mean(mrr)), "ndcg@10": float(np.mean(ndcg)),
            **{f"recall@{k}": float(np.mean(v)) for k, v in recall.items()}}

"""AugSBERT's silver pairs (Thakur et al., 2021): new pairs recombined from the training sentences,
scored by a cross-encoder, then added to a bi-encoder's training data.

STS-B train has only 5,749 labelled pairs, but about twice as many distinct sentences, and most
pairings of them were never labelled. Random pairings would almost all be unrelated (gold score ~0),
so each sentence is paired with its k nearest neighbours under a bi-encoder instead. The labels come
from a cross-encoder (``cross_sts``), which reads both sentences at once, or from the average of
several teachers (``label_pairs``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from minibert.data import PairExample
from minibert.multitask import MultiTaskModel
from minibert.sentence import SentenceEncoder
from minibert.task_spec import SCORE_TASKS


def distinct_sentences(examples: list[PairExample]) -> list[str]:
    """Every sentence of the pairs, once, in order of first appearance."""
    return list(dict.fromkeys(s for e in examples for s in (e.a, e.b)))


def nearest_neighbour_pairs(embeddings: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """(i, j) with i < j for each row's k most cosine-similar other rows; a pair found from both ends
    is listed once. Sorted, so the result does not depend on ties in the search order."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(embeddings) < 2:
        raise ValueError(f"need at least two sentences to pair, got {len(embeddings)}")
    x = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    k = min(k, len(x) - 1)
    pairs = set()
    for start in range(0, len(x), 1024):  # a block of rows at a time: the full matrix may not fit
        sims = x[start:start + 1024] @ x.T
        rows = torch.arange(start, start + len(sims))
        sims[rows - start, rows] = float("-inf")  # a sentence is not its own neighbour
        for i, neighbours in zip(rows.tolist(), sims.topk(k, dim=-1).indices.tolist(), strict=True):
            pairs.update((min(i, j), max(i, j)) for j in neighbours)
    return sorted(pairs)


def sample_silver_pairs(encoder: SentenceEncoder, examples: list[PairExample], k: int = 3,
                        batch_size: int = 64) -> list[tuple[str, str]]:
    """Unlabelled pairs of training sentences: each with its k nearest neighbours, minus the gold pairs
    (in either order), which already have a better label than any model can give."""
    sentences = distinct_sentences(examples)
    embeddings = encoder.encode(sentences, batch_size=batch_size, convert_to="torch")
    gold = {frozenset((e.a, e.b)) for e in examples}
    return [(sentences[i], sentences[j]) for i, j in nearest_neighbour_pairs(embeddings, k)
            if frozenset((sentences[i], sentences[j])) not in gold]


@torch.inference_mode()
def predict_scores(model: MultiTaskModel, task: str, pairs: list[tuple[str, str]], batch_size: int = 64) -> np.ndarray:
    """Each pair's predicted score on the gold scale (0..max_score): a cross-encoder's sigmoid score, or
    a bi-encoder's cosine times max_score, clipped at 0 (the gold scale has no negative scores)."""
    spec = model.spec(task)
    if spec.type not in SCORE_TASKS:
        raise ValueError(f"task {task!r} is {spec.type}; scoring pairs needs an sts or cross_sts task")
    if not pairs:
        raise ValueError("no pairs to score")
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    if spec.type == "sts":  # silver pairs reuse each sentence several times: embed every sentence once
        sentences = list(dict.fromkeys(a + b))
        row = {s: i for i, s in enumerate(sentences)}
        emb = model.encoder.encode(sentences, batch_size=batch_size, convert_to="torch").float()
        cosine = torch.nn.functional.cosine_similarity(emb[[row[s] for s in a]], emb[[row[s] for s in b]], dim=-1)
        return cosine.clamp(0, 1).numpy().astype(np.float64) * spec.max_score
    return model.cross_scores(task, a, b, batch_size).numpy().astype(np.float64)


def label_pairs(teachers: list[tuple[MultiTaskModel, str]], pairs: list[tuple[str, str]],
                batch_size: int = 64) -> np.ndarray:
    """The mean of several (model, task) teachers' scores. Models of different kinds (a cross-encoder and
    a bi-encoder) make different mistakes, so their average can teach better than either; whether it
    does is for dev to say (scripts/silver.py --dev)."""
    if not teachers:
        raise ValueError("label_pairs needs at least one teacher")
    return np.mean([predict_scores(model, task, pairs, batch_size) for model, task in teachers], axis=0)


def write_sts_tsv(path: str | Path, pairs: list[tuple[str, str]], scores: list[float], genre: str = "silver") -> None:
    """Pairs in the STS Benchmark's TSV layout (genre, source, year, id, score, sentence1, sentence2),
    so that ``read_sts_tsv`` and every STS tool read them like the gold files."""
    if len(pairs) != len(scores):
        raise ValueError(f"{len(pairs)} pairs but {len(scores)} scores")
    lines = []
    for i, ((a, b), score) in enumerate(zip(pairs, scores, strict=True)):
        if any(c in a + b for c in "\t\n\r"):
            raise ValueError(f"pair {i} holds a tab or line break, which the TSV cannot represent: {(a, b)!r}")
        lines.append(f"{genre}\tminibert\t-\t{i:05d}\t{score:.4f}\t{a}\t{b}\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(lines), encoding="utf-8")

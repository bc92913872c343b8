"""AugSBERT's silver pairs (Thakur et al., 2021): new pairs recombined from the training sentences,
scored by a cross-encoder, then added to a bi-encoder's training data.

STS-B train has only 5,749 labelled pairs, but about twice as many distinct sentences, and most
pairings of them were never labelled. Random pairings would almost all be unrelated (gold score ~0),
so each sentence is paired with its k nearest neighbours under a bi-encoder instead. The labels come
from a cross-encoder (``cross_sts``), which reads both sentences at once, or from the average of
several teachers (``label_pairs``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from minibert.data import PairExample, read_sts_tsv
from minibert.metrics import spearman
from minibert.multitask import MultiTaskModel
from minibert.predict import run_task
from minibert.sentence import SentenceEncoder

SCORE_TASKS = ("sts", "cross_sts")


USAGE = """Silver pairs: pair each training sentence with its nearest neighbours, score the new pairs
with one or more teachers (their scores averaged), and write them as an STS TSV for
augsbert.toml. With --dev, first prints each teacher's dev Spearman and the
average's, so the choice of teachers is made on dev.

    python experiments/augsbert/silver.py --teachers runs/stsb-cross/best [runs/stsb-seeds/soup] \\
        --train ../shared/data/stsb/train.tsv --out runs/stsb-silver.tsv [--dev DEV] [--top-k 3]

A teacher is a folder saved by MultiTaskModel.save with one sts or cross_sts task (or FOLDER:TASK).
"""


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
    spec = model.task(task)
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
    return np.array([row["score"] for row in run_task(model, task, pairs, batch_size)], dtype=np.float64)


def label_pairs(teachers: list[tuple[MultiTaskModel, str]], pairs: list[tuple[str, str]],
                batch_size: int = 64) -> np.ndarray:
    """The mean of several (model, task) teachers' scores. Models of different kinds (a cross-encoder and
    a bi-encoder) make different mistakes, so their average can teach better than either; whether it
    does is for dev to say (--dev)."""
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


def load_teacher(arg: str) -> tuple[MultiTaskModel, str]:
    folder, _, task = arg.partition(":")
    model = MultiTaskModel.load(folder)
    if not task:
        tasks = [name for name, spec in model.tasks.items() if spec.type in SCORE_TASKS]
        if len(tasks) != 1:
            raise SystemExit(f"error: {folder} has {len(tasks)} sts/cross_sts tasks {tasks}; name one as {folder}:TASK")
        task = tasks[0]
    model.task(task)  # an unknown task name fails here, naming the known ones
    return model, task


def main() -> None:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", required=True, help="FOLDER or FOLDER:TASK, scores averaged")
    parser.add_argument("--train", required=True, help="the gold STS training file (never dev or test)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dev", help="a gold dev file: print each teacher's Spearman on it and the average's")
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2", help="the bi-encoder that finds neighbours")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    teachers = [load_teacher(t) for t in args.teachers]
    if args.dev:
        dev = read_sts_tsv(args.dev)
        dev_pairs, gold = [(e.a, e.b) for e in dev], np.array([e.label for e in dev], dtype=np.float64)
        scores = [predict_scores(m, t, dev_pairs, args.batch_size) for m, t in teachers]
        for name, s in zip(args.teachers, scores, strict=True):
            print(f"dev Spearman {spearman(s, gold):.4f}  {name}")
        print(f"dev Spearman {spearman(np.mean(scores, axis=0), gold):.4f}  average of {len(teachers)} teacher(s)")
    train = read_sts_tsv(args.train)
    pairs = sample_silver_pairs(SentenceEncoder.from_pretrained(args.encoder), train, args.top_k, args.batch_size)
    silver = label_pairs(teachers, pairs, args.batch_size)
    write_sts_tsv(args.out, pairs, silver.tolist())
    bins = np.arange(6)
    print(f"{len(pairs)} silver pairs from {len(train)} gold pairs -> {args.out}")
    print("share per score bin  " + "  ".join(f"[{b},{b + 1})" for b in bins[:-1]))
    for name, s in (("gold", [e.label for e in train]), ("silver", silver)):
        share = np.histogram(np.clip(s, 0, 4.999), bins=bins)[0] / len(s)
        print(f"{name:21}" + "  ".join(f"{p:5.2f}" for p in share))


if __name__ == "__main__":
    main()

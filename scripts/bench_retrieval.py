"""Retrieval on SNLI test: each premise is a query, every hypothesis of the file the corpus, and the
premise's entailed hypotheses the relevant documents. Prints MRR@10, nDCG@10 and recall@1/10/100 for
each model (any sentence-transformers folder, a saved multi-task model included).

    python scripts/bench_retrieval.py --make-train-pairs runs/snli-pairs   # triplets from SNLI dev
    python scripts/train.py --config scripts/configs/snli_pairs.toml
    python scripts/bench_retrieval.py --models all-MiniLM-L6-v2 runs/snli-pairs-model/best
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from minibert import SentenceEncoder
from minibert.data import default_data_dir, read_nli
from minibert.search import retrieval_metrics, semantic_search


def premises_and_hypotheses(path: Path) -> dict[str, dict[str, list[str]]]:
    """premise -> {label name: its hypotheses} (SNLI ids 0, 1, 2: entailment, neutral, contradiction)."""
    names = {0: "entailment", 1: "neutral", 2: "contradiction"}
    grouped: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for e in read_nli(path):
        grouped[e.a][names.get(e.label, e.label)].append(e.b)
    return grouped


def write_train_pairs(data: Path, out: Path) -> None:
    """(premise, an entailed hypothesis, a contradicting one as the hard negative) from SNLI dev."""
    rows = [f"{p}\t{h}\t{by_label['contradiction'][0]}" for p, by_label in premises_and_hypotheses(data).items()
            if by_label["contradiction"] for h in by_label["entailment"]]
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.tsv").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} training triplets -> {out / 'train.tsv'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--models", nargs="+", default=["all-MiniLM-L6-v2"])
    parser.add_argument("--make-train-pairs", metavar="FOLDER", help="write FOLDER/train.tsv from SNLI dev and stop")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    if args.make_train_pairs:
        write_train_pairs(Path(args.data) / "snli" / "dev.tsv", Path(args.make_train_pairs))
        return
    grouped = premises_and_hypotheses(Path(args.data) / "snli" / "test.tsv")
    corpus = list(dict.fromkeys(h for by_label in grouped.values() for hs in by_label.values() for h in hs))
    row = {h: i for i, h in enumerate(corpus)}
    queries = [p for p, by_label in grouped.items() if by_label["entailment"]]
    relevant = [{row[h] for h in grouped[q]["entailment"]} for q in queries]
    print(f"SNLI test: {len(queries)} premises as queries, {len(corpus)} hypotheses as the corpus")
    print(f"{'model':40}{'MRR@10':>8}{'nDCG@10':>9}{'R@1':>7}{'R@10':>7}{'R@100':>7}{'seconds':>9}")
    for name in args.models:
        start = time.perf_counter()
        encoder = SentenceEncoder.from_pretrained(name)
        results = semantic_search(encoder.encode(queries, batch_size=args.batch_size),
                                  encoder.encode(corpus, batch_size=args.batch_size), top_k=100)
        m = retrieval_metrics(results, relevant)
        print(f"{name:40}{m['mrr@10']:8.4f}{m['ndcg@10']:9.4f}{m['recall@1']:7.4f}{m['recall@10']:7.4f}"
              f"{m['recall@100']:7.4f}{time.perf_counter() - start:9.0f}")


if __name__ == "__main__":
    main()

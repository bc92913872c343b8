"""How far each run moved the shared embedding from the pretrained one: the mean cosine distance between a
run's sentence embeddings (its best/ encoder, which the sentence-transformers export holds) and the
pretrained model's, on the STS-B dev sentences. STS-B reads the embedding by cosine similarity, so a
recipe that moves it less keeps more of what the pretrained model knew about similarity.

    python experiments/multitask_methods/drift.py --out runs/studies-methods --seeds 1 2 \\
        --runs baseline adapters alone-sts
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from minibert.data import default_data_dir, read_sts_tsv
from minibert.sentence import SentenceEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the study's folder (experiments/variants.py --out)")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--runs", nargs="+", required=True, help="run folders, less the -seedN")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="the pretrained model the runs start from")
    args = parser.parse_args()
    pairs = read_sts_tsv(default_data_dir() / "stsb" / "dev.tsv")
    sentences = sorted({s for p in pairs for s in (p.a, p.b)})
    pretrained = SentenceEncoder.from_pretrained(args.model).encode(sentences, batch_size=64, convert_to="torch")
    print(f"mean cosine distance to {args.model}'s embedding, {len(sentences)} STS-B dev sentences\n")
    print("| run | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|---" * (len(args.seeds) + 2) + "|")
    for run in args.runs:
        distances = []
        for seed in args.seeds:
            encoder = SentenceEncoder.from_pretrained(Path(args.out) / f"{run}-seed{seed}" / "best")
            emb = encoder.encode(sentences, batch_size=64, convert_to="torch")
            distances.append(float((1 - torch.cosine_similarity(emb, pretrained, dim=-1)).mean()))
        print(f"| {run} | " + " | ".join(f"{d:.4f}" for d in distances) + f" | {statistics.mean(distances):.4f} |")


if __name__ == "__main__":
    main()

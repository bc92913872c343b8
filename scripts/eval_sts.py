"""STS-B Spearman of a sentence-transformers folder, by minibert (on each path) and by sentence-transformers on
the same folder: the score a parity row of the README gives for a real checkpoint.

    python scripts/eval_sts.py --model weights/all-mpnet-base-v2 [--file ../shared/data/stsb/test.tsv]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from minibert import SentenceEncoder, resolve_model
from minibert.data import default_data_dir, read_sts_tsv

from bench_encode import sts_spearman


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--file", default=str(Path(default_data_dir()) / "stsb" / "test.tsv"))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    pairs = read_sts_tsv(args.file)
    sentences, gold = [p.a for p in pairs] + [p.b for p in pairs], np.array([p.label for p in pairs])
    folder = resolve_model(args.model)
    encoder = SentenceEncoder.from_pretrained(folder, path="reference")
    rows = {f"minibert {path}": encoder.to_path(path) for path in ("reference", "fast", "int8")}
    rows["minibert fast bf16"] = SentenceEncoder.from_pretrained(folder, dtype=torch.bfloat16)
    print(f"{folder}, {args.file}: {len(pairs)} pairs")
    for name, model in rows.items():
        print(f"{name:28} Spearman {sts_spearman(model.encode(sentences, batch_size=args.batch_size), gold):.4f}")
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence-transformers is not installed: its row is skipped")
        return
    theirs = SentenceTransformer(str(folder), device="cpu").encode(sentences, batch_size=args.batch_size)
    print(f"{'sentence-transformers':28} Spearman {sts_spearman(theirs, gold):.4f}")


if __name__ == "__main__":
    main()

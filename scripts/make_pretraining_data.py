"""What `make pretrain-tiny` starts from: plain text, and a tiny BERT that knows nothing yet.

    python scripts/make_pretraining_data.py runs/pretrain-data [--data ../shared/data]

- ``text.txt``: every distinct sentence of the training splits in the data folder (AG News texts, STS-B
  and SNLI sentences, SST-2 sentences, CoNLL-2003 sentences; SNLI's dev split is its training data here, as
  in scripts/configs/multitask.toml), shuffled, one a line. No test split is read.
- ``tiny-bert/``: a 4-layer, 128-wide BERT (about 4.7M parameters, 3.9M of them the word embeddings) with
  all-MiniLM-L6-v2's tokenizer, its weights drawn by BERT's initialisation: the starting point of
  pretraining from scratch.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

import torch

from minibert import BertConfig, BertModel, resolve_model
from minibert.data import default_data_dir, read_classification, read_conll, read_nli, read_sts_tsv
from minibert.weights import save_pretrained

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def sentences(data: Path) -> list[str]:
    """The training splits' sentences, each once."""
    texts = [e.text for e in read_classification(data / "agnews" / "train.tsv")]
    texts += [e.text for e in read_classification(data / "sst2" / "train.tsv") if len(e.text.split()) >= 4]
    for pair in read_sts_tsv(data / "stsb" / "train.tsv") + read_nli(data / "snli" / "dev.tsv"):
        texts += [pair.a, pair.b]
    texts += [" ".join(s.words) for s in read_conll(data / "conll2003" / "train.txt")]
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--data", default=str(default_data_dir()), help="the datasets folder (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = sentences(Path(args.data))
    random.Random(args.seed).shuffle(texts)
    (out / "text.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    print(f"{len(texts)} sentences ({sum(len(t.split()) for t in texts) / 1e6:.2f}M words): {out / 'text.txt'}")

    tokenizer_folder = resolve_model("all-MiniLM-L6-v2")
    torch.manual_seed(args.seed)
    config = BertConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, intermediate_size=512,
                        max_position_embeddings=128)
    model = BertModel(config, add_pooler=False)
    save_pretrained(model, out / "tiny-bert")
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_folder / name, out / "tiny-bert" / name)
    print(f"a random BERT of {model.num_parameters() / 1e6:.1f}M parameters: {out / 'tiny-bert'}")


if __name__ == "__main__":
    main()

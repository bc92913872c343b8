"""The baseline a masked-language model must beat: predicting every masked token by its frequency alone.

    python scripts/mlm_baseline.py --config scripts/configs/pretrain_tiny.toml

A model that ignores the context and gives each token its frequency in the training text (its unigram
probability) scores, on the held-out text, the cross-entropy of those frequencies and, by always guessing the
commonest token, that token's share. The masking rule picks the predicted tokens uniformly among the real,
non-special ones, so both are averages over all of them (with whole_word, words are picked uniformly instead,
and the figures are near, not equal, to the baseline's). Prints the two beside the run's own dev figures
(its OUTPUT_DIR/result.json), when the run has finished.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

from minibert.hub import resolve_model
from minibert.tokenizer import Tokenizer
from minibert.train import load_config
from minibert.train.batches import load_task_data


def token_counts(texts: list[str], tokenizer: Tokenizer) -> Counter:
    special = tokenizer.special_ids
    counts = Counter()
    for encoding in tokenizer.encode(texts, warn_truncation=False):
        counts.update(i for i in encoding.ids if i not in special)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--task", default="mlm", help="the masked_lm task's name")
    args = parser.parse_args()
    config = load_config(args.config)
    names = [t.name for t in config.tasks]
    if args.task not in names or config.tasks[names.index(args.task)].type != "masked_lm":
        parser.error(f"--task {args.task}: {args.config} has no masked_lm task of that name (its tasks: {names})")
    index = names.index(args.task)
    train, dev, _ = load_task_data(config, config.tasks[index], index)
    tokenizer = Tokenizer.from_pretrained(resolve_model(config.model), max_length=config.encoder.max_seq_length)
    seen, held_out = token_counts([e.text for e in train], tokenizer), token_counts([e.text for e in dev], tokenizer)
    total, vocab = sum(seen.values()), tokenizer.vocab_size
    # add-one smoothing: a token the training text lacks still gets a probability
    loss = -sum(n * math.log((seen[t] + 1) / (total + vocab)) for t, n in held_out.items()) / sum(held_out.values())
    commonest, _ = seen.most_common(1)[0]
    accuracy = held_out[commonest] / sum(held_out.values())
    print(f"token frequencies ({len(train)} training texts, {sum(held_out.values())} held-out tokens): "
          f"loss {loss:.3f}, accuracy {accuracy:.4f} (always {tokenizer.backend.id_to_token(commonest)!r})")
    result = Path(config.output_dir) / "result.json"
    if result.is_file():  # the run's best dev evaluation (the last one, for a loss that only falls)
        run = json.loads(result.read_text())
        scores = run["best"]["metrics"][args.task]
        print(f"the model ({config.output_dir}, step {run['best']['step']}): loss {scores['loss']:.3f}, "
              f"accuracy {scores['accuracy']:.4f}")


if __name__ == "__main__":
    main()

"""The tasks' own training text, one sentence a line, for masked-language modelling beside them.

    python experiments/mlm/make_text.py runs/mlm-text/tasks.txt [--config scripts/configs/multitask.toml]

Every sentence the configuration's tasks train on, read as the training run reads them (the same dev
hold-outs and subsamples, from the same split_seed): no dev or test sentence is in it.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from minibert.train import load_config
from minibert.train.batches import load_task_data


def texts_of(example) -> list[str]:
    """The text fields of an example: a sentence, both of a pair, or a tagged sentence's words."""
    out = []
    for f in fields(example):
        value = getattr(example, f.name)
        if f.name in ("text", "a", "b", "anchor", "positive", "negative") and isinstance(value, str):
            out.append(value)
        elif f.name == "words":
            out.append(" ".join(value))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--config", default="scripts/configs/multitask.toml")
    args = parser.parse_args()
    config = load_config(args.config)
    lines = []
    for i, task in enumerate(config.tasks):
        train, _, _ = load_task_data(config, task, i)
        lines += [t.strip() for example in train for t in texts_of(example) if t.strip()]
    lines = list(dict.fromkeys(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} distinct training sentences of {len(config.tasks)} tasks: {args.out}")


if __name__ == "__main__":
    main()

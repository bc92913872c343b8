"""AugSBERT silver pairs: pair each training sentence with its nearest neighbours, score the new pairs
with one or more teachers (their scores averaged), and write them as an STS TSV for
scripts/configs/stsb_augsbert.toml. With --dev, first prints each teacher's dev Spearman and the
average's, so the choice of teachers is made on dev.

    python scripts/silver.py --teachers runs/stsb-cross/best [runs/stsb-seeds/soup] \\
        --train ../shared/data/stsb/train.tsv --out runs/stsb-silver.tsv [--dev DEV] [--top-k 3]

A teacher is a folder saved by MultiTaskModel.save with one sts or cross_sts task (or FOLDER:TASK).
"""

import argparse

import numpy as np
from minibert.task_spec import SCORE_TASKS
from minibert.train.silver import label_pairs, predict_scores, sample_silver_pairs, write_sts_tsv
from minibert.train.tasks import read_split

from minibert.metrics import spearman
from minibert.multitask import MultiTaskModel
from minibert.sentence import SentenceEncoder


def load_teacher(arg: str) -> tuple[MultiTaskModel, str]:
    folder, _, task = arg.partition(":")
    model = MultiTaskModel.load(folder)
    if not task:
        tasks = [name for name, spec in model.tasks.items() if spec.type in SCORE_TASKS]
        if len(tasks) != 1:
            raise SystemExit(f"error: {folder} has {len(tasks)} sts/cross_sts tasks {tasks}; name one as {folder}:TASK")
        task = tasks[0]
    model.spec(task)  # an unknown task name fails here, naming the known ones
    return model, task


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        dev = read_split("sts", args.dev)
        dev_pairs, gold = [(e.a, e.b) for e in dev], np.array([e.label for e in dev], dtype=np.float64)
        scores = [predict_scores(m, t, dev_pairs, args.batch_size) for m, t in teachers]
        for name, s in zip(args.teachers, scores, strict=True):
            print(f"dev Spearman {spearman(s, gold):.4f}  {name}")
        print(f"dev Spearman {spearman(np.mean(scores, axis=0), gold):.4f}  average of {len(teachers)} teacher(s)")
    train = read_split("sts", args.train)
    pairs = sample_silver_pairs(SentenceEncoder.from_pretrained(args.encoder), train, args.top_k, args.batch_size)
    silver = label_pairs(teachers, pairs, args.batch_size)
    write_sts_tsv(args.out, pairs, silver.tolist())
    bins = np.arange(6)
    print(f"{len(pairs)} silver pairs from {len(train)} gold pairs -> {args.out}")
    print("share per score bin  " + "  ".join(f"[{b},{b + 1})" for b in bins[:-1]))
    for name, s in (("gold", [e.label for e in train]), ("silver", silver)):
        share = np.histogram(np.clip(s, 0, 4.999), bins=bins)[0] / len(s)
        print(f"{name:21}" + "  ".join(f"{p:5.2f}" for p in share))

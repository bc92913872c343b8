"""Write a small synthetic data set for every task type, in the same file formats as the real ones
(STS-B TSV, SNLI TSV, SST-2 TSV with header, AG News TSV, CoNLL-2003, retrieval triplets TSV, plain text), so
that a fresh clone can run the whole training path quickly: `make train-quick`.

    python scripts/make_quick_data.py runs/quick-data

The sentences come from templates and word lists, drawn with a fixed seed; the labels follow from how
each sentence was built (a synonym keeps the meaning, a contradicting verb flips it, ...). The tasks
are easy on purpose: the point is a run that exercises readers, sampling, evaluation, checkpoints and
curves.png, and a model whose predictions look sensible, not a benchmark.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

PEOPLE = ["Anna Schmidt", "John Carter", "Maria Lopez", "Kenji Sato", "Olivia Brown", "Ahmed Khan", "Lucy Chen",
          "Peter Novak", "Sofia Rossi", "David Miller", "Emma Wilson", "Carlos Diaz"]
PLACES = ["Paris", "Berlin", "Tokyo", "Madrid", "Chicago", "Cairo", "Sydney", "Toronto", "Rome", "Lagos"]
ORGS = ["Siemens", "Toyota", "Reuters", "Google", "UNICEF", "Nestle", "Airbus", "Samsung"]
TOPICS = {
    "World": ["The president met foreign ministers in {place} to discuss the ceasefire.",
              "Thousands protested in {place} after the disputed election.",
              "Leaders signed a trade treaty at the summit in {place}."],
    "Sports": ["{person} scored twice as the home team won the final.",
               "The coach praised the defence after a narrow win in {place}.",
               "{person} set a new record in the marathon."],
    "Business": ["Shares of {org} rose after strong quarterly profits.",
                 "{org} announced it will cut costs and close two plants.",
                 "Investors sold stocks as oil prices climbed again."],
    "Sci/Tech": ["{org} unveiled a faster chip for smartphones.",
                 "Researchers released new software that finds bugs in code.",
                 "A new telescope photographed a distant galaxy."],
}
GOOD = ["wonderful", "moving", "brilliant", "charming", "delightful", "gripping", "beautiful", "funny"]
BAD = ["boring", "dull", "clumsy", "tedious", "awful", "lifeless", "predictable", "messy"]
THINGS = ["film", "story", "performance", "script", "soundtrack", "cast", "ending", "direction"]
# (subject, paraphrase of the subject, action, paraphrase of the action, an unrelated action)
SCENES = [("A man", "A guy", "is playing a guitar", "is playing an instrument", "is cooking dinner"),
          ("A woman", "A lady", "is slicing an onion", "is cutting a vegetable", "is riding a horse"),
          ("A child", "A kid", "is kicking a ball", "is playing football", "is reading a book"),
          ("A dog", "A puppy", "is running on the beach", "is racing across the sand", "is sleeping inside"),
          ("Two men", "Two guys", "are lifting a box", "are carrying a crate", "are swimming in a lake"),
          ("A girl", "A young woman", "is singing on stage", "is performing a song", "is washing a car"),
          ("A cat", "A kitten", "is chasing a mouse", "is hunting a rodent", "is drinking milk"),
          ("An old man", "An elderly man", "is walking in the park", "is strolling through the park",
           "is fixing a roof")]


def sts_pairs(rng: random.Random, n: int) -> list[str]:
    """STS-B lines: genre, source, year, id, score, sentence1, sentence2."""
    lines = []
    for i in range(n):
        subject, subject2, action, action2, other = rng.choice(SCENES)
        kind = rng.randrange(4)
        if kind == 0:
            a, b, score = f"{subject} {action}.", f"{subject2} {action2}.", 4.6 + 0.4 * rng.random()
        elif kind == 1:
            a, b, score = f"{subject} {action}.", f"{subject} {other}.", 1.0 + rng.random()
        elif kind == 2:
            other_scene = rng.choice(SCENES)
            a, b, score = f"{subject} {action}.", f"{other_scene[0]} {other_scene[4]}.", 0.4 * rng.random()
        else:
            a, b, score = f"{subject} {action}.", f"{subject2} {action}.", 3.6 + 0.8 * rng.random()
        lines.append(f"quick\tsynthetic\t2026\t{i:04d}\t{score:.3f}\t{a}\t{b}")
    return lines


def nli_pairs(rng: random.Random, n: int) -> list[str]:
    """SNLI TSV lines: premise, hypothesis, label id (0 entailment, 1 neutral, 2 contradiction)."""
    lines = []
    for _ in range(n):
        subject, subject2, action, action2, other = rng.choice(SCENES)
        label = rng.randrange(3)
        hypothesis = {0: f"{subject2} {action2}", 1: f"{subject} {action} with a friend", 2: f"{subject} {other}"}
        lines.append(f"{subject.lower()} {action}\t{hypothesis[label].lower()}\t{label}")
    return lines


def sentiment_lines(rng: random.Random, n: int) -> list[str]:
    lines = ["sentence\tlabel"]
    for _ in range(n):
        positive = rng.random() < 0.5
        words = GOOD if positive else BAD
        text = rng.choice(["a {a} {t}", "the {t} is {a}", "{a} and {b} from start to finish", "what a {a} {t}"])
        lines.append(text.format(a=rng.choice(words), b=rng.choice(words), t=rng.choice(THINGS)) + f"\t{int(positive)}")
    return lines


def topic_lines(rng: random.Random, n: int) -> list[str]:
    lines = []
    for _ in range(n):
        label = rng.choice(list(TOPICS))
        text = rng.choice(TOPICS[label]).format(place=rng.choice(PLACES), person=rng.choice(PEOPLE),
                                                org=rng.choice(ORGS))
        lines.append(f"{text}\t{label}")
    return lines


def retrieval_triplets(rng: random.Random, n: int) -> list[str]:
    """Pairs TSV lines: anchor, positive (a paraphrase), hard negative (the same subject doing something else)."""
    lines = []
    for _ in range(n):
        subject, subject2, action, action2, other = rng.choice(SCENES)
        lines.append(f"{subject} {action}.\t{subject2} {action2}.\t{subject} {other}.")
    return lines


def plain_text(rng: random.Random, n: int) -> list[str]:
    """Text for the masked-language-model task, one document a line: the other tasks' kinds of sentence."""
    lines = []
    for _ in range(n):
        kind = rng.randrange(3)
        if kind == 0:
            lines.append(topic_lines(rng, 1)[0].split("\t")[0])
        elif kind == 1:
            lines.append(sentiment_lines(rng, 1)[1].split("\t")[0].capitalize() + ".")
        else:
            subject, _, action, _, _ = rng.choice(SCENES)
            lines.append(f"{subject} {action}.")
    return lines


def conll_sentences(rng: random.Random, n: int) -> list[str]:
    """CoNLL-2003 columns (token POS chunk NER), BIO tags, a blank line after each sentence."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    templates = ["{PER} visited {LOC} on Monday .", "{ORG} opened an office in {LOC} .",
                 "{PER} joined {ORG} last year .", "In {LOC} , {PER} met reporters .",
                 "Shares fell 3 % after the launch .", "The team won 102 - 99 last night .",
                 "What a wonderful , moving film .", "Prices rose again on Tuesday ."]
    for _ in range(n):
        for token in rng.choice(templates).split():
            if token.startswith("{"):
                kind = token[1:-1]
                name = rng.choice({"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS}[kind])
                for j, word in enumerate(name.split()):
                    lines.append(f"{word} NNP I-NP {'B' if j == 0 else 'I'}-{kind}")
            else:
                lines.append(f"{token} X O O")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the folder to write (it becomes the quick run's data_dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    files = {
        "stsb/train.tsv": sts_pairs(rng, 500), "stsb/dev.tsv": sts_pairs(rng, 100),
        "snli/train.tsv": nli_pairs(rng, 500), "snli/dev.tsv": nli_pairs(rng, 100),
        "sst2/train.tsv": sentiment_lines(rng, 500), "sst2/dev.tsv": sentiment_lines(rng, 100),
        "agnews/train.tsv": topic_lines(rng, 500), "agnews/dev.tsv": topic_lines(rng, 100),
        "conll2003/train.txt": conll_sentences(rng, 400), "conll2003/valid.txt": conll_sentences(rng, 100),
        "pairs/train.tsv": retrieval_triplets(rng, 500), "pairs/dev.tsv": retrieval_triplets(rng, 100),
        "text/train.txt": plain_text(rng, 1000), "text/dev.txt": plain_text(rng, 100),
    }
    for name, lines in files.items():
        path = Path(args.out) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    size = sum((Path(args.out) / name).stat().st_size for name in files)
    print(f"wrote {len(files)} files ({size / 1e3:.0f} kB) to {args.out}")


if __name__ == "__main__":
    main()

"""The cost side of one multi-task model against five single-task models: parameters, memory, latency.

The five tasks of scripts/configs/multitask.toml (STS, NLI, sentiment, topic, NER). One multi-task
model runs the shared encoder once and every head on its output; five separate models run five
encoders. Heads are freshly initialised (their cost does not depend on training). Latency is the
median of repeated calls, for one sentence and for a batch of 32 STS-B sentences, on the same threads
in one process, each on the reference path and on the fast path (minibert.paths.fast). Memory is each
setup's resident set, measured in a fresh process. ``--adapter N`` gives the multi-task model's
sentiment, topic and NER tasks an adapter of width N each (minibert.adapter), as the adapters study does;
``--branch N`` gives them their own copy of the encoder's top N layers each (minibert.branch), and
``--task-branch NAME=N`` one of them N layers instead.

    python experiments/multi_vs_separate/cost.py [--threads 2] [--adapter 64] [--branch 1] [--task-branch topic=6]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from minibert.multitask import MultiTaskModel

NER = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
TASKS = [
    {"name": "sts", "type": "sts"},
    {"name": "nli", "type": "nli"},
    {"name": "sentiment", "type": "classification", "labels": ["negative", "positive"], "hidden_layer": True},
    {"name": "topic", "type": "classification", "labels": ["World", "Sports", "Business", "Sci/Tech"],
     "hidden_layer": True},
    {"name": "ner", "type": "token_classification", "labels": NER},
]
SENTENCES = ["A man is playing a guitar on stage.", "Angela Merkel met Emmanuel Macron in Paris on Monday.",
             "The Lakers beat the Celtics 102-99 last night.", "Apple shares fell 3% after the iPhone launch.",
             "What a wonderful, heartfelt film.", "Two dogs run through a field of tall grass.",
             "Kids are playing football in the park.", "The stock market fell sharply today."] * 4


ADAPTED = ("sentiment", "topic", "ner")


def build(setup: str, adapter: int = 0, branches: dict[str, int] | None = None) -> list[MultiTaskModel]:
    """``branches``: the own top layers of each of ``ADAPTED`` (none where absent)."""
    if setup == "multi":
        branches = branches or {}
        tasks = [{**t, "adapter": adapter, "branch": branches.get(t["name"], 0)} if t["name"] in ADAPTED else t
                 for t in TASKS]
        models = [MultiTaskModel.from_encoder("all-MiniLM-L6-v2", tasks, seed=0, path="reference")]
    else:
        models = [MultiTaskModel.from_encoder("all-MiniLM-L6-v2", [t], seed=0, path="reference") for t in TASKS]
    for model in models:  # weights of their own, as after fine-tuning (loaded ones share the file's pages)
        for p in model.parameters():
            p.data = p.data.clone()
    return [model.eval() for model in models]


@torch.inference_mode()
def all_tasks(models: list[MultiTaskModel], sentences: list[str]) -> None:
    """Every task's logits for `sentences`: one encoder pass per model, then each of its heads (pair
    heads read consecutive sentences as pairs)."""
    for model in models:
        batch = model.encoder.tokenizer(sentences).tensors()
        mask = batch["attention_mask"]
        branched = any(t.branch for t in model.tasks.values())
        hidden = model.encoder.bert(batch["input_ids"], mask, batch["token_type_ids"], output_hidden_states=branched)
        plain = model.encoder.pool_states(hidden.last_hidden_state, mask)
        for name, head in model.heads.items():  # pooled once for the tasks without an adapter or branch
            adapted = model.tasks[name].adapter or model.tasks[name].branch
            features = model.task_features(name, hidden, mask) if adapted else plain
            if model.tasks[name].input == "pair":
                n = len(sentences) // 2 * 2
                pairs = features._replace(token_states=features.token_states[:n],
                                          embedding=torch.cat([features.embedding[0:n:2], features.embedding[1:n:2]]))
                head(pairs)
            else:
                head(features)


def latency(models: list[MultiTaskModel], sentences: list[str], repeats: int) -> float:
    all_tasks(models, sentences)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        all_tasks(models, sentences)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def resident_mib(setup: str, adapter: int = 0, branches: dict[str, int] | None = None) -> float:
    """Peak resident memory of a fresh process that builds `setup` and runs it once, in MiB."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent, VmHWM starts afresh
    code = (f"import sys; sys.path.insert(0, {sys.path[0]!r}); import cost; "
            f"cost.all_tasks(cost.build({setup!r}, {adapter}, {branches!r}), cost.SENTENCES); "
            "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out) / 1024


def task_branch(text: str) -> tuple[str, int]:
    """``--task-branch``'s NAME=N: a task of ``ADAPTED`` and its number of own top layers (0: none)."""
    name, _, layers = text.partition("=")
    if name not in ADAPTED or not layers.isdigit():
        raise argparse.ArgumentTypeError(f"NAME=N expected, NAME one of {', '.join(ADAPTED)}, N a whole number, "
                                         f"got {text!r}")
    return name, int(layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--adapter", type=int, default=0, help="adapter width for sentiment, topic and NER")
    parser.add_argument("--branch", type=int, default=0, help="own top layers for sentiment, topic and NER")
    parser.add_argument("--task-branch", action="append", default=[], type=task_branch, metavar="NAME=N",
                        help=f"own top layers for one of {', '.join(ADAPTED)}, in place of --branch (repeatable)")
    args = parser.parse_args()
    branches = {name: args.branch for name in ADAPTED} | dict(args.task_branch)
    torch.set_num_threads(args.threads)
    setups = {"multi": build("multi", args.adapter, branches), "separate": build("separate")}
    params = {k: sum(p.numel() for m in v for p in m.parameters()) for k, v in setups.items()}
    timings = {}
    for path in ("reference", "fast"):
        if path == "fast":
            for models in setups.values():
                for model in models:
                    model.encoder = model.encoder.to_path("fast")
        for _ in range(2):  # alternate, so that noise hits both alike; keep the better of two
            for name, models in setups.items():
                for n in (1, 32):
                    key = (path, name, n)
                    t = latency(models, SENTENCES[:n], args.repeats if n == 1 else args.repeats // 3)
                    timings[key] = min(t, timings.get(key, float("inf")))
    memory = {name: resident_mib(name, *((args.adapter, branches) if name == "multi" else ())) for name in setups}

    adapters = f", adapters of width {args.adapter} on {', '.join(ADAPTED)}" if args.adapter else ""
    own = ", own top layers: " + ", ".join(f"{name} {n}" for name, n in branches.items()) \
        if any(branches.values()) else ""
    print(f"{args.threads} threads, all five tasks' outputs{adapters}{own}, median latency (ms)")
    print(f"{'':34}{'one multi-task model':>22}{'five single-task models':>25}{'ratio':>8}")
    print(f"{'parameters (millions)':34}{params['multi'] / 1e6:22.1f}{params['separate'] / 1e6:25.1f}"
          f"{params['separate'] / params['multi']:7.2f}x")
    print(f"{'peak resident memory (MiB)':34}{memory['multi']:22.0f}{memory['separate']:25.0f}"
          f"{memory['separate'] / memory['multi']:7.2f}x")
    for path in ("reference", "fast"):
        for n in (1, 32):
            multi, separate = timings[(path, "multi", n)] * 1e3, timings[(path, "separate", n)] * 1e3
            label = f"{path} path, {'1 sentence' if n == 1 else f'{n} sentences'}"
            print(f"{label:34}{multi:22.1f}{separate:25.1f}{separate / multi:7.2f}x")


if __name__ == "__main__":
    main()

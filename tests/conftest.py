"""Shared fixtures. The reference libraries load everything offline from the same folders as minibert."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Real sentences of very different lengths (the padded batch is what parity must survive), one a line;
# scripts/make_reference_fixture.py reads the same file.
SENTENCES = (Path(__file__).parent / "fixtures" / "sentences.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(autouse=True)
def malloc_left_alone(monkeypatch):
    """The command line keeps freed memory for the whole process (minibert.paths.keep_freed_memory): tests that
    call it in this process leave the suite's malloc as it came, whatever order they run in."""
    monkeypatch.setattr("minibert.paths.keep_freed_memory", lambda: False)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from minibert.hub import DEFAULT_MODEL, resolve_model

    try:
        return resolve_model(DEFAULT_MODEL)
    except FileNotFoundError as e:
        pytest.fail(f"the default model is needed for this test: run `make weights` ({e})")


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    """all-MiniLM-L6-v2 as a user loads it: on the default path (fast, on the CPU)."""
    from minibert import SentenceEncoder

    return SentenceEncoder.from_pretrained(minilm_dir)


@pytest.fixture(scope="session")
def minilm_reference(minilm_dir):
    """all-MiniLM-L6-v2 on the reference path (model.py as written)."""
    from minibert import SentenceEncoder

    return SentenceEncoder.from_pretrained(minilm_dir, path="reference")


@pytest.fixture
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture
def model_copy(minilm_dir, tmp_path):
    """model_copy(skip=(...)) -> a writable copy of the default model folder (weights linked, not copied)."""

    def make(name: str = "model", skip: tuple[str, ...] = ()) -> Path:
        dst = tmp_path / name
        dst.mkdir(parents=True)
        for item in minilm_dir.iterdir():
            if item.name in skip:
                continue
            if item.is_dir():
                shutil.copytree(item, dst / item.name)
            elif item.suffix == ".safetensors":
                (dst / item.name).symlink_to(item.resolve())
            else:
                shutil.copy2(item, dst / item.name)
        return dst

    return make


def global_torch_settings() -> dict:
    """Process-wide torch switches a test might flip; each test must leave them as it found them."""
    return {"torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "torch.get_float32_matmul_precision()": torch.get_float32_matmul_precision(),
            "torch.are_deterministic_algorithms_enabled()": torch.are_deterministic_algorithms_enabled(),
            "torch.get_default_dtype()": torch.get_default_dtype(),
            "torch.get_num_threads()": torch.get_num_threads(),
            "torch.is_grad_enabled()": torch.is_grad_enabled()}


@pytest.fixture(autouse=True)
def _deterministic_and_restored():
    """Every test starts from seed 0, and fails if it leaves a global torch setting changed (use
    monkeypatch.setattr for those): a leaked switch would change the numbers of the tests after it."""
    torch.manual_seed(0)
    before = global_torch_settings()
    yield
    changed = {k: (v, global_torch_settings()[k]) for k, v in before.items() if global_torch_settings()[k] != v}
    assert not changed, f"the test changed global torch settings without restoring them (before, after): {changed}"


# ---- tiny models and data for the training tests -------------------------------------------------

TINY_DATA = {
    "sts.tsv": [f"g\ts\t2012\t{i:04d}\t{score}\t{a}\t{b}" for i, (score, a, b) in enumerate([
        ("5.000", "A man plays a guitar.", "A man is playing a guitar."),
        ("0.500", "A cat sleeps.", "Stocks fell sharply today."),
        ("3.800", "Kids play soccer in a park.", "Children are playing football outside."),
        ("1.200", "A woman cooks pasta.", "A woman is riding a horse."),
        ("4.400", "The dog runs on the beach.", "A dog is running on sand."),
        ("0.000", "The sky is blue.", "He sold his car."),
        ("2.600", "A man cuts an onion.", "A man cuts a tomato."),
        ("4.000", "Two birds fly.", "A pair of birds are flying."),
    ])],
    "topic.tsv": ["Stocks rallied as markets rose.\tBusiness", "The team won the final.\tSports",
                  "Rebels attacked the capital.\tWorld", "A new chip doubles speed.\tSci/Tech",
                  "Oil prices fell again.\tBusiness", "The striker scored twice.\tSports",
                  "Elections were held on Sunday.\tWorld", "Scientists cloned a gene.\tSci/Tech"],
    "sentiment.tsv": ["sentence\tlabel", "a wonderful film\t1", "boring and far too long\t0", "i loved it\t1",
                      "a mess\t0", "great acting\t1", "dull\t0"],
    "nli.tsv": ["a man plays guitar\ta person plays music\t0", "a man plays guitar\tthe man sleeps\t2",
                "a dog runs\tan animal moves\t0", "a dog runs\tthe dog is big\t1", "kids play\tnobody plays\t2",
                "kids play\tkids play in a park\t1"],
    "pairs.tsv": [
        "a man plays a guitar\tsomeone plays music\ta man sleeps",
        "a cat sleeps\tan animal rests\ta cat runs",
        "stocks fell\tmarkets dropped\tstocks rose",
        "kids play soccer\tchildren play football\tkids sleep",
        "it is raining\tthe weather is wet\tit is sunny",
        "a chef cooks\tfood is prepared\ta chef sleeps",
        "the team won\tthey were victorious\tthe team lost",
        "a dog barks\tan animal makes noise\ta dog sleeps",
    ],
    "ner.txt": ["-DOCSTART- -X- -X- O", "", "EU NNP B-NP B-ORG", "rejects VBZ B-VP O", "German JJ B-NP B-MISC",
                "call NN I-NP O", "", "Peter NNP B-NP B-PER", "Blackburn NNP I-NP I-PER", "", "BRUSSELS NNP B-NP B-LOC",
                "1996-08-22 CD I-NP O", "", "Japan NNP B-NP B-LOC", "wins VBZ B-VP O", "at IN B-PP O",
                "Olympics NNPS B-NP B-MISC", ""],
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-data")
    for name, lines in TINY_DATA.items():
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer, 32-wide random BERT with all-MiniLM-L6-v2's tokenizer and no dropout (so that one
    process and several compute the same function)."""
    from minibert import BertConfig, BertModel
    from minibert.weights import save_pretrained

    folder = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    save_pretrained(BertModel(config), folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(minilm_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, tiny_model_dir, tiny_data) -> Path:
    """A saved multi-task model of ``tiny_config``'s tasks (labels as its data gives them), heads drawn from
    seed 7: a teacher for a task's predictions (``minibert.train.distill.TaskTeacher``)."""
    from minibert.multitask import MultiTaskModel
    from minibert.train import load_config
    from minibert.train.batches import read_tasks

    folder = tmp_path_factory.mktemp("tiny-teacher")
    tasks = read_tasks(load_config(base=tiny_config(tiny_model_dir, tiny_data, folder / "unused")))[0]
    MultiTaskModel.from_encoder(tiny_model_dir, tasks, seed=7).save(folder)
    return folder


def merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it, table by table (``{"optim": {"lr": 1}}`` keeps optim's other keys)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def tiny_config(model_dir: Path, data: Path, out: Path, **overrides) -> dict:
    """A training configuration with all five task types on the tiny data (as a plain dict); ``overrides``
    are laid over it table by table (``optim={"lr": 1e-2}``). On the CPU even where a GPU exists, so
    that exact comparisons hold everywhere; CUDA tests ask for it."""
    no_dropout = {"dropout": 0.0}
    config = {
        "model": str(model_dir), "output_dir": str(out), "steps": 12, "batch_size": 4,
        "optim": {"lr": 1e-3}, "sampling": {"strategy": "round_robin"}, "runtime": {"device": "cpu"},
        "eval": {"every": 6}, "output": {"checkpoint_every": 4, "log_every": 2, "plot": False},
        "tasks": [
            {"name": "sts", "type": "sts", "train": str(data / "sts.tsv"), "dev": str(data / "sts.tsv"),
             "test": str(data / "sts.tsv")},
            {"name": "topic", "type": "classification", "train": str(data / "topic.tsv"),
             "dev": str(data / "topic.tsv"), "head": no_dropout},
            {"name": "sentiment", "type": "classification", "train": str(data / "sentiment.tsv"),
             "labels": ["negative", "positive"], "head": no_dropout},
            {"name": "nli", "type": "nli", "train": str(data / "nli.tsv"), "dev": str(data / "nli.tsv")},
            {"name": "ner", "type": "token_classification", "train": str(data / "ner.txt"),
             "dev": str(data / "ner.txt"), "head": no_dropout},
        ],
    }
    return merge(config, overrides)


def train_tiny(model_dir: Path, data: Path, out: Path, only: tuple[str, ...] = (), **overrides) -> list[dict]:
    """Train ``tiny_config`` with overrides (``only``: just those tasks) and return the per-task training
    losses of each logged step."""
    from minibert.train import load_config, train

    config = tiny_config(model_dir, data, out, **overrides)
    config["tasks"] = [t for t in config["tasks"] if not only or t["name"] in only]
    out.with_suffix(".json").write_text(json.dumps(config))
    train(load_config(out.with_suffix(".json")))
    records = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if "loss" in r]


def assert_losses_match(reference: list[dict], other: list[dict], rel: float, abs: float) -> None:
    """Two runs' logged losses (``logged_losses``), step by step and task by task."""
    assert len(other) == len(reference)
    for a, b in zip(reference, other, strict=True):
        assert a.keys() == b.keys()
        for task in a:
            assert b[task] == pytest.approx(a[task], rel=rel, abs=abs), task


# ---- hypothesis ------------------------------------------------------------------------------------

try:
    from hypothesis import HealthCheck, settings

    # "ci": the same examples on every run (a red CI run can be replayed), no per-example deadline (a
    # shared 2-core machine is noisy). "explore": fresh examples every run, for looking for bugs.
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # the property tests skip, saying so
    pass

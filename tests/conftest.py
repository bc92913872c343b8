"""Shared fixtures. The reference libraries load everything offline from the same folders as minibert."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Real sentences of very different lengths (the padded batch is what parity must survive).
SENTENCES = [
    "A man is playing a guitar.",
    "Hi",
    "The quick brown fox jumps over the lazy dog while the farmer, unaware of the commotion, keeps "
    "repairing the old red tractor that has stood in the barn since the summer of 1974.",
    "Stocks fell sharply on Wednesday after the central bank raised interest rates by half a point.",
    "Two women are embracing while holding to-go packages.",
    "Quantum entanglement defies classical intuition.",
    "¿Dónde está la biblioteca? Müller's café serves crème brûlée.",
    "東京は日本の首都です。",
    "I loved this movie!!! :)",
    "The cat sat on the mat.",
    "A woman is slicing an onion in the kitchen with a very sharp knife.",
    "NASA's Perseverance rover collected its 20th rock sample on Mars in 2023.",
    "no",
    "Researchers at the university published a study showing that regular exercise improves memory, "
    "sleep quality and mood in adults over sixty, even when the exercise is light.",
    "The team won the championship.",
    "e-mail me at someone@example.com or call +1 (555) 010-9999",
    "He said: \"it's fine\" — and left.",
    "A dog runs through the snow.",
    "Markets rallied.",
    "The children are playing soccer in the park near the river on a sunny afternoon.",
]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from minibert.hub import DEFAULT_MODEL, resolve_model

    try:
        return resolve_model(DEFAULT_MODEL)
    except FileNotFoundError as e:
        pytest.fail(f"the default model is needed for this test: run `make weights` ({e})")


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    from minibert import SentenceEncoder

    return SentenceEncoder.from_pretrained(minilm_dir)


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


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield

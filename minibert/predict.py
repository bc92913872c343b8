"""What a user of a trained multi-task model calls: every task's prediction for sentences or pairs.

Each task turns text into its own examples and batches and formats its own predictions, so these
functions only loop: in batches, over the tasks that read one sentence (``predict``) or a pair
(``predict_pairs``). Each task runs the encoder on its own batches, which keeps every task's input
exactly what it trains on (a cross-encoder reads "a [SEP] b", NER reads words), at the cost of one
encoder pass per task.
"""

from __future__ import annotations

import torch

from minibert.model import eval_mode
from minibert.multitask import MultiTaskModel


@torch.inference_mode()
def run_task(model: MultiTaskModel, task: str, inputs: list, batch_size: int = 32) -> list[dict]:
    """One task's prediction for each input (a sentence, or an (a, b) pair for pair tasks)."""
    spec, tokenizer = model.task(task), model.encoder.tokenizer
    rows = []
    with eval_mode(model):
        for start in range(0, len(inputs), batch_size):
            examples = [spec.example(x, tokenizer) for x in inputs[start:start + batch_size]]
            batch = model.collate(task, examples)
            rows += spec.predict(model(task, batch).logits, batch, examples)
    return rows


def predict(model: MultiTaskModel, sentences: list[str], batch_size: int = 32) -> list[dict]:
    """For each sentence: its embedding and the prediction of every task that reads one sentence."""
    embeddings = model.encoder.encode(sentences, batch_size=batch_size)
    rows = [{"text": s, "embedding": e} for s, e in zip(sentences, embeddings, strict=True)]
    for name, task in model.tasks.items():
        if task.input == "sentence":
            for row, prediction in zip(rows, run_task(model, name, sentences, batch_size), strict=True):
                row[name] = prediction
    return rows


def predict_pairs(model: MultiTaskModel, a: list[str], b: list[str], batch_size: int = 32) -> list[dict]:
    """For each pair (a[i], b[i]): the cosine of the two embeddings and the prediction of every pair task
    (NLI labels, STS and cross-encoder scores)."""
    if len(a) != len(b):
        raise ValueError(f"predict_pairs: {len(a)} first sentences but {len(b)} second")
    u = model.encoder.encode(a, batch_size=batch_size, convert_to="torch").float()
    v = model.encoder.encode(b, batch_size=batch_size, convert_to="torch").float()
    cosine = torch.nn.functional.cosine_similarity(u, v, dim=-1)
    pairs = list(zip(a, b, strict=True))
    rows = [{"a": x, "b": y, "similarity": float(c)} for (x, y), c in zip(pairs, cosine, strict=True)]
    for name, task in model.tasks.items():
        if task.input == "pair":
            for row, prediction in zip(rows, run_task(model, name, pairs, batch_size), strict=True):
                row[name] = prediction
    return rows

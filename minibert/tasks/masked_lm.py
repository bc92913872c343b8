"""Masked-language modelling as a task: BERT's pretraining objective, on plain text (one document a line).

Each batch is masked by BERT's rule (``minibert.masking``: 15% of the real tokens, of those 80% [MASK], 10% a
random token, 10% kept) and the head (``minibert.mlm.MaskedLMHead``, tied to the word embeddings) predicts the
original tokens at the chosen positions only: the product with all 30k vocabulary tokens at every position
would cost the head about 6x more and teach nothing. Beside other tasks it is continued pretraining: the
encoder keeps learning the language of the tasks' own text (domain adaptation); alone, from a randomly
initialised encoder, it is BERT's pretraining in small.

The masks are drawn from a generator seeded by the batch's texts (and ``seed``): the same batch is masked the
same way, so a resumed run, or an evaluation, repeats itself exactly, while a text meets new masks whenever it
meets new batch-mates. A user's text (``predict``) is not masked: its own mask tokens are filled in.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minibert.data import MaskedText, read_text
from minibert.masking import IGNORE_INDEX, MASK_PROBABILITY, mask_tokens
from minibert.mlm import MaskedLMHead, load_head
from minibert.tasks.base import Task, register

log = logging.getLogger(__name__)


@functools.cache
def vocabulary_ids(tokenizer) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(the mask token's id, the special tokens' ids, the ids a random replacement is drawn from: the whole
    vocabulary, special tokens included, as BERT's create_pretraining_data.py and transformers'
    DataCollatorForLanguageModeling draw it)."""
    if tokenizer.mask_token is None or tokenizer.backend.token_to_id(tokenizer.mask_token) is None:
        raise ValueError("masked-language modelling needs a tokenizer with a mask token; this one has none")
    special = torch.tensor(sorted(tokenizer.special_ids), dtype=torch.long)
    return tokenizer.backend.token_to_id(tokenizer.mask_token), special, torch.arange(tokenizer.vocab_size)


class MaskedLMTaskHead(nn.Module):
    """The MLM head on the positions the batch says to predict, scored against the encoder's word embeddings."""

    reads_batch = True  # MultiTaskModel passes the batch: its "predict" mask says where

    def __init__(self, head: MaskedLMHead) -> None:
        super().__init__()
        self.mlm_head = head

    def forward(self, features, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, V): one row of vocabulary logits for each position to predict, in reading order."""
        return self.mlm_head(features.token_states[batch["predict"]], features.word_embeddings)


@register
@dataclass
class MaskedLM(Task):
    type = "masked_lm"
    main_metric = "accuracy"  # of the predicted tokens
    saved_as = "transformers masked language model"
    input = "sentence"

    probability: float = MASK_PROBABILITY  # the share of real tokens predicted
    whole_word: bool = False  # choose words, not word pieces (all of a word's pieces, or none)
    seed: int = 0  # mixed into every batch's masking draws

    def check(self) -> None:
        if self.labels:
            raise ValueError(f"task {self.name!r} (masked_lm) learns from plain text and takes no label names")
        if not 0.0 < self.probability < 1.0:
            raise ValueError(f"task {self.name!r}: probability must be in (0, 1), got {self.probability}")
        if not 0 <= self.seed < 2**64:  # it is mixed into 64-bit generator seeds
            raise ValueError(f"task {self.name!r}: seed must be in [0, 2**64), got {self.seed}")

    read = staticmethod(read_text)

    def example(self, text: str, tokenizer) -> MaskedText:
        return MaskedText(text, fill=True)

    def collate(self, examples: list[MaskedText], tokenizer) -> dict[str, torch.Tensor]:
        """Inputs with BERT's masks and the original tokens as ``labels`` (or, for a user's texts, the texts as
        they are), and ``predict``: the (B, L) positions the head scores."""
        mask_id, special, replacements = vocabulary_ids(tokenizer)
        if len({e.fill for e in examples}) > 1:
            raise ValueError(f"task {self.name!r}: a batch mixes texts to mask and texts to fill in")
        tokens = tokenizer([e.text for e in examples])
        batch = tokens.tensors()
        if examples[0].fill:
            batch["predict"] = batch["input_ids"] == mask_id
            return batch
        maskable = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], special)
        word_ids = torch.tensor([[-1 if w is None else w for w in row] for row in tokens.word_ids],
                                dtype=torch.long).view(batch["input_ids"].shape) if self.whole_word else None
        digest = hashlib.blake2b("\0".join(e.text for e in examples).encode("utf-8"), digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") ^ self.seed)
        batch["input_ids"], labels = mask_tokens(batch["input_ids"], maskable, mask_id, replacements, generator,
                                                 self.probability, word_ids)
        batch["predict"] = labels != IGNORE_INDEX
        batch["labels"] = labels[batch["predict"]]  # (N,): the original token at each predicted position
        return batch

    def build_head(self, encoder) -> nn.Module:
        """The checkpoint's own head when the encoder's weights are a checkpoint's and it holds one, loaded
        strictly (continued pretraining starts where the model's pretraining stopped); else a fresh one (an
        encoder drawn at random gets a fresh head too: a trained head fits only its own word embeddings)."""
        checkpoint = encoder.bert.checkpoint
        head = load_head(checkpoint, encoder.bert, required=False) if checkpoint is not None else None
        log.info("task %s: %s", self.name, f"the masked-language-model head of {checkpoint}" if head is not None
                 else "a fresh masked-language-model head")
        return MaskedLMTaskHead(head if head is not None else MaskedLMHead(encoder.bert.config))

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean cross-entropy over the predicted tokens (0 for a batch that chose none)."""
        if not len(logits):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), batch["labels"])

    def predict(self, logits: torch.Tensor, batch: dict, examples: list[MaskedText]) -> list[dict]:
        """A user's text: the five likeliest tokens at each of its mask tokens. A masked text: how many tokens
        were predicted, how many right, and their summed loss (for the metrics)."""
        counts = batch["predict"].sum(1).tolist()
        rows, start = [], 0
        probs = logits.float().softmax(-1)
        for count, example in zip(counts, examples, strict=True):
            part = slice(start, start + count)
            start += count
            if example.fill:
                top = probs[part].topk(min(5, probs.shape[-1]))
                rows.append({"fills": [[(int(t), float(p)) for p, t in zip(ps, ts, strict=True)]
                                       for ps, ts in zip(top.values, top.indices, strict=True)]})
            else:
                gold = batch["labels"][part]
                nll = F.cross_entropy(logits[part].float(), gold, reduction="sum") if count else torch.zeros(())
                rows.append({"predicted": count, "correct": int((probs[part].argmax(-1) == gold).sum()),
                             "loss": float(nll)})
        return rows

    def metrics(self, predictions: list[dict], examples: list) -> dict[str, float]:
        """The accuracy of the predicted tokens, their mean loss and its perplexity."""
        n = max(sum(p["predicted"] for p in predictions), 1)
        loss = sum(p["loss"] for p in predictions) / n
        return {"accuracy": sum(p["correct"] for p in predictions) / n, "loss": loss,
                "perplexity": float(np.exp(min(loss, 50.0)))}

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["labels"])

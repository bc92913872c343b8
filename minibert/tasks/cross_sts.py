"""A cross-encoder for similarity: both sentences in one input, "[CLS] a [SEP] b [SEP]".

Every token of a attends to every token of b, a comparison that cos(u, v) cannot make, but the encoder
runs once per *pair*, so it scores pairs and cannot search a corpus. The head is the one transformers'
``BertForSequenceClassification`` puts on BERT (pooler dense + tanh on [CLS], dropout, linear to one
logit), so ``save_cross_encoder`` writes a folder that sentence-transformers' ``CrossEncoder`` loads (for
RoBERTa and MPNet, their own classifier of the same shape).
The loss is CrossEncoder's default for one label: binary cross-entropy against score / max_score;
sigmoid(logit) * max_score is the predicted score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minibert.data import PairExample, read_sts_tsv
from minibert.tasks.base import Task, check_score_task, has_labels, register, score_metrics
from minibert.weights import hf_tensors, save_tensors


class CrossEncoderHead(nn.Module):
    """[CLS] state -> dense -> tanh -> dropout -> linear -> one logit."""

    def __init__(self, hidden_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, features) -> torch.Tensor:
        cls = features.token_states[:, 0]
        return self.out(self.dropout(torch.tanh(self.dense(cls)))).squeeze(-1)  # (B,) logits


@register
@dataclass
class CrossSTS(Task):
    type = "cross_sts"
    main_metric = "spearman"
    saved_as = "transformers sequence classifier (a sentence-transformers CrossEncoder)"
    input = "pair"

    dropout: float = 0.1
    max_score: float = 5.0

    def check(self) -> None:
        check_score_task(self, self.max_score)

    read = staticmethod(read_sts_tsv)

    def example(self, pair: tuple[str, str], tokenizer) -> PairExample:
        return PairExample(*pair)

    def collate(self, examples: list[PairExample], tokenizer) -> dict[str, torch.Tensor]:
        # one input per pair; token_type_ids mark which sentence each token belongs to
        batch = tokenizer([(e.a, e.b) for e in examples]).tensors()
        if has_labels(examples):
            batch["labels"] = torch.tensor([float(e.label) for e in examples], dtype=torch.float32)
        return batch

    def build_head(self, encoder) -> nn.Module:
        """Starts from the checkpoint's pooler when it has one, as BertForSequenceClassification does."""
        head = CrossEncoderHead(encoder.bert.config.hidden_size, self.dropout)
        if encoder.bert.pooler is not None:
            head.dense.load_state_dict(encoder.bert.pooler.dense.state_dict())
        return head

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float() / self.max_score)

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float()) * self.max_score

    def predict(self, logits: torch.Tensor, batch: dict, examples: list) -> list[dict]:
        return [{"score": float(s)} for s in self.score(logits).cpu()]

    def metrics(self, predictions: list[dict], examples: list[PairExample]) -> dict[str, float]:
        return score_metrics([p["score"] for p in predictions], [e.label for e in examples])


# model_type -> (the transformers class, where its classifier keeps the dense layer and the output layer).
# BERT's classifier reads the pooler; RoBERTa's and MPNet's have a dense + tanh of their own: the same maths.
CROSS_ENCODER_LAYOUTS = {
    "bert": ("BertForSequenceClassification", "bert.pooler.dense", "classifier"),
    "roberta": ("RobertaForSequenceClassification", "classifier.dense", "classifier.out_proj"),
    "xlm-roberta": ("XLMRobertaForSequenceClassification", "classifier.dense", "classifier.out_proj"),
    "mpnet": ("MPNetForSequenceClassification", "classifier.dense", "classifier.out_proj"),
}


def save_cross_encoder(model, task: str, folder: str | Path) -> None:
    """The encoder and one cross_sts head as a transformers ``...ForSequenceClassification`` folder (one
    label) of the encoder's family, which sentence-transformers' ``CrossEncoder`` loads."""
    head, bert = model.heads[task], model.encoder.bert
    model_type = bert.config.model_type
    if model_type not in CROSS_ENCODER_LAYOUTS:  # DistilBERT's classifier is ReLU(pre_classifier), not tanh
        raise ValueError(f"a {model_type} cross-encoder has no transformers class with this head (a dense layer "
                         f"and tanh); families that have one: {', '.join(CROSS_ENCODER_LAYOUTS)}")
    architecture, dense, out = CROSS_ENCODER_LAYOUTS[model_type]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = type(bert).hf_prefix  # the encoder under its family's prefix, without the (untrained) pooler
    state = {k: t for k, t in hf_tensors(bert, prefix=prefix).items() if not k.startswith(prefix + "pooler.")}
    state |= {f"{dense}.weight": head.dense.weight, f"{dense}.bias": head.dense.bias,
              f"{out}.weight": head.out.weight, f"{out}.bias": head.out.bias}
    save_tensors(state, folder / "model.safetensors")
    config = bert.config.to_dict() | {"architectures": [architecture], "num_labels": 1,
                                      "classifier_dropout": model.tasks[task].dropout}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    model.encoder.tokenizer.save(folder)

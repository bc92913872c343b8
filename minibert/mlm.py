"""The masked-language-model head: how BERT learned what its encoder knows, and how it fills in a [MASK].

Pretraining hides some tokens (``minibert.masking``) and trains the encoder to predict them from both sides.
The head turns the last hidden state of a position into a score for every token of the vocabulary:

    hidden (C) -> dense (C -> C) -> activation -> LayerNorm -> dot product with every word embedding (V) + bias

The last step reuses the input word embeddings as the output layer ("tied" weights): a token's output vector is
its input vector, so the vocabulary costs its V x C parameters once. Each family names the head its own way in
its ``*ForMaskedLM`` checkpoints (``HEADS``); BERT and DistilBERT use their ``hidden_act``, the RoBERTa-style
heads always GELU. ``MaskedLanguageModel`` is transformers' ``AutoModelForMaskedLM``: an encoder of any family
with that head, loaded and saved strictly in their layout.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from minibert import inputs, weights
from minibert.activations import activation
from minibert.config import BertConfig
from minibert.families import load_model
from minibert.files import read_json
from minibert.masking import IGNORE_INDEX
from minibert.model import BertModel
from minibert.paths import convert
from minibert.tokenizer import Tokenizer, check_padding_side, position_capacity


def head_keys(dense: str, norm: str, bias: str) -> dict[str, str]:
    """minibert's names of the head's tensors -> a checkpoint's."""
    return {"dense.weight": f"{dense}.weight", "dense.bias": f"{dense}.bias", "norm.weight": f"{norm}.weight",
            "norm.bias": f"{norm}.bias", "bias": bias}


LM_HEAD = head_keys("lm_head.dense", "lm_head.layer_norm", "lm_head.bias")
# model_type -> (the head's keys, its activation: None for the config's hidden_act)
HEADS = {"bert": (head_keys("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                            "cls.predictions.bias"), None),
         "distilbert": (head_keys("vocab_transform", "vocab_layer_norm", "vocab_projector.bias"), None),
         "roberta": (LM_HEAD, "gelu"), "xlm-roberta": (LM_HEAD, "gelu"), "mpnet": (LM_HEAD, "gelu")}
# The output layer's weight, which a checkpoint may also hold: tied, it is the word embeddings again.
TIED = ("cls.predictions.decoder.weight", "lm_head.decoder.weight", "vocab_projector.weight")
# The output layer's bias where a checkpoint may hold it twice: tied, it is the head's bias again.
TIED_BIASES = {"cls.predictions.decoder.bias": "cls.predictions.bias", "lm_head.decoder.bias": "lm_head.bias"}


class MaskedLMHead(nn.Module):
    """hidden -> dense -> activation -> LayerNorm -> tied output layer (+ bias): a score per vocabulary token."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        C = config.hidden_size
        self.dense = nn.Linear(C, C)
        self.act = activation(HEADS[config.model_type][1] or config.hidden_act)
        self.norm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        if not self.dense.weight.is_meta:  # BERT's initialisation (meta: loaded from a checkpoint instead)
            nn.init.normal_(self.dense.weight, std=config.init_std())
            nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden (..., C), word_embeddings (V, C) -> logits (..., V)."""
        return F.linear(self.norm(self.act(self.dense(hidden))), word_embeddings, self.bias)


def load_head(folder: Path, bert: BertModel, required: bool = True) -> MaskedLMHead | None:
    """The folder's masked-language-model head for ``bert`` (loaded from the same folder), strictly: every tensor
    present and of its shape, an output layer stored beside it equal to the word embeddings it is tied to. A
    folder with none of the head: an error naming its keys, or None when it is not ``required``."""
    config = bert.config
    keys = HEADS[config.model_type][0]
    tensors = {k: t for k, (t, _) in weights.current_names(weights.load_safetensors(folder), str(folder)).items()}
    for tied_copy, bias in TIED_BIASES.items():  # the head's bias stored only as the output layer's: the same tensor
        if bias == keys["bias"] and bias not in tensors and tied_copy in tensors:
            tensors[bias] = tensors[tied_copy]
    found = {k: tensors[k] for k in tensors if k in keys.values()}
    if not found:
        if not required:
            return None
        raise ValueError(f"{folder} holds no masked-language-model head (none of {', '.join(keys.values())}): "
                         "a sentence-transformers folder, for one, keeps the encoder only")
    with torch.device("meta"):
        head = MaskedLMHead(config)
    expected = {keys[name]: tuple(t.shape) for name, t in head.state_dict().items()}
    weights.check_tensors(found, expected, f"{folder}'s masked-language-model head",
                          f"{folder / 'config.json'} ({config.model_type})")
    # minibert's output layer is the word embeddings (and the head's bias). transformers ties it to them only where
    # tie_word_embeddings is true and the folder stores no other: a stored one that differs (in the dtype the model
    # runs in) runs as stored, and with the flag false the output layer is the model's own (stored, or random).
    if read_json(folder / "config.json").get("tie_word_embeddings", True) is False:
        raise ValueError(f"{folder / 'config.json'}: tie_word_embeddings is false, so transformers runs an output "
                         "layer of its own (stored, or drawn at random); minibert's is the word embeddings")
    word = bert.embeddings.word.weight.detach().cpu()
    tied = {**dict.fromkeys(TIED, ("the word embeddings", word)),
            **{key: (bias, tensors.get(bias)) for key, bias in TIED_BIASES.items()}}
    for key, (what, target) in tied.items():
        if key in tensors and target is not None \
                and not torch.equal(tensors[key].to(word.dtype), target.to(word.dtype)):
            raise ValueError(f"{folder}: {key} differs from {what}, so transformers runs it as the output layer's "
                             "own; minibert ties the output layer to the word embeddings and the head's bias")
    head.load_state_dict({name: found[key] for name, key in keys.items()}, strict=True, assign=True)
    bert_param = next(bert.parameters())
    return head.to(bert_param.device, bert_param.dtype)


def fills(tokenizer: Tokenizer, ids: torch.Tensor, probs: torch.Tensor, mask_id: int, top_k: int,
          target_ids: torch.Tensor | None) -> list[list[dict]]:
    """One text's fills (its ids (L,), its probabilities (L, V)): each mask's ``top_k`` tokens, as the pipeline
    writes them."""
    positions = (ids == mask_id).nonzero().flatten().tolist()
    out = []
    for p in positions:
        scores = probs[p] if target_ids is None else probs[p, target_ids]
        top = scores.topk(top_k)
        tokens = top.indices.cpu() if target_ids is None else target_ids[top.indices.cpu()]
        out.append([{"score": float(s), "token": int(t), "token_str": tokenizer.decode([int(t)]),
                     "sequence": filled(tokenizer, ids, p, int(t), len(positions) == 1)}
                    for s, t in zip(top.values, tokens, strict=True)])
    return out


def filled(tokenizer: Tokenizer, ids: torch.Tensor, position: int, token: int, one_mask: bool) -> str:
    """The text of ``ids`` with ``token`` at ``position``, without padding, as the fill-mask pipeline writes it:
    special tokens dropped where the text has one mask, kept where it has more (its other masks stay)."""
    ids = ids.clone()
    ids[position] = token
    return tokenizer.decode(ids[ids != tokenizer.pad_id].tolist(), skip_special_tokens=one_mask)


def masked_lm_tokenizer(folder: Path, bert: BertModel) -> Tokenizer:
    """The folder's tokenizer as transformers' AutoTokenizer reads it (its files alone, no sentence-transformers
    settings), cutting texts only where ``bert``'s positions end."""
    tokenizer = Tokenizer.from_pretrained(folder, max_length=position_capacity(folder, bert.max_tokens),
                                          max_positions=bert.max_tokens, module_settings=False)
    check_padding_side(tokenizer, bert.position_skip_id)
    return tokenizer


class MaskedLMOutput(NamedTuple):
    loss: torch.Tensor | None  # the mean cross-entropy over the labelled positions, when labels are given
    logits: torch.Tensor  # (B, L, V)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the positions whose label is not IGNORE_INDEX, averaged over them."""
    flat = logits.float().reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX)


class MaskedLanguageModel(nn.Module):
    """An encoder and its masked-language-model head (transformers' ``AutoModelForMaskedLM``). On the fast path
    the logits at padded positions are the head's output for a zero state, where transformers computes them from
    the padding's states: nobody reads them (``fill_mask`` reads the masks, the loss the labelled positions)."""

    def __init__(self, bert: BertModel, head: MaskedLMHead, tokenizer: Tokenizer | None = None) -> None:
        super().__init__()
        self.bert, self.head, self.tokenizer = bert, head, tokenizer

    @classmethod
    def from_pretrained(cls, folder: str | Path, path: str = "reference", dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> MaskedLanguageModel:
        """A ``*ForMaskedLM`` folder, strictly: the encoder as ``load_model`` loads it, the head as ``load_head``
        (a folder without a head is an error naming the keys it lacks), the tokenizer as transformers'
        AutoTokenizer reads its files (no sentence-transformers settings), cutting texts only where the model's
        positions end (transformers' fill-mask pipeline does not cut them, and fails past them)."""
        folder = Path(folder)
        bert = load_model(folder, dtype=dtype, device=device)
        head = load_head(folder, bert)
        tokenizer = masked_lm_tokenizer(folder, bert)
        model = cls(convert(bert, path), head, tokenizer)
        return model.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> MaskedLMOutput:
        hidden = self.bert(input_ids, attention_mask, token_type_ids, pool=False).last_hidden_state
        logits = self.head(hidden, self.bert.embeddings.word.weight)
        return MaskedLMOutput(None if labels is None else mlm_loss(logits, labels), logits)

    def to_path(self, path: str) -> MaskedLanguageModel:
        """The same model on another execution path (``minibert.paths``), the weights shared."""
        return MaskedLanguageModel(convert(self.bert, path), self.head, self.tokenizer).train(self.training)

    @torch.inference_mode()
    def fill_mask(self, texts: str | list[str], top_k: int = 5, targets: str | list[str] | None = None,
                  batch_size: int = 32) -> list[list[list[dict]]] | list[list[dict]]:
        """For each text, for each of its mask tokens, the ``top_k`` tokens the model puts there, most probable
        first, as transformers' fill-mask pipeline gives them: ``{"score", "token", "token_str", "sequence"}``
        (the text with the token in, decoded without special tokens where the text has one mask). ``targets``:
        the tokens to choose from (a word outside the vocabulary counts as its first token, with a warning).
        One string gives its masks' lists alone. ``batch_size`` texts run at a time. Dropout is off for the call,
        whatever the model's mode."""
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise ValueError("fill_mask needs the model's tokenizer: MaskedLanguageModel(bert, head, tokenizer)")
        mask_id = tokenizer.backend.token_to_id(tokenizer.mask_token) if tokenizer.mask_token else None
        if mask_id is None:
            raise ValueError("this model's tokenizer has no mask token")
        texts, single = inputs.texts(texts, "texts")
        target_ids = None if targets is None else torch.tensor(self.target_ids(targets))  # (made once)
        top_k = inputs.whole_number("top_k", top_k, 1, None if target_ids is not None else self.head.bias.numel())
        top_k = top_k if target_ids is None else min(top_k, len(target_ids))  # (the pipeline caps it so)
        batch_size = inputs.whole_number("batch_size", batch_size)
        encodings = tokenizer.encode(texts)
        for i, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
            if mask_id not in encoding.ids:
                raise ValueError(f"text {i} ({text!r:.60}) holds no {tokenizer.mask_token} within the "
                                 f"{tokenizer.max_length} tokens the model reads")
        was_training, out = self.training, []
        self.eval()
        try:
            for start in range(0, len(texts), batch_size):
                batch = tokenizer.pad(encodings[start:start + batch_size]).to(next(self.parameters()).device)
                # the probabilities in the model's dtype, as the pipeline computes them (so that ties fall alike)
                probs = self(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits.softmax(-1)
                out += [fills(tokenizer, ids, row, mask_id, top_k, target_ids)
                        for ids, row in zip(batch.input_ids.cpu(), probs, strict=True)]
        finally:
            self.train(was_training)
        return out[0] if single else out

    def target_ids(self, targets: str | list[str]) -> list[int]:
        """The ids of the tokens ``fill_mask`` may choose, found as transformers' pipeline finds them: a token of
        the vocabulary, else the first token of the target's own tokens; in its order (that of a set of ids)."""
        tokenizer, ids = self.tokenizer, []
        for target in [targets] if isinstance(targets, str) else targets:
            token_id = tokenizer.backend.token_to_id(target)
            if token_id is None:
                pieces = tokenizer.backend.encode(target, add_special_tokens=False).ids
                if not pieces:
                    warnings.warn(f"target {target!r} has no token in the vocabulary: left out", stacklevel=4)
                    continue
                token_id = pieces[0] if tokenizer.truncation_side == "right" else pieces[-1]
                warnings.warn(f"target {target!r} is not a token of the vocabulary: its token "
                              f"{tokenizer.backend.id_to_token(token_id)!r} is scored in its place", stacklevel=4)
            ids.append(token_id)
        if not ids:
            raise ValueError(f"targets {targets!r}: none is left to choose from")
        return list(set(ids))

    def save_pretrained(self, folder: str | Path) -> None:
        """The folder transformers' ``AutoModelForMaskedLM`` loads: the encoder under its family's prefix, the
        head under its family's names, config.json naming the ``*ForMaskedLM`` class, and the tokenizer."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        bert = self.bert
        tensors = {k: t for k, t in weights.hf_tensors(bert, bert.hf_prefix).items()
                   if not k.startswith(bert.hf_prefix + "pooler.")}  # *ForMaskedLM has no pooler
        keys = HEADS[bert.config.model_type][0]
        tensors |= {keys[name]: t for name, t in self.head.state_dict().items()}
        config = bert.config.to_dict()
        config["architectures"] = [a.removesuffix("Model") + "ForMaskedLM" for a in config["architectures"]]
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        weights.save_tensors(tensors, folder / "model.safetensors")
        if self.tokenizer is not None:
            self.tokenizer.save(folder)

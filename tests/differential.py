"""Differential testing against sentence-transformers: random small folders, encoded by both libraries.

Each draw (``draw(seed)``) picks a family, a tokenizer and the files it is written in, config.json settings
(some left out, so that their defaults decide), a pooling mode with or without the prompt, 0-2 Dense layers,
Normalize or not, prompts, truncate_dim, the dtype, and encode options. ``build`` makes the folder the way a
user gets one: transformers saves the model and tokenizer, sentence-transformers builds its pipeline on top
and saves it; then older forms are written over it (vocab files instead of tokenizer.json, the module config
and pooling config of earlier versions, ...). ``run`` encodes a draw's sentences (special tokens written in the
text, mixed case, Greek, CJK, emoji, text past the limit) with sentence-transformers and with minibert on the
reference and fast paths (int8 on some draws), and sorts the outcome:

    match     the same shape, the values within the tolerance
    refused   minibert refuses the folder with an error that names a setting docs/parity.md lists
    both      sentence-transformers fails too (an invalid folder); minibert must refuse as well
    differ    (a failure) different shapes or values, an unlisted refusal, or minibert running a folder the
              reference cannot
    crash     (a failure) an exception that is not a clear error

``python tests/differential.py --draws 2000`` runs a long campaign and prints the counts and every failure;
tests/test_differential.py runs a fixed number in the suite.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import shutil
import sys
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import logging  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from minibert.verify import INT8_LOWEST_COSINE, INT8_MEAN_COSINE  # noqa: E402

LONG = " ".join(["Long text keeps going past the limit, word after word."] * 12)
SENTENCES = [
    "A man is playing a guitar.", "Hello WORLD, this Is MiXeD case!",
    "\u039f\u0394\u039f\u03a3 \u03c3\u03bf\u03c6\u03af\u03b1\u03c2 \u1f41\u03b4\u03cc\u03c2 "
    "\u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2",  # Greek, capital and final sigmas
    "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002\u4e2d\u6587\uff0c\ud55c\uad6d\uc5b4",
    "I love it \U0001f600\U0001f389\U0001f44d\U0001f3fd and \u2764\ufe0f",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9, \u00c6r\u00f8sk\u00f8bing, Stra\u00dfe",
    "[CLS] [SEP] [MASK] [PAD] [UNK] <s> </s> <pad> <mask> <unk> in the text", "", "   spaces   around  ",
    "tab\tand\nnewline", "a <mask> b [mask] C", "The STOCK market fell sharply today.", LONG, "x",
]
CORPUS = [s for s in SENTENCES if s] + [s.lower() for s in SENTENCES if s] + [
    "Someone plays music for the crowd on the stage.", "Kids run and play in the park after school.",
    "Peter Blackburn visited Brussels on Monday.", "A chef is cooking pasta in the kitchen tonight."]
FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "mpnet")
ACTS = ("gelu", "gelu", "gelu_new", "relu", "silu", "gelu_pytorch_tanh", "quick_gelu", "tanh", "mish", "gelu_fast",
        "swish", "gelu_10", "leaky_relu", "prelu")
DENSE_ACTS = ("torch.nn.modules.activation.Tanh", "torch.nn.modules.linear.Identity",
              "torch.nn.modules.activation.ReLU", "torch.nn.modules.activation.GELU",
              "torch.nn.modules.activation.Sigmoid", "torch.nn.modules.activation.SiLU",
              "torch.nn.modules.activation.Softsign", "mypackage.Swish")
POOLING = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
SPECIALS = {"wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            "mpnet": ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "[PAD]", "[CLS]", "[SEP]", "<mask>"],
            "bpe": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "unigram": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]}
# What minibert may refuse, each a setting docs/parity.md lists (matched against the error's message).
REFUSALS = {
    "activation with parameters": r"has learnt parameters of its own",
    "Dense activation outside torch": r"activation_function .* is not a torch class",
    "padding on the left": r"padding_side 'left': minibert pads on the right only",
    "no model_type": r"has no model_type",
    "unknown tokenizer class": r"is not a tokenizer minibert builds",
    "no pad token": r"the tokenizer has no pad token",
    "pooling dimension": r"embedding dimension \d+ does not match",
}


def words(pre_tokenizer) -> list[str]:
    """CORPUS's words as ``pre_tokenizer`` splits them, the most frequent first (ties in text order)."""
    counts: dict[str, int] = {}
    for text in CORPUS:
        for word, _ in pre_tokenizer.pre_tokenize_str(text):
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts, key=lambda w: -counts[w])


def bpe_merges(pieces: list[list[str]], rounds: int) -> list[tuple[str, str]]:
    """Byte-pair merges learnt greedily (the most frequent pair, ties to the first in order): deterministic,
    where the tokenizers library's trainers break ties differently in every process."""
    merges = []
    for _ in range(rounds):
        counts: dict[tuple[str, str], int] = {}
        for word in pieces:
            for pair in zip(word, word[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], [-ord(ch) for ch in p[0] + p[1]]))
        merges.append(best)
        for word in pieces:
            i = 0
            while i < len(word) - 1:
                if (word[i], word[i + 1]) == best:
                    word[i:i + 2] = [word[i] + word[i + 1]]
                i += 1
    return merges


@functools.cache
def vocabularies() -> dict[str, tuple]:
    """Small cased vocabularies of each kind, built from CORPUS the same way in every process: the specials
    first, then every character (WordPiece: and its ## form), then the most frequent words or merges."""
    from tokenizers import pre_tokenizers

    chars = sorted({ch for text in CORPUS for ch in text if not ch.isspace()})
    out = {}
    bert_words = words(pre_tokenizers.BertPreTokenizer())[:200]
    for kind in ("wordpiece", "mpnet"):
        tokens = [t for t in SPECIALS[kind] if t != "<mask>"] + chars + ["##" + ch for ch in chars] + bert_words
        tokens += ["<mask>"] if kind == "mpnet" else []  # as MPNet's own vocabulary: <mask> last
        out[kind] = ({t: i for i, t in enumerate(dict.fromkeys(tokens))},)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = bpe_merges([list(w) for text in CORPUS for w, _ in byte_level.pre_tokenize_str(text)], 250)
    tokens = SPECIALS["bpe"] + alphabet + ["".join(m) for m in merges]
    out["bpe"] = ({t: i for i, t in enumerate(dict.fromkeys(tokens))}, merges)
    metaspace = pre_tokenizers.Metaspace()
    unigram_words = words(metaspace)[:150]
    pieces = [(t, 0.0) for t in SPECIALS["unigram"]] + [("\u2581", -2.0)] + [(ch, -8.0) for ch in chars] + \
        [(w, -4.0 - i / 100) for i, w in enumerate(unigram_words) if w not in chars and w != "\u2581"]
    out["unigram"] = (pieces,)
    return out


def draw(seed: int) -> dict:
    """The choices of draw ``seed``: a plain dict, printed with every failure."""
    r = random.Random(seed)
    family = r.choice(FAMILIES)
    c = {"seed": seed, "family": family, "hidden": r.choice([16, 32]), "heads": r.choice([2, 4]),
         "layers": r.choice([1, 2]), "inner": r.choice([24, 40]), "act": r.choice(ACTS),
         "eps": r.choice(["drop", "drop", 1e-5, 1e-12, 1e-3]),
         "dtype": r.choice(["float32"] * 8 + ["drop", "bfloat16", "float16"]),
         "drop_model_type": r.random() < 0.03, "lower": r.choice([True, False, "drop"]),
         "strip_accents": r.choice([None, None, True, False]), "chinese": r.random() < 0.85,
         "prefix_space": r.choice([None, True, False]), "truncation_side": r.choice(["right"] * 5 + ["left"]),
         "padding_side": r.choice(["right"] * 12 + ["left"]),
         "files": r.choice(["json", "json", "vocab", "no_tokenizer_config", "special_tokens_map", "verbatim",
                            "added_tokens_decoder", "token_dicts", "no_tokenizer_class", "json_lowercase",
                            "json_sides"]),
         "tokenizer_max": r.choice([None, 24, 40, 1000]), "st_max": r.choice([None, None, 20, 32]),
         "module_form": r.choice(["st6", "st6", "old", "old_renamed", "tokenizer_args", "no_modules", "model_args",
                                  "config_args"]),
         "old_class_names": r.random() < 0.3, "st_config_form": r.choice(["st6", "st6", "v2", "bad_similarity"]),
         "st_lower": r.random() < 0.25,
         "pooling": r.sample(POOLING, r.choice([1, 1, 1, 2])), "legacy_pooling": r.random() < 0.3,
         "include_prompt": r.random() < 0.6, "dense": [(r.choice([8, 12, 24]), r.choice(DENSE_ACTS), r.random() < 0.8,
                                                        r.random() < 0.2) for _ in range(r.choice([0, 0, 1, 2]))],
         "normalize": r.random() < 0.5, "prompts": r.random() < 0.4, "default_prompt": r.random() < 0.5,
         "similarity": r.choice([None, "cosine", "dot", "euclidean", "manhattan"]),
         "truncate_dim": r.choice([None, None, None, 4, 8]), "pass_truncate": r.choice([None, None, 4, 6]),
         "normalize_embeddings": r.random() < 0.3, "batch_size": r.choice([1, 3, 8, 32]),
         "prompt_call": r.choice([None, None, "name", "text"]), "int8": r.random() < 0.15,
         "sentences": r.sample(range(len(SENTENCES)), r.randint(3, 7))}
    if family in ("roberta", "xlm-roberta") and c["files"] == "vocab":
        c["files"] = "vocab" if family == "roberta" else "json"
    return c


def choices(family: str, seed: int = 0, **overrides) -> dict:
    """A draw's choices set by hand: a plain folder of ``family`` unless ``overrides`` say otherwise (the
    tests of single settings build their folders from these)."""
    c = {"seed": seed, "family": family, "hidden": 32, "heads": 4, "layers": 2, "inner": 40, "act": "gelu",
         "eps": 1e-12, "dtype": "float32", "drop_model_type": False, "lower": True, "strip_accents": None,
         "chinese": True, "prefix_space": None, "truncation_side": "right", "padding_side": "right", "files": "json",
         "tokenizer_max": None, "st_max": None, "module_form": "st6", "old_class_names": False,
         "st_config_form": "st6", "st_lower": False, "pooling": ["mean"], "legacy_pooling": False,
         "include_prompt": True, "dense": [], "normalize": False, "prompts": False, "default_prompt": False,
         "similarity": None, "truncate_dim": None, "pass_truncate": None, "normalize_embeddings": False,
         "batch_size": 8, "prompt_call": None, "int8": False, "sentences": list(range(len(SENTENCES)))}
    unknown = set(overrides) - set(c)
    if unknown:
        raise KeyError(f"not a choice: {sorted(unknown)}")
    return {**c, **overrides}


def hf_tokenizer(c: dict, transformers):
    family = c["family"]
    kwargs = {"truncation_side": c["truncation_side"]}
    if family in ("bert", "distilbert", "mpnet"):
        (vocab,) = vocabularies()["mpnet" if family == "mpnet" else "wordpiece"]
        kwargs |= {"do_lower_case": c["lower"] is not False, "strip_accents": c["strip_accents"],
                   "tokenize_chinese_chars": c["chinese"]}
        cls = transformers.MPNetTokenizer if family == "mpnet" else transformers.BertTokenizer
        return cls(vocab=dict(vocab), **kwargs)
    if family == "roberta":
        vocab, merges = vocabularies()["bpe"]
        return transformers.RobertaTokenizer(vocab=dict(vocab), merges=list(merges),
                                             add_prefix_space=bool(c["prefix_space"]), **kwargs)
    (vocab,) = vocabularies()["unigram"]
    return transformers.XLMRobertaTokenizer(vocab=list(vocab), add_prefix_space=c["prefix_space"] is not False,
                                            **kwargs)


def hf_config(c: dict, vocab_size: int, transformers):
    dims = dict(hidden_size=c["hidden"], num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                intermediate_size=c["inner"], hidden_act=c["act"] if c["act"] != "prelu" else "gelu")
    if c["family"] == "bert":
        return transformers.BertConfig(vocab_size=vocab_size, max_position_embeddings=64, **dims)
    if c["family"] == "distilbert":
        return transformers.DistilBertConfig(vocab_size=vocab_size, dim=c["hidden"], n_layers=c["layers"],
                                             n_heads=c["heads"], hidden_dim=c["inner"], max_position_embeddings=64,
                                             activation=dims["hidden_act"])
    positions = dict(max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    if c["family"] == "mpnet":
        return transformers.MPNetConfig(vocab_size=vocab_size, **dims, **positions)
    cls = transformers.RobertaConfig if c["family"] == "roberta" else transformers.XLMRobertaConfig
    return cls(vocab_size=vocab_size, type_vocab_size=1, **dims, **positions)


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    result = change(data)  # changes data in place (returning whatever), or returns new contents
    data = result if isinstance(result, (dict, list)) else data
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def build(c: dict, root: Path) -> Path:
    """The draw's folder: saved by transformers and sentence-transformers, then rewritten in older forms."""
    import sentence_transformers as st
    import transformers
    from sentence_transformers import models as st_models

    hf = root / "hf"
    tokenizer = hf_tokenizer(c, transformers)
    torch.manual_seed(c["seed"])
    model = transformers.AutoModel.from_config(hf_config(c, len(tokenizer), transformers))
    with torch.no_grad():  # away from the initial ones and zeros, so that every tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(hf))
    tokenizer.save_pretrained(str(hf))
    transformer = st_models.Transformer(str(hf), max_seq_length=c["st_max"], do_lower_case=c["st_lower"])
    modules = [transformer, st_models.Pooling(c["hidden"], c["pooling"], include_prompt=c["include_prompt"])]
    dim = len(c["pooling"]) * c["hidden"]
    for out, act, bias, residual in c["dense"]:
        act_module = torch.nn.Tanh() if act.startswith("mypackage") else getattr(torch.nn, act.rsplit(".", 1)[1])()
        modules.append(st_models.Dense(dim, out, bias=bias, activation_function=act_module, use_residual=residual))
        dim = out
    if c["normalize"]:
        modules.append(st_models.Normalize())
    prompts = {"query": "query: ", "passage": "Represent this passage: "} if c["prompts"] else None
    model = st.SentenceTransformer(modules=modules, device="cpu", prompts=prompts,
                                   default_prompt_name="query" if prompts and c["default_prompt"] else None,
                                   similarity_fn_name=c["similarity"],
                                   truncate_dim=c["truncate_dim"] if c["truncate_dim"] and c["truncate_dim"] < dim
                                   else None)
    folder = root / "st"
    model.save(str(folder))
    rewrite(c, folder)
    return folder


def rewrite(c: dict, folder: Path) -> None:
    """The older forms and the settings left out or changed by hand."""
    config, tok_config = folder / "config.json", folder / "tokenizer_config.json"
    edit_json(config, lambda d: d.update(dtype=c["dtype"]) if c["dtype"] != "drop" else d.pop("dtype", None))
    if c["eps"] != "drop" and c["family"] != "distilbert":
        edit_json(config, lambda d: d.update(layer_norm_eps=c["eps"]))
    elif c["eps"] == "drop":
        edit_json(config, lambda d: d.pop("layer_norm_eps", None))
    if c["act"] == "prelu":
        edit_json(config, lambda d: d.update({"activation" if c["family"] == "distilbert" else "hidden_act": "prelu"}))
    if c["drop_model_type"]:
        edit_json(config, lambda d: d.pop("model_type"))
    if c["lower"] == "drop":
        edit_json(tok_config, lambda d: d.pop("do_lower_case", None))
    edit_json(tok_config, lambda d: d.update(model_max_length=c["tokenizer_max"]) if c["tokenizer_max"]
              else d.pop("model_max_length", None))
    if c["prefix_space"] is None:
        edit_json(tok_config, lambda d: d.pop("add_prefix_space", None))
    if c["padding_side"] == "left":
        edit_json(tok_config, lambda d: d.update(padding_side="left"))
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if c["files"] == "vocab":  # the files of transformers 4's slow tokenizers, no tokenizer.json
        model = data["model"]
        if model["type"] == "WordPiece":
            (folder / "vocab.txt").write_text("\n".join(sorted(model["vocab"], key=model["vocab"].get)) + "\n",
                                              encoding="utf-8")
        else:
            (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
            merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
            (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        (folder / "tokenizer.json").unlink()
    elif c["files"] == "no_tokenizer_config":
        tok_config.unlink()
    elif c["files"] == "special_tokens_map":
        keys = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
        old = json.loads(tok_config.read_text(encoding="utf-8"))
        tokens = {k: {"content": old[k], "lstrip": k == "mask_token", "normalized": False, "rstrip": False,
                      "single_word": False} for k in keys if k in old}
        (folder / "special_tokens_map.json").write_text(json.dumps(tokens))
    elif c["files"] == "verbatim":
        edit_json(tok_config, lambda d: d.update(tokenizer_class="PreTrainedTokenizerFast"))
    elif c["files"] == "no_tokenizer_class":
        edit_json(tok_config, lambda d: d.pop("tokenizer_class"))
    elif c["files"] == "added_tokens_decoder":  # transformers 4 wrote the added tokens into the config
        edit_json(tok_config, lambda d: d.update(added_tokens_decoder={
            str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in data["added_tokens"]}))
    elif c["files"] == "token_dicts":  # older still: each special token as an AddedToken's fields
        edit_json(tok_config, lambda d: d.update({k: {"__type": "AddedToken", "content": v, "lstrip": False,
                                                      "normalized": False, "rstrip": False, "single_word": False}
                                                  for k, v in d.items() if k.endswith("_token")}))
    elif c["files"] == "json_sides":  # tokenizer.json saved with padding and truncation on the left
        data["padding"] = {"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": None, "pad_id": 0,
                           "pad_type_id": 0, "pad_token": "[PAD]"}
        data["truncation"] = {"direction": "Left", "max_length": 16, "strategy": "LongestFirst", "stride": 0}
        (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        if c["truncation_side"] == "left":  # the config's side wins over the file's
            edit_json(tok_config, lambda d: d.update(padding_side="right"))
    elif c["files"] == "json_lowercase" and data["normalizer"] and data["normalizer"].get("type") == "BertNormalizer":
        data["normalizer"]["lowercase"] = True  # tokenizer.json lowercases, tokenizer_config.json may say not to
        (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    module_config = folder / "sentence_bert_config.json"
    form = c["module_form"]
    if form in ("old", "old_renamed", "tokenizer_args"):
        old = {"max_seq_length": c["st_max"], "do_lower_case": c["st_lower"]}
        if form == "tokenizer_args":
            old["tokenizer_args"] = {"do_lower_case": c["lower"] is True}
        module_config.write_text(json.dumps(old))
    elif form == "model_args":
        edit_json(module_config, lambda d: d.update(model_args={"torch_dtype": "bfloat16"}))
    elif form == "config_args":
        edit_json(module_config, lambda d: d.update(config_args={"layer_norm_eps": 1e-3}))
        if form == "old_renamed" and c["family"] in ("roberta", "distilbert", "xlm-roberta"):
            module_config.rename(folder / f"sentence_{c['family']}_config.json")
    elif form == "no_modules":
        (folder / "modules.json").unlink()
    for i, (_, act, _, _) in enumerate(c["dense"]):
        if act.startswith("mypackage"):  # a class outside torch, which sentence-transformers will not import
            edit_json(folder / f"{i + 2}_Dense" / "config.json", lambda d, a=act: d.update(activation_function=a))
    if c["old_class_names"] and (folder / "modules.json").is_file():  # what sentence-transformers 2 to 5 wrote
        edit_json(folder / "modules.json", lambda d: [{**m, "type": "sentence_transformers.models." +
                                                        m["type"].rsplit(".", 1)[1]} for m in d])
    st_config = folder / "config_sentence_transformers.json"
    if c["st_config_form"] == "v2":
        edit_json(st_config, lambda d: {"__version__": {"sentence_transformers": "2.2.2"},
                                        **({"prompts": d["prompts"]} if any(d["prompts"].values()) else {})})
    elif c["st_config_form"] == "bad_similarity":
        edit_json(st_config, lambda d: d.update(similarity_fn_name="dot_product"))
    if c["legacy_pooling"]:
        names = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
                 "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                 "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
        edit_json(folder / "1_Pooling" / "config.json", lambda d: {
            "word_embedding_dimension": d["embedding_dimension"], "include_prompt": d.get("include_prompt", True),
            **{key: mode in c["pooling"] for mode, key in names.items()}})
        if c["pooling"] != [m for m in names if m in c["pooling"]]:  # the legacy form has a fixed order
            c["pooling_order_changed"] = True


@dataclass
class Outcome:
    kind: str  # match, refused, both, differ, crash
    detail: str = ""
    choices: dict = field(default_factory=dict)


def call_options(c: dict, dim: int) -> dict:
    options = {"batch_size": c["batch_size"], "normalize_embeddings": c["normalize_embeddings"]}
    if c["pass_truncate"] and c["pass_truncate"] <= dim:
        options["truncate_dim"] = c["pass_truncate"]
    if c["prompt_call"] == "name":
        options["prompt_name"] = "query"
    elif c["prompt_call"] == "text":
        options["prompt"] = "Find: "
    return options


def tolerance(theirs: np.ndarray, theirs_fp32: np.ndarray, dtype: torch.dtype) -> float:
    """1e-5 (relative to the largest value) in float32; in a half dtype, as ``minibert verify`` holds bf16: four
    units in the last place at the largest value or twice the reference's own half-against-float32 error."""
    largest = float(np.abs(theirs_fp32).max()) if theirs_fp32.size else 0.0
    if dtype == torch.float32:
        return 1e-5 * max(1.0, largest)
    bits = 7 if dtype == torch.bfloat16 else 10
    ulp = 2.0 ** (np.floor(np.log2(largest)) - bits) if largest > 0 else 0.0
    return max(4 * ulp, 2 * float(np.abs(theirs.astype(np.float32) - theirs_fp32).max()))


def reference_run(c: dict, folder: Path, texts: list[str], limit: int | None = None):
    """sentence-transformers on the folder: (its embeddings, the same in float32, its similarity of the
    float32 ones, the encode options, its dtype). ``limit``: a token limit set on the loaded models."""
    import sentence_transformers as st

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = [st.SentenceTransformer(str(folder), device="cpu", **kwargs)
                  for kwargs in ({}, {"model_kwargs": {"dtype": torch.float32}})]
        for model in models if limit else ():
            model.max_seq_length = limit
        options = call_options(c, models[0].get_embedding_dimension() or 10 ** 6)
        theirs, theirs_fp32 = (model.encode(texts, **options) for model in models)
        return theirs, theirs_fp32, models[0].similarity(theirs_fp32, theirs_fp32), options, \
            models[0][0].auto_model.dtype


def compare(c: dict, folder: Path) -> Outcome:
    from minibert import SentenceEncoder

    texts, note = [SENTENCES[i] for i in c["sentences"]], ""
    try:
        theirs, theirs_fp32, theirs_sim, options, their_dtype = reference_run(c, folder, texts)
    except Exception as e:  # the reference cannot run this folder: minibert must not either
        reason = f"{type(e).__name__}: {str(e)[:200]}"
        try:
            ours = SentenceEncoder.from_pretrained(folder)
            ours.encode(texts, **call_options(c, 10 ** 6))
        except (ValueError, OSError, TypeError) as mine:
            return Outcome("both", f"reference: {reason}; minibert: {str(mine)[:200]}")
        except Exception:
            return Outcome("crash", f"reference: {reason}; minibert: {traceback.format_exc()[-600:]}")
        if not re.search(r"out of (range|bounds)", reason):
            return Outcome("differ", f"minibert runs a folder the reference cannot ({reason})")
        # The reference's limit is past what the model's positions hold (RoBERTa's and MPNet's positions start
        # at padding_idx + 1); minibert cuts there. With the reference cut there too, they must agree.
        note = f"the reference fails past the positions; compared at minibert's limit {ours.tokenizer.max_length}"
        theirs, theirs_fp32, theirs_sim, options, their_dtype = reference_run(c, folder, texts,
                                                                              ours.tokenizer.max_length)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = SentenceEncoder.from_pretrained(folder, path="reference")
            runs = {"reference": ours.encode(texts, **options), "fast": ours.encode(texts, path="fast", **options)}
            dtype = next(ours.parameters()).dtype
            if c["int8"] and dtype == torch.float32:
                runs["int8"] = ours.encode(texts, path="int8", **options)
            ours_sim = ours.similarity(theirs_fp32, theirs_fp32)
    except (ValueError, OSError) as e:
        names = [name for name, pattern in REFUSALS.items() if re.search(pattern, str(e))]
        return Outcome("refused", names[0]) if names else Outcome("differ", f"unlisted refusal: {e}")
    except Exception:
        return Outcome("crash", traceback.format_exc()[-1500:])
    if dtype != their_dtype:
        return Outcome("differ", f"dtype {dtype}, the reference runs {their_dtype}")
    held_to = tolerance(theirs, theirs_fp32, dtype)
    for name, mine in runs.items():
        if mine.shape != theirs.shape:
            return Outcome("differ", f"{name}: shape {mine.shape}, the reference gives {theirs.shape}")
        if name == "int8":  # int8's stated tolerance (minibert verify's): the cosines with the float32 reference
            cosine = torch.nn.functional.cosine_similarity(torch.as_tensor(mine), torch.as_tensor(runs["reference"]))
            if len(cosine) and (cosine.min() < INT8_LOWEST_COSINE or cosine.mean() < INT8_MEAN_COSINE):
                return Outcome("differ", f"int8: cosine with the reference path lowest {float(cosine.min()):.4f}, "
                                         f"mean {float(cosine.mean()):.4f}")
            continue
        # a half-precision run is held to the float32 reference (as accurate as the reference's own half run)
        goal = theirs if dtype == torch.float32 else theirs_fp32
        diff = float(np.abs(mine.astype(np.float32) - goal.astype(np.float32)).max()) if mine.size else 0.0
        if not diff <= held_to:
            return Outcome("differ", f"{name}: max |difference| {diff:.2e} > {held_to:.1e}")
    if not torch.allclose(ours_sim, theirs_sim, atol=1e-5 * max(1.0, float(theirs_sim.abs().max())), rtol=0):
        return Outcome("differ", f"similarity {ours.settings.similarity_fn_name}: "
                                 f"{float((ours_sim - theirs_sim).abs().max()):.2e}")
    return Outcome("match", note)


def run(seed: int, root: Path) -> Outcome:
    c = draw(seed)
    folder = root / f"draw-{seed}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = build(c, folder)
    except Exception as e:  # the draw itself cannot be built (a combination the references reject)
        return Outcome("both", f"not built: {type(e).__name__}: {str(e)[:200]}", c)
    try:
        outcome = compare(c, built)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    outcome.choices = c
    return outcome


def campaign(seeds: range, root: Path, progress: bool = False) -> list[Outcome]:
    outcomes = []
    for seed in seeds:
        outcomes.append(run(seed, root))
        if progress and len(outcomes) % 50 == 0:
            counts = {k: sum(o.kind == k for o in outcomes) for k in ("match", "refused", "both", "differ", "crash")}
            print(f"{len(outcomes)} draws: {counts}", file=sys.stderr, flush=True)
    return outcomes


def report(outcomes: list[Outcome]) -> str:
    counts = {k: sum(o.kind == k for o in outcomes) for k in ("match", "refused", "both", "differ", "crash")}
    lines = [f"{len(outcomes)} draws: " + ", ".join(f"{v} {k}" for k, v in counts.items())]
    refused = {}
    for o in outcomes:
        if o.kind == "refused":
            refused[o.detail] = refused.get(o.detail, 0) + 1
    lines += [f"  refused, {name}: {n}" for name, n in sorted(refused.items())]
    both = {}
    for o in outcomes:
        if o.kind == "both":  # what the reference failed on, its error message's start with the paths taken out
            reason = re.sub(r"/\S*/", "", o.detail.split(";")[0])[:90]
            both[reason] = both.get(reason, 0) + 1
    lines += [f"  both fail, {reason}: {n}" for reason, n in sorted(both.items(), key=lambda kv: -kv[1])]
    for o in outcomes:
        if o.kind in ("differ", "crash"):
            lines.append(f"{o.kind.upper()} seed {o.choices.get('seed')}: {o.detail}\n    {o.choices}")
    return "\n".join(lines)


def main() -> int:
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--first", type=int, default=0, help="the first draw's seed")
    parser.add_argument("--output", help="write the report here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = campaign(range(args.first, args.first + args.draws), Path(tmp), progress=True)
    text = report(outcomes)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return int(any(o.kind in ("differ", "crash") for o in outcomes))


if __name__ == "__main__":
    sys.exit(main())

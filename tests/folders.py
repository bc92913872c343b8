"""Random small model folders, made as a user gets them, for the differential tests (tests/differential.py).

``draw(seed)`` picks a family, a tokenizer and the files it is written in, config.json settings (some left out,
so that their defaults decide; a causal-LM architecture, BERT's names beside DistilBERT's, weights stored in mixed
dtypes, a null or negative pad_token_id, TensorFlow-era tensor names, a module config's torch_dtype), a chat
template, a pooling mode with or without the prompt, 0-2 Dense layers, Normalize or not, prompts, truncate_dim,
the dtype, and encode options; ``choices(family, **settings)`` sets them by hand.
``build`` makes the folder: transformers saves the model and tokenizer, sentence-transformers builds its
pipeline on top and saves it; then ``folder_forms.rewrite`` writes the older forms and hand-made settings
over it. The vocabularies are small, cased, and built the same way in every process.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import torch

from folder_forms import rewrite

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
ADDED_WORDS = ("guitar", "MiXeD", "stock", "ark", "na\u00efve")  # in SENTENCES: ark inside a word, MiXeD cased
POOLING = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
SPECIALS = {"wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            "mpnet": ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "[PAD]", "[CLS]", "[SEP]", "<mask>"],
            "bpe": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "unigram": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]}
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
         "sentences": r.sample(range(len(SENTENCES)), r.randint(3, 7)),
         "causal": r.random() < 0.15, "is_causal": r.choice([None, None, True, False]),
         "chat_template": r.choice([None] * 12 + ["tokenizer_config", "jinja"]),
         "bert_names": r.random() < 0.3, "mixed_dtype": r.random() < 0.3,
         "config_args_dtype": r.random() < 0.5, "pad": r.choice([None] * 10 + ["null", "negative"]),
         "legacy_names": r.random() < 0.1,
         "config_args_unset": r.choice([None] * 4 + ["is_causal", "quantization_config", "position_embedding_type"]),
         "transformer_subfolder": r.random() < 0.15}
    # words added to the vocabulary (add_tokens), each with its flags: normalized, single_word, lstrip, rstrip
    c["added_words"] = [(word, *(r.random() < p for p in (0.5, 0.5, 0.3, 0.3))) for word in ADDED_WORDS] \
        if r.random() < 0.25 else None
    c["rare_tokenizer_form"] = r.choice([None] * 9 + ["class_in_config", "max_len", "map_only"])
    # the module config's token limits of queries and documents (query_length, document_length), and the call
    c["task_lengths"] = r.choice([None] * 4 + [(6, None), (None, 10), (12, 40)])
    c["encode_call"] = r.choice(["encode"] * 4 + ["encode_query", "encode_document"])
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
         "batch_size": 8, "prompt_call": None, "int8": False, "sentences": list(range(len(SENTENCES))),
         "causal": False, "is_causal": None, "chat_template": None, "bert_names": False, "mixed_dtype": False,
         "config_args_dtype": False, "pad": None, "legacy_names": False, "config_args_unset": None,
         "transformer_subfolder": False, "added_words": None,
         "rare_tokenizer_form": None, "task_lengths": None, "encode_call": "encode"}
    unknown = set(overrides) - set(c)
    if unknown:
        raise KeyError(f"not a choice: {sorted(unknown)}")
    return {**c, **overrides}


def hf_tokenizer(c: dict, transformers):
    tokenizer = base_tokenizer(c, transformers)
    if c["added_words"]:
        tokenizer.add_tokens([transformers.AddedToken(word, normalized=normalized, single_word=single, lstrip=left,
                                                      rstrip=right)
                              for word, normalized, single, left, right in c["added_words"]])
    return tokenizer


def base_tokenizer(c: dict, transformers):
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
    lengths = dict(zip(("query_length", "document_length"), c["task_lengths"] or (None, None), strict=True))
    transformer = st_models.Transformer(str(hf), max_seq_length=c["st_max"], do_lower_case=c["st_lower"], **lengths)
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

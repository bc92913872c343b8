"""A folder's tokenizer files turned into a `tokenizers` pipeline, the way transformers 5 builds it.

transformers 5 does not run a ``tokenizer.json`` as it is. Its tokenizer class (``tokenizer_config.json``'s
``tokenizer_class``, else the one of config.json's ``model_type``) keeps only the file's vocabulary (BPE: and
merges; XLM-R: and its SentencePiece character map; ``vocabulary.py`` reads them) and builds everything else
from ``tokenizer_config.json`` and the class's defaults:

    class                         vocabulary from                normaliser, pre-tokenizer          template
    BertTokenizer (DistilBERT's)  tokenizer.json or vocab.txt    BertNormalizer(do_lower_case), Bert  [CLS] A [SEP]
    MPNetTokenizer                tokenizer.json or vocab.txt    as BERT                              <s> A </s>
    RobertaTokenizer              tokenizer.json or vocab.json   none, ByteLevel(add_prefix_space)    <s> A </s>
                                  + merges.txt
    XLMRobertaTokenizer           tokenizer.json                 its character map, Metaspace         <s> A </s>

So a cased model whose tokenizer_config.json lacks ``"do_lower_case": false`` is lowercased (the default is
true), whatever its tokenizer.json says. Only ``PreTrainedTokenizerFast`` (a class named so in the config) runs
tokenizer.json verbatim. The special tokens come from tokenizer_config.json, or, when that lists no
``added_tokens_decoder``, from special_tokens_map.json over it, else from the class's defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from minibert.files import json_object, optional_json
from minibert.special_tokens import add_tokens, read_special_tokens
from minibert.vocabulary import vocabulary

ROBERTA_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                    "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
# class -> (its model, the defaults of its special tokens)
CLASSES = {
    "BertTokenizer": ("WordPiece", {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                    "cls_token": "[CLS]", "mask_token": "[MASK]"}),
    "MPNetTokenizer": ("WordPiece", {**ROBERTA_SPECIALS, "unk_token": "[UNK]"}),
    "RobertaTokenizer": ("BPE", ROBERTA_SPECIALS),
    "XLMRobertaTokenizer": ("Unigram", ROBERTA_SPECIALS),
    "PreTrainedTokenizerFast": (None, {}),  # tokenizer.json as it is
}
ALIASES = {"DistilBertTokenizer": "BertTokenizer", "TokenizersBackend": "PreTrainedTokenizerFast"}
CLASS_OF_MODEL_TYPE = {"bert": "BertTokenizer", "distilbert": "BertTokenizer", "mpnet": "MPNetTokenizer",
                       "roberta": "RobertaTokenizer", "xlm-roberta": "XLMRobertaTokenizer"}
# tokenizer_config.json settings and the types they must have (the others are read by nothing that changes ids)
SETTING_TYPES = {"do_lower_case": (bool,), "tokenize_chinese_chars": (bool,), "strip_accents": (bool, type(None)),
                 "add_prefix_space": (bool,), "trim_offsets": (bool,), "split_special_tokens": (bool,),
                 "tokenizer_class": (str, type(None)), "padding_side": (str,), "truncation_side": (str,),
                 "model_max_length": (int, float, type(None)), "max_len": (int, float, type(None))}


@dataclass
class TokenizerSpec:
    """What the files say beyond the pipeline itself."""

    pad_token: str | None
    special_tokens: list[str]  # every named and extra special token (transformers' all_special_tokens)
    model_max_length: int | float | None  # tokenizer_config.json's (or max_len), None when it names none
    truncation_side: str  # "right" or "left"
    mask_token: str | None  # what the masked-language-model objective puts in a token's place
    padding_side: str = "right"  # where transformers pads; minibert pads on the right (tokenizer.check_padding_side)
    padding_source: str = ""  # the file that says so
    token_types: bool = True  # whether the model is given token_type_ids (model_input_names), else it reads zeros
    clean_up_spaces: bool = False  # decoded text loses the space before punctuation (not for BPE), as transformers

def checked_settings(raw: dict, path: Path | str) -> dict:
    for key, types in SETTING_TYPES.items():
        if key not in raw:
            continue
        is_bool = isinstance(raw[key], bool)
        if not isinstance(raw[key], types) or (is_bool and bool not in types):
            raise ValueError(f"{path}: {key} must be {' or '.join(t.__name__ for t in types)}, got {raw[key]!r}")
    for key in ("padding_side", "truncation_side"):
        if raw.get(key, "right") not in ("right", "left"):
            raise ValueError(f"{path}: {key} must be 'right' or 'left', got {raw[key]!r}")
    return raw


def canonical_class(name: str) -> str | None:
    """The class of ``CLASSES`` that minibert builds for a tokenizer class name (BertTokenizerFast is
    BertTokenizer), or None."""
    name = ALIASES.get(name, name)
    name = name if name in CLASSES else name.removesuffix("Fast")
    name = ALIASES.get(name, name)
    return name if name in CLASSES else None


def check_processor_class(folder: Path, built: str) -> None:
    """sentence-transformers loads a folder's tokenizer through AutoProcessor, which builds the class a
    ``processor_class`` names (in processor_config.json, preprocessor_config.json, tokenizer_config.json or
    config.json, the first that has one) over ``tokenizer_class``: refused where that is another than the
    class ``built`` from tokenizer_class, which transformers' AutoTokenizer builds."""
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json", "config.json"):
        config = optional_json(folder / name)
        value = config.get("processor_class") if isinstance(config, dict) else None
        if value is None:
            continue
        if not isinstance(value, str) or canonical_class(value) != built:
            raise ValueError(f"{folder / name}: processor_class {value!r}: sentence-transformers builds the tokenizer "
                             f"as that class, where tokenizer_class and transformers' AutoTokenizer build a {built}")
        return


def tokenizer_class(folder: Path, settings: dict, model_type: str | None, overrides: dict | None = None,
                    overrides_source: Path | str = "the module config") -> tuple[str, bool]:
    """tokenizer_config.json's tokenizer_class, else config.json's (over which a module config's processor_kwargs
    sets one, where config.json has the key: transformers passes them to its config too), else the one of the
    model_type; and whether transformers' class of that name gives the model token_type_ids when
    model_input_names is not set (only BertTokenizer does, which the bert and distilbert model types get:
    DistilBertTokenizer, MPNet's, RoBERTa's, XLM-R's and the verbatim class list input_ids and attention_mask only)."""
    name = settings.get("tokenizer_class")
    source = f"{folder / 'tokenizer_config.json'}: tokenizer_class"
    if name is None:
        config = optional_json(folder / "config.json")
        config = config if isinstance(config, dict) else {}
        name, source = config.get("tokenizer_class"), f"{folder / 'config.json'}: tokenizer_class"
        if "tokenizer_class" in config and "tokenizer_class" in (overrides or {}):
            name, source = overrides["tokenizer_class"], f"{overrides_source}: processor_kwargs tokenizer_class"
    if name is None:
        if model_type not in CLASS_OF_MODEL_TYPE:
            raise ValueError(f"{folder}: neither tokenizer_config.json nor config.json names a tokenizer class, and "
                             f"model_type {model_type!r} implies none")
        return CLASS_OF_MODEL_TYPE[model_type], CLASS_OF_MODEL_TYPE[model_type] == "BertTokenizer"
    if not isinstance(name, str):
        raise ValueError(f"{source} must be a class name, got {name!r}")
    built = canonical_class(name)
    if built is None:
        raise ValueError(f"{source} {name!r} is not a tokenizer minibert builds (it builds {', '.join(CLASSES)})")
    return built, name.removesuffix("Fast") == "BertTokenizer"


def build(folder: Path, model_type: str | None, overrides: dict | None = None,
          overrides_source: Path | str = "the module config") -> tuple[Backend, TokenizerSpec]:
    """The backend tokenizer and its spec. ``overrides``: settings that win over tokenizer_config.json's (a
    sentence-transformers folder's ``tokenizer_args``, read from ``overrides_source``)."""
    config_path = folder / "tokenizer_config.json"
    raw = checked_settings(json_object(config_path), config_path)
    overrides = checked_settings(dict(overrides or {}), overrides_source)
    settings = {**raw, **overrides}
    name, token_types = tokenizer_class(folder, raw, model_type, overrides, overrides_source)  # as transformers
    check_processor_class(folder, name)
    model, defaults = CLASSES[name]
    json_path = folder / "tokenizer.json"
    tokenizer_json = json_object(json_path)
    padding_from = overrides_source if "padding_side" in overrides else config_path
    for key, side in (("padding", "padding_side"), ("truncation", "truncation_side")):
        saved = tokenizer_json.get(key)  # what tokenizer.json was saved with: the side, unless the config says
        direction = str(saved.get("direction")).lower() if isinstance(saved, dict) else None
        if side not in settings and direction in ("left", "right"):
            settings[side] = direction
            padding_from = json_path if key == "padding" else padding_from
    padding = tokenizer_json.get("padding")
    if model is None and isinstance(padding, dict) and isinstance(padding.get("pad_token"), str):
        defaults = {"pad_token": padding["pad_token"]}  # the verbatim class's only default: the file's padding
    names = settings.get("model_input_names", ["input_ids", "attention_mask"] + ["token_type_ids"] * token_types)
    if not isinstance(names, list) or not {"input_ids", "attention_mask"} <= set(names):
        raise ValueError(f"{config_path}: model_input_names {names!r}: minibert gives the model input_ids and an "
                         "attention_mask")
    named, extra, added = read_special_tokens(folder, raw, overrides, defaults, tokenizer_json)
    text = {k: str(v) if v is not None else None for k, v in named.items()}
    if model == "WordPiece" and text["unk_token"] is None:
        raise ValueError(f"{config_path}: unk_token is null: transformers' WordPiece then fails on every word "
                         "outside its vocabulary")
    source = json_path if tokenizer_json else folder
    try:
        if model is None:
            if not tokenizer_json:
                raise FileNotFoundError(f"{config_path}: tokenizer_class {name} runs tokenizer.json, which {folder} "
                                        "lacks")
            backend = Backend.from_file(str(json_path))
        else:
            backend = pipeline(name, model, settings, text, vocabulary(folder, model, tokenizer_json))
        add_tokens(backend, name, named, extra, added)
    except (ValueError, OSError):
        raise
    except Exception as e:  # the Rust side raises plain Exceptions (a vocabulary it cannot take, ...)
        raise ValueError(f"{source}: cannot be built into a {name} ({e})") from e
    if model is not None:
        backend.post_processor = template(name, model, settings, text, backend)
    elif backend.post_processor is None:  # transformers' plain template
        backend.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1")
    if settings.get("split_special_tokens"):
        backend.encode_special_tokens = True
    specials = [t for t in [*text.values(), *map(str, extra)] if t is not None]
    clean_up = settings.get("clean_up_tokenization_spaces") is True and (type(backend.model).__name__ != "BPE" or (
        settings.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output") is True))
    return backend, TokenizerSpec(text["pad_token"], list(dict.fromkeys(specials)),
                                  settings.get("model_max_length", settings.get("max_len")),
                                  settings.get("truncation_side", "right"), text["mask_token"],
                                  settings.get("padding_side", "right"), str(padding_from),
                                  "token_type_ids" in names, clean_up)


def pipeline(name: str, model: str, settings: dict, text: dict, files: tuple) -> Backend:
    """The class's model, normaliser, pre-tokenizer and decoder, built as its __init__ builds them."""
    vocab, merges, charsmap = files
    if model == "WordPiece":  # BERT and MPNet
        backend = Backend(models.WordPiece(vocab, unk_token=text["unk_token"]))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
            strip_accents=settings.get("strip_accents"), lowercase=settings.get("do_lower_case", True))
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
    elif model == "BPE":  # RoBERTa: byte-level, no normaliser, no unknown token
        backend = Backend(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                     end_of_word_suffix="", fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=settings.get("add_prefix_space", False))
        backend.decoder = decoders.ByteLevel()
    else:  # XLM-R: SentencePiece's pieces; the unknown piece is always id 3 (fairseq's order)
        backend = Backend(models.Unigram(vocab, unk_id=3, byte_fallback=False))
        if charsmap is not None:
            backend.normalizer = normalizers.Precompiled(charsmap)
        scheme = "always" if settings.get("add_prefix_space", True) else "never"
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(
            replacement="\u2581", prepend_scheme=scheme)])
        backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    return backend


def template(name: str, model: str, settings: dict, text: dict, backend: Backend):
    """The class's post-processor: [CLS] A [SEP] (pairs: [CLS] A [SEP] B [SEP]) for BERT, <s> A </s> (pairs:
    <s> A </s></s> B </s>) for the others."""
    def token_id(key: str, fallback: int) -> int:
        found = backend.token_to_id(text[key]) if text[key] is not None else None
        return fallback if found is None else found

    if name == "BertTokenizer":
        cls, sep = text["cls_token"], text["sep_token"]
        return processors.TemplateProcessing(single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
                                             special_tokens=[(cls, token_id("cls_token", 2)),
                                                             (sep, token_id("sep_token", 3))])
    if name == "XLMRobertaTokenizer":  # from the bos and eos tokens, not cls and sep
        bos, eos = text["bos_token"], text["eos_token"]
        return processors.TemplateProcessing(single=[bos, "$A", eos], pair=[bos, "$A", eos, eos, "$B", eos],
                                             special_tokens=[(bos, token_id("bos_token", 0)),
                                                             (eos, token_id("eos_token", 2))])
    if name == "MPNetTokenizer":
        return processors.RobertaProcessing((text["sep_token"], token_id("sep_token", 2)),
                                            (text["cls_token"], token_id("cls_token", 0)), True, False)
    return processors.RobertaProcessing((text["sep_token"], token_id("sep_token", 2)),
                                        (text["cls_token"], token_id("cls_token", 0)),
                                        settings.get("trim_offsets", True), settings.get("add_prefix_space", False))


def pad_on_the_right(folder: Path) -> None:
    """The tokenizer files in ``folder`` that say to pad on the left made to say what minibert does, pad on the
    right (the same embeddings where a model loads with it): a transformers head that reads the first column (a
    cross-encoder's) would read a pad token of a left-padded pair."""
    config, data = folder / "tokenizer_config.json", folder / "tokenizer.json"
    settings = json_object(config) if config.is_file() else {}
    if settings.get("padding_side") == "left":
        config.write_text(json.dumps(settings | {"padding_side": "right"}, indent=2), encoding="utf-8")
    saved = json_object(data) if data.is_file() else {}
    padding = saved.get("padding")
    if isinstance(padding, dict) and str(padding.get("direction")).lower() == "left":
        data.write_text(json.dumps(saved | {"padding": padding | {"direction": "Right"}}, ensure_ascii=False),
                        encoding="utf-8")


def write_config(backend: Backend, folder: Path, pad_token: str, max_length: int, token_types: bool = True) -> None:
    """A tokenizer built in code, saved so that transformers and minibert read it back as it is: tokenizer.json
    and a tokenizer_config.json naming the verbatim class (and the inputs it gives the model)."""
    data = json.loads(backend.to_str())
    data["truncation"] = data["padding"] = None
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad_token, "model_max_length": max_length,
              "model_input_names": ["input_ids", "attention_mask"] + ["token_type_ids"] * token_types}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

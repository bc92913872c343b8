"""A sentence-transformers folder is a pipeline: ``modules.json`` lists its modules in order.

    Transformer (the encoder's folder) -> Pooling (1_Pooling/) -> Dense (2_Dense/, ...)* -> Normalize?

minibert reads that list and rebuilds the same pipeline: ``Dense`` (``dense.py``) is a linear layer with an
activation (sentence-transformers' projection, e.g. to 768 or 256 dims), ``Normalize`` an L2 normalisation. The
Transformer module's own settings live in ``sentence_bert_config.json`` (``TransformerSettings``). Every key
sentence-transformers reads there is honoured or refused by name; a module type minibert does not implement
is an error naming it and the file. docs/parity.md lists every file and key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from minibert.config import declared_dtype
from minibert.files import json_object, optional_json, read_json
from minibert.special_tokens import SPECIAL_KEYS
from minibert.tokenizer_files import SETTING_TYPES

MODULE_TYPES = ("Transformer", "Pooling", "Dense", "Normalize")
# The Transformer module's config: the current name first, then the older per-family names it still reads.
MODULE_CONFIG_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                       "sentence_camembert_config.json", "sentence_albert_config.json",
                       "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
# what a module config's processor_kwargs (tokenizer_args) may hold: the settings minibert reads, and those that
# change no token id (decoding, where the files come from, what transformers 5 does not read for these tokenizers,
# what sentence-transformers' call of the tokenizer sets anew: max_length, padding, truncation);
# transformers would apply any other (add_eos_token rebuilds the template, tokenizer_type picks the class, ...)
TOKENIZER_OVERRIDES = {*SETTING_TYPES, *SPECIAL_KEYS, "model_input_names", "additional_special_tokens",
                       "extra_special_tokens", "clean_up_tokenization_spaces", "errors", "use_fast", "cache_dir",
                       "revision", "token", "local_files_only", "force_download", "proxies", "subfolder",
                       "never_split", "do_basic_tokenize", "from_slow", "legacy", "max_length", "padding",
                       "truncation"}
# sentence-transformers 6 renamed these keys of the module config; either name is read
RENAMED = {"model_args": "model_kwargs", "tokenizer_args": "processor_kwargs", "config_args": "config_kwargs"}
# Keys that do not change the embeddings of encode(): the device backend, flash-attention unpadding (the same
# function), where the files are cached
NO_EFFECT = ("backend", "cache_dir", "unpad_inputs")
TASKS = ("query", "document")  # encode(task=...), encode_query and encode_document: each may have a token limit


@dataclass
class TransformerSettings:
    """What the Transformer module's config says (all empty for a plain Hugging Face folder)."""

    path: Path | None = None
    max_seq_length: int | None = None  # the token limit (before sentence-transformers 6 wrote it here)
    do_lower_case: bool = False  # lowercase the text first (a Lowercase put before the tokenizer's normaliser)
    tokenizer: dict = field(default_factory=dict)  # over tokenizer_config.json's settings
    config: dict = field(default_factory=dict)  # over config.json's settings
    dtype: torch.dtype | None = None  # model_kwargs' dtype, over config.json's
    task_lengths: dict[str, int] = field(default_factory=dict)  # query_length, document_length: "query" -> limit


def read_transformer_settings(folder: Path) -> TransformerSettings:
    """The first of MODULE_CONFIG_FILES that holds settings, every key checked."""
    for name in MODULE_CONFIG_FILES:
        raw = optional_json(folder / name)
        if raw:
            break
    else:
        return TransformerSettings()
    path = folder / name
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, got {type(raw).__name__}")
    raw = {k: v for k, v in raw.items() if k not in NO_EFFECT}
    for old, new in RENAMED.items():  # when a file holds both names, the old one wins, as in sentence-transformers
        if old in raw:
            raw[new] = raw.pop(old)
    lower = raw.pop("do_lower_case", False)
    settings = TransformerSettings(path, raw.pop("max_seq_length", None), bool(lower))
    limit = settings.max_seq_length
    if limit is not None and not (type(limit) is int and limit >= 2):
        raise ValueError(f"{path}: max_seq_length must be an integer >= 2, got {settings.max_seq_length!r}")
    if not isinstance(lower, (bool, type(None))):
        raise ValueError(f"{path}: do_lower_case must be true or false, got {lower!r}")
    for task in TASKS:  # the token limit of encode_query's and encode_document's texts, in place of the model's
        length = raw.pop(f"{task}_length", None)
        if length is not None and not (type(length) is int and length >= 2):
            raise ValueError(f"{path}: {task}_length must be an integer >= 2 or null, got {length!r}")
        if length is not None:
            settings.task_lengths[task] = length
    for key in ("model_kwargs", "processor_kwargs", "config_kwargs"):
        value = raw.pop(key, None) or {}
        if not isinstance(value, dict):
            raise ValueError(f"{path}: {key} must be a JSON object, got {value!r}")
        value = {k: v for k, v in value.items() if k != "trust_remote_code"}
        unread = sorted(set(value) - TOKENIZER_OVERRIDES) if key == "processor_kwargs" else []
        if unread:
            raise ValueError(f"{path}: processor_kwargs {unread[0]!r} is not a tokenizer setting minibert runs "
                             "(transformers would apply it); see docs/parity.md")
        if key == "model_kwargs":
            unknown = [k for k in value if k not in ("dtype", "torch_dtype", "attn_implementation")]
            if unknown:
                raise ValueError(f"{path}: model_kwargs {unknown[0]!r} is not a setting minibert runs (it reads "
                                 "dtype, torch_dtype and attn_implementation)")
            auto = {k: v for k, v in value.items() if v != "auto"}  # "auto": the dtype config.json names
            settings.dtype = declared_dtype(auto, f"{path}: model_kwargs")
        else:
            setattr(settings, "tokenizer" if key == "processor_kwargs" else "config", value)
    check_text_only(raw, path)
    if raw:
        raise ValueError(f"{path}: {sorted(raw)[0]!r} is not a setting of sentence-transformers' Transformer module "
                         "that minibert runs (see docs/parity.md)")
    return settings


def check_text_only(raw: dict, path: Path) -> None:
    """Pop the keys that say what the module runs; anything but text through the model's forward is refused."""
    task = raw.pop("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise ValueError(f"{path}: transformer_task {task!r}: minibert runs 'feature-extraction' only")
    output = raw.pop("module_output_name", "token_embeddings")
    if output != "token_embeddings":
        raise ValueError(f"{path}: module_output_name {output!r}: minibert's pooling reads 'token_embeddings'")
    modalities = raw.pop("modality_config", None)
    text = {"method": "forward", "method_output_name": "last_hidden_state"}
    text_only = isinstance(modalities, dict) and set(modalities) == {"text"} and isinstance(modalities["text"], dict)
    if modalities is not None and not (text_only and {k: v for k, v in modalities["text"].items()
                                                      if k != "format"} == text):
        raise ValueError(f"{path}: modality_config {modalities!r}: minibert runs plain text through the model's "
                         f"forward only ({{'text': {text}}}; no chat template)")
    kwargs = raw.pop("processing_kwargs", None)
    if kwargs:
        raise ValueError(f"{path}: processing_kwargs {kwargs!r}: minibert does not change the tokenizer's call")
    for key in ("query_expansion", "tokenizer_name_or_path"):
        if raw.pop(key, None) is not None:
            raise ValueError(f"{path}: {key} is not supported by minibert")


@dataclass
class Pipeline:
    """What modules.json lists: the encoder's folder and its settings, the pooling folder (None for a plain
    Hugging Face folder: ``plain_folder_pooling``), the Dense modules' folders in order, and whether a Normalize comes
    last. ``sentence_transformers``: whether the folder has a modules.json at all (its other files are only
    read when it does, as sentence-transformers reads them)."""

    transformer: Path
    pooling: Path | None = None
    dense: list[Path] = field(default_factory=list)
    normalize: bool = False
    settings: TransformerSettings = field(default_factory=TransformerSettings)
    sentence_transformers: bool = False


def read_pipeline(folder: Path) -> Pipeline:
    path = folder / "modules.json"
    if not path.is_file():  # a plain Hugging Face folder
        return Pipeline(folder)
    modules = read_json(path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{path}: expected a list of modules ({{\"idx\", \"path\", \"type\"}}), got {modules!r:.80}")
    by_name = {}
    for i, module in enumerate(modules):
        where, name, kind = module.get("path", ""), module.get("name"), module.get("type")
        if not (isinstance(kind, str) and isinstance(where, str)):
            raise ValueError(f"{path}: module {i} needs a string type and path, got {module!r}")
        if Path(where).is_absolute() or ".." in Path(where).parts:
            raise ValueError(f"{path}: module {i}'s path {where!r} must lie inside the model folder")
        if not (isinstance(name, str) and name and "." not in name):  # (a torch module's name)
            raise ValueError(f"{path}: module {i} needs a name (a string without dots), got {name!r}")
        # (a class of a package of the folder's own runs the folder's own code)
        if kind.rsplit(".", 1)[-1] not in MODULE_TYPES or not kind.startswith("sentence_transformers."):
            raise ValueError(f"{path}: module {kind!r} (path {where!r}) is not supported by minibert (supported: "
                             f"sentence-transformers' {', '.join(MODULE_TYPES)})")
        by_name[name] = module
    # sentence-transformers loads every module listed, then keeps them by name, in the order listed (it does not
    # read "idx"): a module whose name comes again runs in the first one's place, the first one not at all
    kinds = [(m["type"].rsplit(".", 1)[-1], folder / m.get("path", ""), m) for m in by_name.values()]
    order = [kind for kind, _, _ in kinds]
    # The one order minibert runs: Transformer, Pooling, any Dense, [Normalize] (without a Pooling there is no
    # sentence embedding, and sentence-transformers fails)
    expected = ["Transformer", "Pooling"] + ["Dense"] * order.count("Dense") + ["Normalize"] * ("Normalize" in order)
    if order != expected:
        raise ValueError(f"{path}: modules in the order {order}; minibert runs Transformer, Pooling, Dense..., "
                         "Normalize, each once but Dense (any number) and Normalize (at most once)")
    by_kind = {kind: p for kind, p, _ in kinds}
    if "Normalize" in by_kind:  # its optional config.json names what it reads and writes
        normalize_config = json_object(by_kind["Normalize"] / "config.json")
        for key in ("module_input_name", "module_output_name"):
            if normalize_config.get(key, "sentence_embedding") != "sentence_embedding":
                raise ValueError(f"{by_kind['Normalize'] / 'config.json'}: {key}={normalize_config[key]!r}: minibert "
                                 "normalises sentence embeddings only")
    transformer = by_kind["Transformer"]
    return Pipeline(transformer, by_kind.get("Pooling"), [p for kind, p, _ in kinds if kind == "Dense"],
                    "Normalize" in order, read_transformer_settings(transformer), sentence_transformers=True)


def plain_folder_pooling(folder: Path) -> str:
    """The pooling sentence-transformers puts after a plain Hugging Face folder (no modules.json): the last
    token's state where config.json says the model was made for causal language modelling (its first
    ``architectures`` entry ends in ``ForCausalLM``, and ``is_causal`` is not set false), else the mean.
    Such a folder's tokenizer must have no chat template: sentence-transformers would render every text
    through it (its "message" input), which minibert does not do."""
    template = chat_template(folder)
    if template:
        raise ValueError(f"{template}: a chat template, which sentence-transformers renders every text of a folder "
                         "without modules.json through; minibert does not render chat templates")
    config = optional_json(folder / "config.json")
    config = config if isinstance(config, dict) else {}
    architectures = config.get("architectures")
    causal = isinstance(architectures, list) and architectures and isinstance(architectures[0], str) \
        and architectures[0].endswith("ForCausalLM") and bool(config.get("is_causal", True))
    return "lasttoken" if causal else "mean"


def chat_template(folder: Path) -> str | None:
    """Where the tokenizer of ``folder`` has a chat template, as transformers 5 reads one (tokenizer_config.json's
    ``chat_template``, chat_template.jinja, additional_chat_templates/*.jinja), else None."""
    config = optional_json(folder / "tokenizer_config.json")
    if isinstance(config, dict) and config.get("chat_template") is not None:
        return f"{folder / 'tokenizer_config.json'}: chat_template"
    files = [folder / "chat_template.jinja", *sorted((folder / "additional_chat_templates").glob("*.jinja"))]
    return next((str(file) for file in files if file.is_file()), None)

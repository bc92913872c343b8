"""BertConfig: the handful of numbers that fully describe a BERT encoder.

Read from a Hugging Face ``config.json``. Anything we do not implement is an error here, at load
time, rather than a silent numerical difference later. A family (``minibert/families/``) subclasses it
with the ``model_type`` values it reads, the settings it adds, and its own names in ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

import torch

from minibert.activations import check_activation
from minibert.files import read_json
from minibert.typecheck import check_types

FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def declared_dtype(raw: dict, source: str = "config") -> torch.dtype | None:
    """config.json's ``dtype`` (or the older ``torch_dtype``; ``dtype`` wins when both are there): the dtype
    transformers loads a model in, whatever its weights are stored in. None when it names none."""
    key = "dtype" if raw.get("dtype") is not None else "torch_dtype"
    value = raw.get(key)
    if value is None:
        return None
    name = value.removeprefix("torch.") if isinstance(value, str) else value
    if name not in FLOAT_DTYPES:
        raise ValueError(f"{source}: {key}={value!r} is not a dtype minibert runs (one of {list(FLOAT_DTYPES)})")
    return FLOAT_DTYPES[name]


def laid_over(raw: dict, overrides: dict, unset: tuple[str, ...] = ()) -> dict:
    """config.json's settings with a module config's ``config_kwargs`` over them. transformers sets those once
    config.json is read, and a ``torch_dtype`` or ``dtype`` there is the model's dtype (a null one: none named),
    whichever of the two config.json holds. It sets only settings its config object has: those of ``unset`` (the
    family's ``unset_by_default``) count only where config.json holds them, and are dropped otherwise."""
    out = dict(raw)
    for key, value in overrides.items():
        if key in unset and key not in raw:
            continue
        if key in ("dtype", "torch_dtype"):
            out.pop("torch_dtype", None)
            out["dtype"] = value
        else:
            out[key] = value
    return out


def check_hf_types(raw: dict, declared: dict[str, str], source: str = "config") -> None:
    """Each key of ``raw`` that ``declared`` lists holds that type, checked as strictly as transformers checks
    its config classes: "int" is an int but not a bool, "float" a float but not an int, "list[int]" a list of
    ints; else a ValueError that names the key."""
    def holds(value, kind: str) -> bool:
        if kind == "None":
            return value is None
        if kind == "list[int]":
            return isinstance(value, list) and all(type(v) is int for v in value)
        return type(value) is {"int": int, "float": float, "bool": bool, "str": str}[kind]

    for key, kinds in declared.items():
        if key in raw and not any(holds(raw[key], kind) for kind in kinds.split(" | ")):
            raise ValueError(f"{source}: {key} must be {kinds} (as transformers declares it), got {raw[key]!r}")


@dataclass
class BertConfig:
    model_types: ClassVar[tuple[str, ...]] = ("bert",)  # the config.json model_type values this class reads
    architecture: ClassVar[str] = "BertModel"  # what config.json's "architectures" says when we write one
    min_token_types: ClassVar[int] = 1  # DistilBERT and MPNet have no token type embeddings (0)
    attention_out_dropout: ClassVar[bool] = True  # dropout on the attention's output projection (not DistilBERT)
    reads_is_causal: ClassVar[bool] = True  # where config.json sets is_causal, transformers 5's SDPA attention
    # masks causally in batches without padding (every family's model but MPNet's, which ignores the key)
    reads_decoder_keys: ClassVar[bool] = True  # is_decoder, add_cross_attention: BERT and RoBERTa read them
    # settings minibert reads that transformers' config object lacks unless config.json sets them (a module config's
    # config_kwargs entry for one of them is dropped then: transformers sets only the attributes its config has)
    unset_by_default: ClassVar[tuple[str, ...]] = ("is_causal", "quantization_config", "position_embedding_type")
    # config.json's keys as transformers' config class of the family declares them: it refuses any other type
    # (an int where it declares a float, a bool or a float where an int), whether minibert reads the key or not
    hf_types: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                         "max_position_embeddings", "type_vocab_size"), "int"),
        "hidden_act": "str", "hidden_dropout_prob": "float | int", "attention_probs_dropout_prob": "float | int",
        "initializer_range": "float", "layer_norm_eps": "float", "pad_token_id": "int | None", "use_cache": "bool",
        "classifier_dropout": "float | int | None", "is_decoder": "bool", "add_cross_attention": "bool",
        "bos_token_id": "int | None", "eos_token_id": "int | list[int] | None", "tie_word_embeddings": "bool"}

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # "gelu" is the exact erf GELU, "gelu_new" the tanh approximation
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int | None = 0  # the word embeddings' padding row (no gradient); null: none, negative: from the end
    model_type: str = "bert"

    def __post_init__(self) -> None:
        check_types(self, "BertConfig.")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.type_vocab_size < self.min_token_types:
            raise ValueError(f"BertConfig.type_vocab_size must be at least {self.min_token_types}, "
                             f"got {self.type_vocab_size!r}")
        if self.model_type not in self.model_types:
            raise ValueError(f"model_type={self.model_type!r} is not supported by {type(self).__name__} "
                             f"(supported: {list(self.model_types)})")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        check_activation(self.hidden_act)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not self.layer_norm_eps >= 0:
            raise ValueError(f"BertConfig.layer_norm_eps must be >= 0, got {self.layer_norm_eps!r}")
        if self.pad_token_id is not None and not -self.vocab_size <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig.pad_token_id must be a token id (0..{self.vocab_size - 1}; negative ones "
                             f"count from the end, as transformers' nn.Embedding takes them) or null, "
                             f"got {self.pad_token_id}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def init_std(self, drawn: str = "random weights", source: str = "BertConfig") -> float:
        """``initializer_range``, to draw random weights (``drawn`` says which) from. Like transformers, minibert
        reads it only then, so a checkpoint whose config.json holds a negative one loads; drawing from it is refused."""
        if not self.initializer_range >= 0:
            raise ValueError(f"{source}: initializer_range must be >= 0 to draw {drawn}, "
                             f"got {self.initializer_range!r}")
        return self.initializer_range

    @classmethod
    def from_folder(cls, folder: Path, overrides: dict | None = None) -> tuple[BertConfig, dict]:
        """A model folder's config.json with a module config's ``config_kwargs`` (``overrides``) laid over it, and
        the settings it was read from. Each source is type-checked on its own, as transformers checks them."""
        raw = read_json(folder / "config.json", "config file")
        if isinstance(raw, dict) and overrides:
            check_hf_types(raw, cls.hf_types, str(folder / "config.json"))
            check_hf_types(overrides, cls.hf_types, f"{folder}: its module config's config_kwargs")
            raw = laid_over(raw, overrides, cls.unset_by_default)
        return cls.from_dict(raw, source=str(folder / "config.json")), raw

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        """Read a Hugging Face ``config.json``; unknown keys are ignored, unsupported values are errors."""
        return cls.from_dict(read_json(path, "config file"), source=str(path))

    @classmethod
    def from_hf(cls, raw: dict) -> dict:
        """config.json's settings under this class's field names (a family renames some)."""
        return raw

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> BertConfig:
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a JSON object of settings, got {type(raw).__name__}")
        check_hf_types(raw, cls.hf_types, source)
        raw = {"model_type": cls.model_types[0], **cls.from_hf(raw)}
        # These keys change the maths; we only implement the plain values.
        unsupported = {"model_type": cls.model_types, "position_embedding_type": ("absolute", None)}
        if cls.reads_decoder_keys:
            unsupported.update(is_decoder=(False, None), add_cross_attention=(False, None))
        if cls.reads_is_causal:
            unsupported["is_causal"] = (False, None)
        for key, allowed in unsupported.items():
            if raw.get(key) not in allowed:
                raise ValueError(f"{source}: {key}={raw[key]!r} is not supported by minibert "
                                 f"(supported: {[a for a in allowed if a is not None]})")
        for key, what in (("quantization_config", "quantizes the weights as it loads them"),
                          ("per_layer_config", "gives layers settings of their own, or fails")):
            if raw.get(key):  # (an empty one changes nothing)
                raise ValueError(f"{source}: {key} is not supported by minibert (with it, transformers {what})")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in known}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from e

    def to_dict(self) -> dict:
        """The Hugging Face form, so that transformers can read what we write (a whole number it declares a float
        written as one: 1.0, not 1)."""
        out = {"architectures": [self.architecture], "position_embedding_type": "absolute", **asdict(self)}
        return {k: float(v) if self.hf_types.get(k) == "float" and type(v) is int else v for k, v in out.items()}

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

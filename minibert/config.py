"""BertConfig: the handful of numbers that fully describe a BERT encoder.

Read from a Hugging Face ``config.json``. Anything we do not implement is an error here, at load
time, rather than a silent numerical difference later.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from minibert.files import read_json
from minibert.typecheck import check_types

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@dataclass
class BertConfig:
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
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        check_types(self, "BertConfig.")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; use one of {ACTIVATIONS}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.layer_norm_eps > 0 or not self.initializer_range >= 0:
            raise ValueError(f"BertConfig.layer_norm_eps must be > 0 and initializer_range >= 0, got "
                             f"{self.layer_norm_eps!r} and {self.initializer_range!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig.pad_token_id must be a token id (0..{self.vocab_size - 1}), "
                             f"got {self.pad_token_id}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        """Read a Hugging Face ``config.json``; unknown keys are ignored, unsupported values are errors."""
        return cls.from_dict(read_json(path, "config file"), source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> BertConfig:
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a JSON object of settings, got {type(raw).__name__}")
        # These keys change the maths; we only implement the plain BERT values.
        unsupported = {
            "model_type": ("bert", None),
            "position_embedding_type": ("absolute", None),
            "is_decoder": (False, None),
            "add_cross_attention": (False, None),
        }
        for key, allowed in unsupported.items():
            if raw.get(key) not in allowed:
                raise ValueError(f"{source}: {key}={raw[key]!r} is not supported by minibert "
                                 f"(supported: {[a for a in allowed if a is not None]})")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in known}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from e

    def to_dict(self) -> dict:
        """The Hugging Face form, so that transformers can read what we write."""
        return {"architectures": ["BertModel"], "model_type": "bert",
                "position_embedding_type": "absolute", **asdict(self)}

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

"""``config_sentence_transformers.json``: how a sentence-transformers folder asks to be encoded and compared.

- ``prompts`` and ``default_prompt_name``: texts put in front of every sentence ("query: "), by name. As in
  sentence-transformers, the names "query" and "document" always exist (empty unless the folder sets them).
- ``similarity_fn_name``: the score its embeddings are meant for (cosine, dot, euclidean, manhattan); what
  ``SentenceEncoder.similarity`` and ``minibert search`` use by default.
- ``truncate_dim``: keep only the first dimensions (a Matryoshka model saved truncated).

sentence-transformers reads this file only for a folder with a modules.json.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from minibert.files import optional_json
from minibert.similarity import SIMILARITIES


@dataclass
class EncodeSettings:
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"
    truncate_dim: int | None = None

    def __post_init__(self) -> None:
        self.prompts = {"query": "", "document": "", **self.prompts}  # sentence-transformers' two names
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {self.default_prompt_name!r} is not one of the prompts "
                             f"{sorted(self.prompts)}")
        if self.similarity_fn_name not in SIMILARITIES:
            raise ValueError(f"similarity_fn_name must be one of {list(SIMILARITIES)}, got {self.similarity_fn_name!r}")
        if self.truncate_dim is not None and not (type(self.truncate_dim) is int and self.truncate_dim >= 1):
            raise ValueError(f"truncate_dim must be a positive integer or null, got {self.truncate_dim!r}")

    @classmethod
    def from_folder(cls, folder: Path) -> EncodeSettings:
        path = folder / "config_sentence_transformers.json"
        raw = optional_json(path)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object of settings, got {type(raw).__name__}")
        if raw.get("model_type", "SentenceTransformer") != "SentenceTransformer":
            raise ValueError(f"{path}: model_type {raw['model_type']!r}: minibert loads SentenceTransformer folders "
                             "(sentence embeddings), not this kind")
        prompts = raw.get("prompts", {})
        if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, (str, type(None)))
                                                    for k, v in prompts.items()):
            raise ValueError(f"{path}: prompts must map names to texts, got {prompts!r}")
        if not isinstance(raw.get("default_prompt_name"), (str, type(None))):
            raise ValueError(f"{path}: default_prompt_name must be a prompt's name, got {raw['default_prompt_name']!r}")
        similarity = raw.get("similarity_fn_name")
        if similarity is not None and (not isinstance(similarity, str) or similarity not in SIMILARITIES):
            warnings.warn(f"{path}: similarity_fn_name {similarity!r} is not one of {list(SIMILARITIES)}; "
                          "using cosine, as sentence-transformers does", stacklevel=2)
            similarity = None
        try:
            return cls({k: v or "" for k, v in prompts.items()}, raw.get("default_prompt_name"),
                       similarity or "cosine", raw.get("truncate_dim"))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The prompt to put before each text: ``prompt`` itself, the one named, or the default one ("")."""
        if prompt is not None:
            if prompt_name is not None:
                warnings.warn(f"both prompt and prompt_name ({prompt_name!r}) given: the prompt is used, as "
                              "sentence-transformers uses it", stacklevel=4)  # (encode's caller)
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} is not one of the model's prompts {sorted(self.prompts)}")
        return self.prompts[name]

    def save(self, folder: Path) -> None:
        """As sentence-transformers writes it (truncate_dim only when set)."""
        out = {"model_type": "SentenceTransformer", "prompts": self.prompts,
               "default_prompt_name": self.default_prompt_name, "similarity_fn_name": self.similarity_fn_name}
        if self.truncate_dim is not None:
            out["truncate_dim"] = self.truncate_dim
        (folder / "config_sentence_transformers.json").write_text(json.dumps(out, indent=2) + "\n")

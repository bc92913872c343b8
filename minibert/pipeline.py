"""A sentence-transformers folder is a pipeline: ``modules.json`` lists its modules in order.

    Transformer (the encoder's folder) -> Pooling (1_Pooling/) -> Dense (2_Dense/, ...)* -> Normalize?

minibert reads that list and rebuilds the same pipeline: ``Dense`` is a linear layer with an
activation (sentence-transformers' projection, e.g. to 768 or 256 dims), ``Normalize`` an L2
normalisation. ``config_sentence_transformers.json`` adds named prompts ("query: ") that are put in
front of the text. A module type minibert does not implement is an error naming it and the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from minibert.files import optional_json, read_json
from minibert.weights import check_tensors, save_tensors

# sentence-transformers writes the activation as the class's full name
ACTIVATIONS = {"torch.nn.modules.linear.Identity": nn.Identity, "torch.nn.modules.activation.Tanh": nn.Tanh,
               "torch.nn.modules.activation.ReLU": nn.ReLU, "torch.nn.modules.activation.GELU": nn.GELU,
               "torch.nn.modules.activation.Sigmoid": nn.Sigmoid, "torch.nn.modules.activation.SiLU": nn.SiLU}
MODULE_TYPES = ("Transformer", "Pooling", "Dense", "Normalize")


@dataclass
class Pipeline:
    """What modules.json lists: the encoder's folder, the pooling folder (None: mean pooling, as for a plain
    Hugging Face folder), the Dense modules' folders in order, and whether a Normalize comes last."""

    transformer: Path
    pooling: Path | None = None
    dense: list[Path] = field(default_factory=list)
    normalize: bool = False


def read_pipeline(folder: Path) -> Pipeline:
    path = folder / "modules.json"
    if not path.is_file():  # a plain Hugging Face folder
        return Pipeline(folder)
    modules = read_json(path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{path}: expected a list of modules ({{\"idx\", \"path\", \"type\"}}), got {modules!r:.80}")
    for i, module in enumerate(modules):
        if not (isinstance(module.get("type"), str) and isinstance(module.get("path", ""), str)
                and type(module.get("idx", 0)) is int):
            raise ValueError(f"{path}: module {i} needs a string type and path and an integer idx, got {module!r}")
    kinds = [(m["type"].rsplit(".", 1)[-1], folder / m.get("path", ""), m) for m in sorted(modules, key=lambda m:
                                                                                          m.get("idx", 0))]
    for kind, _, module in kinds:
        if kind not in MODULE_TYPES:
            raise ValueError(f"{path}: module {module['type']!r} (path {module.get('path')!r}) is not supported by "
                             f"minibert (supported: {', '.join(MODULE_TYPES)})")
    order = [kind for kind, _, _ in kinds]
    # The one order minibert runs: Transformer, [Pooling], any Dense, [Normalize]
    expected = ["Transformer"] + ["Pooling"] * ("Pooling" in order) + ["Dense"] * order.count("Dense") \
        + ["Normalize"] * ("Normalize" in order)
    if order != expected:
        raise ValueError(f"{path}: modules in the order {order}; minibert runs Transformer, Pooling, Dense..., "
                         "Normalize, each at most once but Dense")
    by_kind = {kind: p for kind, p, _ in kinds}
    return Pipeline(by_kind["Transformer"], by_kind.get("Pooling"), [p for kind, p, _ in kinds if kind == "Dense"],
                    "Normalize" in order)


class Dense(nn.Module):
    """sentence-transformers' Dense module: activation(W x + b), plus x (or a projection of x) when
    ``use_residual``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str =
                 "torch.nn.modules.activation.Tanh", use_residual: bool = False) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not supported (supported: {sorted(ACTIVATIONS)})")
        self.activation_name, self.use_residual = activation, use_residual
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = ACTIVATIONS[activation]()
        self.residual = nn.Linear(in_features, out_features, bias=False) \
            if use_residual and in_features != out_features else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (x if self.residual is None else self.residual(x))
        return out

    @classmethod
    def from_folder(cls, folder: Path) -> Dense:
        """A Dense module's folder: config.json and model.safetensors, every tensor checked."""
        config_path = folder / "config.json"
        raw = read_json(config_path, "Dense config")
        if not isinstance(raw, dict):
            raise ValueError(f"{config_path}: expected a JSON object of settings, got {type(raw).__name__}")
        for key in ("module_input_name", "module_output_name"):
            if raw.get(key, "sentence_embedding") not in ("sentence_embedding", None):
                raise ValueError(f"{config_path}: {key}={raw[key]!r}: minibert runs Dense on sentence embeddings only")
        ints = [raw.get(k) for k in ("in_features", "out_features")]
        if not all(type(v) is int and v > 0 for v in ints) or not all(isinstance(raw.get(k, d), bool) for k, d in
                                                                      (("bias", True), ("use_residual", False))):
            raise ValueError(f"{config_path}: needs positive integer in_features and out_features (and true/false "
                             f"bias, use_residual), got {raw!r}")
        try:
            activation = raw.get("activation_function", "torch.nn.modules.activation.Tanh")  # ST's default
            dense = cls(*ints, raw.get("bias", True), activation, raw.get("use_residual", False))
        except ValueError as e:
            raise ValueError(f"{config_path}: {e}") from e
        weights_path = folder / "model.safetensors"
        if not weights_path.is_file():
            raise FileNotFoundError(f"{weights_path} not found (minibert reads Dense weights from safetensors only)")
        try:
            tensors = load_file(weights_path)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{weights_path}: not a readable safetensors file ({e})") from e
        expected = {k: tuple(t.shape) for k, t in dense.state_dict().items()}
        check_tensors(tensors, expected, str(weights_path), str(config_path))
        dense.load_state_dict(tensors)
        return dense

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = {"in_features": self.linear.in_features, "out_features": self.linear.out_features,
                  "bias": self.linear.bias is not None, "activation_function": self.activation_name}
        if self.use_residual:
            config["use_residual"] = True
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_tensors(self.state_dict(), folder / "model.safetensors")


@dataclass
class Prompts:
    """config_sentence_transformers.json's named prompts and the one used when none is asked for."""

    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    @classmethod
    def from_folder(cls, folder: Path) -> Prompts:
        path = folder / "config_sentence_transformers.json"
        raw = optional_json(path)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object of settings, got {type(raw).__name__}")
        prompts, default = raw.get("prompts") or {}, raw.get("default_prompt_name")
        if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in prompts.items()):
            raise ValueError(f"{path}: prompts must map names to texts, got {prompts!r}")
        if default is not None and default not in prompts:
            raise ValueError(f"{path}: default_prompt_name {default!r} is not one of the prompts {sorted(prompts)}")
        return cls(dict(prompts), default)

    def text(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The prompt to put before each text: ``prompt`` itself, the one named, or the default one ("")."""
        if prompt is not None:
            if prompt_name is not None:
                raise ValueError("give prompt or prompt_name, not both")
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} is not one of the model's prompts {sorted(self.prompts)}")
        return self.prompts[name]

    def to_json_dict(self) -> dict:
        return {"prompts": self.prompts, "default_prompt_name": self.default_prompt_name}

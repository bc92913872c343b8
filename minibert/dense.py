"""sentence-transformers' Dense module (a folder ``2_Dense/`` and on): a linear layer and an activation, which
projects the pooled sentence embedding (to 768 or 256 dimensions, say). Read from its folder with every tensor
checked, and written back in the same form.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from minibert.files import read_json
from minibert.weights import check_tensors, save_tensors


def activation_module(name: str, where: str) -> nn.Module:
    """Dense's ``activation_function``: the import path of a torch.nn module class, built without arguments, as
    sentence-transformers builds it (e.g. ``torch.nn.modules.activation.Tanh``). A path outside torch is
    refused (sentence-transformers would silently put Tanh in its place)."""
    if not isinstance(name, str):
        raise ValueError(f"{where}: activation_function must be a class's import path, got {name!r}")
    module_name, _, class_name = name.rpartition(".")
    if not module_name.startswith("torch."):
        raise ValueError(f"{where}: activation_function {name!r} is not a torch class (sentence-transformers "
                         "would run Tanh instead of it)")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        module = cls() if isinstance(cls, type) and issubclass(cls, nn.Module) else None
    except (ImportError, AttributeError, TypeError) as e:
        raise ValueError(f"{where}: activation_function {name!r} cannot be imported and built ({e})") from e
    if module is None or any(True for _ in module.parameters()):
        raise ValueError(f"{where}: activation_function {name!r} must be a torch.nn module without parameters")
    return module


class Dense(nn.Module):
    """sentence-transformers' Dense module: activation(W x + b), plus x (or a projection of x) when
    ``use_residual``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str =
                 "torch.nn.modules.activation.Tanh", use_residual: bool = False) -> None:
        super().__init__()
        self.activation_name, self.use_residual = activation, use_residual
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = activation_module(activation, "Dense")
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

"""Loading Hugging Face BERT checkpoints from safetensors, strictly.

Like nanoGPT's ``from_pretrained``: an explicit map from every minibert parameter to its
checkpoint key, a shape check on every tensor, and a count of what was loaded. Anything missing,
unexpected or mis-shaped is an error that names the keys and the file. This module only reads and
maps tensors; ``BertModel.from_pretrained`` (model.py) builds the model and loads them into it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from minibert.config import BertConfig

# Keys in BERT checkpoints that are not part of the encoder: they are skipped and reported.
# `position_ids` is a legacy buffer (arange(512)) that older transformers versions saved.
IGNORED_SUFFIXES = ("embeddings.position_ids",)
TASK_HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "lm_head.")
MODEL_PREFIXES = ("bert.",)  # BertFor... checkpoints nest the encoder under "bert."


def bert_key_map(num_layers: int, with_pooler: bool) -> dict[str, str]:
    """minibert parameter name -> Hugging Face key (without any model prefix)."""
    names = {
        "embeddings.word.weight": "embeddings.word_embeddings.weight",
        "embeddings.position.weight": "embeddings.position_embeddings.weight",
        "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
        "embeddings.norm.weight": "embeddings.LayerNorm.weight",
        "embeddings.norm.bias": "embeddings.LayerNorm.bias",
    }
    per_layer = {
        "attention.query": "attention.self.query",
        "attention.key": "attention.self.key",
        "attention.value": "attention.self.value",
        "attention_out": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
        "ffn_norm": "output.LayerNorm",
    }
    for i in range(num_layers):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    if with_pooler:
        names["pooler.dense.weight"] = "pooler.dense.weight"
        names["pooler.dense.bias"] = "pooler.dense.bias"
    return names


def safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's files: model.safetensors, or the shards an index lists."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: not a valid safetensors index ({e!r})") from e
        shards = [folder / name for name in dict.fromkeys(weight_map.values())]
        for shard in shards:
            if not shard.is_file():
                raise FileNotFoundError(f"shard listed in {index} not found: {shard}")
        return shards
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {folder}")


def load_safetensors(path: str | Path) -> dict[str, tuple[torch.Tensor, Path]]:
    """Every tensor of a file or of a sharded folder, with the file it came from."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"not found: {path}")
    files = safetensors_files(path) if path.is_dir() else [path]
    tensors: dict[str, tuple[torch.Tensor, Path]] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    if key in tensors:
                        raise ValueError(f"tensor {key!r} appears in both {tensors[key][1]} and {file}")
                    tensors[key] = (f.get_tensor(key), file)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise ValueError(f"{file}: not a readable safetensors file (truncated or corrupt?): {e}") from e
    return tensors


@dataclass
class LoadReport:
    """What a load did, for the user to read (``BertModel.from_pretrained`` keeps it as ``model.load_report``)."""

    source: str
    loaded: int = 0
    prefix: str = ""
    skipped: list[str] = field(default_factory=list)  # task heads and legacy buffers, on purpose

    def __str__(self) -> str:
        msg = f"loaded {self.loaded} tensors from {self.source}"
        if self.prefix:
            msg += f" (prefix {self.prefix!r})"
        if self.skipped:
            msg += f"; skipped {len(self.skipped)} non-encoder tensors: {', '.join(self.skipped)}"
        return msg


def detect_prefix(keys: list[str]) -> str:
    for prefix in MODEL_PREFIXES:
        if any(k.startswith(prefix + "embeddings.") for k in keys):
            return prefix
    return ""


def split_encoder_tensors(tensors: dict[str, tuple[torch.Tensor, Path]],
                          source: str) -> tuple[dict[str, tuple[torch.Tensor, Path]], LoadReport]:
    """Strip the model prefix and set aside task heads and legacy buffers (reported, not loaded)."""
    prefix = detect_prefix(list(tensors))
    report = LoadReport(source=source, prefix=prefix)
    encoder: dict[str, tuple[torch.Tensor, Path]] = {}
    for key, value in tensors.items():
        bare = key[len(prefix):] if key.startswith(prefix) else key
        if bare.endswith(IGNORED_SUFFIXES) or key.startswith(TASK_HEAD_PREFIXES):
            report.skipped.append(key)
        else:
            encoder[bare] = value
    return encoder, report


def has_pooler(encoder_tensors: dict) -> bool:
    return "pooler.dense.weight" in encoder_tensors or "pooler.dense.bias" in encoder_tensors


def convert_state_dict(encoder: dict[str, tuple[torch.Tensor, Path]], report: LoadReport, config: BertConfig,
                       model_shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Map checkpoint keys to minibert names, strictly: every key of the map present, nothing extra, and
    every tensor the shape the model (``model_shapes``: minibert name -> shape) expects."""
    prefix, source = report.prefix, report.source
    key_map = bert_key_map(config.num_hidden_layers, has_pooler(encoder))

    missing = [prefix + k for k in key_map.values() if k not in encoder]
    unexpected = [prefix + k for k in encoder if k not in set(key_map.values())]
    if missing or unexpected:
        parts = [f"{what} {len(keys)} tensors: {', '.join(keys[:10])}" + (" ..." if len(keys) > 10 else "")
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise ValueError(f"{source}: checkpoint does not match the config ({config.num_hidden_layers} layers): "
                         + "; ".join(parts))

    state: dict[str, torch.Tensor] = {}
    for ours, theirs in key_map.items():
        tensor, file = encoder[theirs]
        if tuple(tensor.shape) != model_shapes[ours]:
            raise ValueError(f"{file}: tensor {prefix + theirs} has shape {tuple(tensor.shape)}, "
                             f"but the config implies {model_shapes[ours]}")
        state[ours] = tensor
    report.loaded = len(state)
    return state


QKV = ("query", "key", "value")


def fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """minibert names -> the fast path's: each block's query, key and value weights (and biases) stacked
    into one ``attention.qkv`` tensor, rows in that order (so one matmul gives all three)."""
    out = {}
    for name, tensor in state.items():
        prefix, _, kind = name.rpartition(".")  # blocks.3.attention.query . weight
        head, _, which = prefix.rpartition(".")
        if which not in QKV or not head.endswith(".attention"):
            out[name] = tensor
            continue
        parts = [state.get(f"{head}.{w}.{kind}") for w in QKV]
        if any(p is None for p in parts):
            raise KeyError(f"{head}: query, key and value {kind} must all be present to fuse them")
        if which == "query":
            if len({p.shape for p in parts}) != 1:
                shapes = [tuple(p.shape) for p in parts]
                raise ValueError(f"{head}: query, key and value {kind}s differ in shape: {shapes}")
            out[f"{head}.qkv.{kind}"] = torch.cat(parts, dim=0)
    return out


def split_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``fuse_qkv``; a state without fused tensors comes back as it is."""
    out = {}
    for name, tensor in state.items():
        prefix, _, kind = name.rpartition(".")
        if prefix.endswith(".attention.qkv"):
            head = prefix.removesuffix(".qkv")
            for which, part in zip(QKV, tensor.chunk(3, dim=0), strict=True):
                out[f"{head}.{which}.{kind}"] = part
        else:
            out[name] = tensor
    return out


def save_pretrained_bert(model, folder: str | Path) -> None:
    """Write a ``BertModel`` as config.json + model.safetensors with Hugging Face's key names (bare, as
    transformers' BertModel saves them). A fast model's fused QKV is split back into three tensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_json(folder / "config.json")
    key_map = bert_key_map(model.config.num_hidden_layers, model.pooler is not None)
    state = {key_map[name]: t.detach().contiguous().cpu() for name, t in split_qkv(model.state_dict()).items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

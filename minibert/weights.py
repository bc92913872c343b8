"""Loading Hugging Face BERT checkpoints from safetensors, strictly.

Like nanoGPT's ``from_pretrained``: an explicit map from every minibert parameter to its
checkpoint key, a shape check on every tensor, and a count of what was loaded. Anything missing,
unexpected or mis-shaped is an error that names the keys and the file. This module only reads and
maps tensors; ``BertModel.from_pretrained`` (model.py) builds the model and loads them into it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from minibert.config import declared_dtype

# Keys in BERT checkpoints that are not part of the encoder: they are skipped and reported.
# `position_ids` (arange(512)) and `token_type_ids` (zeros) are buffers that older transformers versions saved.
IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
# Names of TensorFlow-era checkpoints that transformers still reads, renamed as it renames them (a whole name part).
LEGACY_NAMES = {r"LayerNorm\.gamma(?!\w)": "LayerNorm.weight", r"LayerNorm\.beta(?!\w)": "LayerNorm.bias"}
TASK_HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "lm_head.",  # BERT, RoBERTa, MPNet
                      "vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "pre_classifier.")  # DistilBERT


def current_names(tensors: dict, source: str) -> dict:
    """``tensors`` (key -> anything) under today's names: ``...LayerNorm.gamma`` is ``...LayerNorm.weight``, and
    so on. A tensor stored under both names is refused (transformers would keep one of the two, unsaid)."""
    out, keys = {}, {}
    for key, value in tensors.items():
        name = key
        for old, new in LEGACY_NAMES.items():
            name = re.sub(old, new, name)
        if name in out:
            raise ValueError(f"{source}: tensors {keys[name]!r} and {key!r} are both {name!r} (LayerNorm's gamma and "
                             "beta are older names of its weight and bias)")
        out[name], keys[name] = value, key
    return out


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
    """The checkpoint's files: model.safetensors, or the shards an index lists. Not where a PEFT adapter sits beside
    them (adapter_config.json), which sentence-transformers and transformers apply to the model they load."""
    if (folder / "adapter_config.json").is_file():
        raise ValueError(f"{folder / 'adapter_config.json'}: a PEFT adapter, which sentence-transformers and "
                         "transformers apply to the model they load (with the peft package); minibert runs whole "
                         "models: merge the adapter into its model (peft's merge_and_unload) and save that")
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


def stored_dtype(folder: Path, tensors: dict[str, tuple[torch.Tensor, Path]]) -> torch.dtype:
    """The dtype transformers gives a model whose config.json names none: the one a sharded checkpoint's index
    names in its metadata, else that of the first floating-point tensor of the checkpoint's first file (the
    shards in name order, each file's tensors in name order), even where the others are stored in another."""
    index = folder / "model.safetensors.index.json"
    if not (folder / "model.safetensors").is_file() and index.is_file():
        metadata = json.loads(index.read_text(encoding="utf-8")).get("metadata")
        named = declared_dtype({"dtype": metadata.get("dtype")}, f"{index}: metadata") \
            if isinstance(metadata, dict) else None
        if named is not None:
            return named
    first_file = min((file for _, file in tensors.values()), default=None)
    floats = sorted(name for name, (t, file) in tensors.items() if file == first_file and t.is_floating_point())
    return tensors[floats[0]][0].dtype if floats else torch.float32


@dataclass
class LoadReport:
    """What a load did, for the user to read (``BertModel.from_pretrained`` keeps it as ``model.load_report``)."""

    source: str
    loaded: int = 0
    prefix: str = ""
    skipped: list[str] = field(default_factory=list)  # task heads and legacy buffers, on purpose
    computed: list[str] = field(default_factory=list)  # fixed tensors the checkpoint lacks, computed from the config

    def __str__(self) -> str:
        msg = f"loaded {self.loaded} tensors from {self.source}"
        if self.prefix:
            msg += f" (prefix {self.prefix!r})"
        if self.skipped:
            msg += f"; skipped {len(self.skipped)} non-encoder tensors: {', '.join(self.skipped)}"
        if self.computed:
            msg += f"; computed {len(self.computed)} fixed tensors the checkpoint lacks: {', '.join(self.computed)}"
        return msg


def add_fixed(encoder: dict[str, tuple[torch.Tensor, Path]], fixed: dict[str, Callable[[], torch.Tensor]],
              report: LoadReport, config_file: Path) -> None:
    """Put in ``encoder`` each tensor of ``fixed`` (checkpoint name -> how to compute a tensor the config
    determines, like DistilBERT's sinusoidal positions) that the checkpoint lacks, computed as transformers
    computes it, and report it. One the checkpoint holds is read from it, as there."""
    for key, compute in fixed.items():
        if key not in encoder:
            encoder[key] = (compute(), config_file)
            report.computed.append(key)


def split_encoder_tensors(tensors: dict[str, tuple[torch.Tensor, Path]], source: str,
                          model_prefix: str = "bert.") -> tuple[dict[str, tuple[torch.Tensor, Path]], LoadReport]:
    """Strip the model prefix (``bert.`` in BertFor... checkpoints; each family has its own), give legacy names
    their current ones (``current_names``) and set aside task heads and legacy buffers (reported, not loaded)."""
    prefix = model_prefix if any(k.startswith(model_prefix + "embeddings.") for k in tensors) else ""
    report = LoadReport(source=source, prefix=prefix)
    encoder: dict[str, tuple[torch.Tensor, Path]] = {}
    for key, value in current_names(tensors, source).items():
        bare = key[len(prefix):] if key.startswith(prefix) else key
        if bare.endswith(IGNORED_SUFFIXES) or key.startswith(TASK_HEAD_PREFIXES):
            report.skipped.append(key)
        else:
            encoder[bare] = value
    return encoder, report


def has_pooler(encoder_tensors: dict) -> bool:
    return "pooler.dense.weight" in encoder_tensors or "pooler.dense.bias" in encoder_tensors


def check_tensors(found: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str,
                  implied_by: str, files: dict[str, Path] | None = None) -> None:
    """The strict check of every load (encoders and task heads): each expected tensor present, nothing
    else, every shape the one expected. ``source`` names what was read, ``implied_by`` where the
    expectation comes from; ``files`` names the file of each tensor (a sharded checkpoint)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        parts = [f"{what} {len(keys)} tensors: {', '.join(keys[:10])}" + (" ..." if len(keys) > 10 else "")
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise ValueError(f"{source} does not match {implied_by}: " + "; ".join(parts))
    for key, shape in expected.items():
        where = files[key] if files else source
        if tuple(found[key].shape) != tuple(shape):
            raise ValueError(f"{where}: tensor {key} has shape {tuple(found[key].shape)}, "
                             f"but {implied_by} implies {tuple(shape)}")
        if not found[key].is_floating_point():
            raise ValueError(f"{where}: tensor {key} holds {str(found[key].dtype).removeprefix('torch.')} values, "
                             "where a weight needs floating-point ones")


def convert_state_dict(encoder: dict[str, tuple[torch.Tensor, Path]], report: LoadReport, key_map: dict[str, str],
                       model_shapes: dict[str, tuple[int, ...]],
                       config_source: str = "the config") -> dict[str, torch.Tensor]:
    """Map checkpoint keys to minibert names through ``key_map`` (minibert name -> checkpoint key), strictly:
    every key of the map present, nothing extra, and every tensor the shape the model (``model_shapes``:
    minibert name -> shape) expects. ``config_source`` names the config file, for the errors."""
    prefix = report.prefix
    expected = {prefix + theirs: model_shapes[ours] for ours, theirs in key_map.items()}
    files = sorted({str(f) for _, f in encoder.values()})
    check_tensors({prefix + k: t for k, (t, _) in encoder.items()}, expected,
                  files[0] if len(files) == 1 else report.source, config_source,
                  {prefix + k: f for k, (_, f) in encoder.items()})
    state = {ours: encoder[theirs][0] for ours, theirs in key_map.items()}
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


def hf_tensors(model, prefix: str = "") -> dict[str, torch.Tensor]:
    """A ``BertModel``'s tensors under Hugging Face's key names (bare, as transformers' BertModel saves
    them, or under ``prefix``), a fast model's fused QKV split back into three. Every writer of an encoder
    (``save_pretrained``, ``save_cross_encoder``, ``MultiTaskModel.save``, the sentence-transformers
    export) takes its tensors from here."""
    if getattr(model, "path", "") == "int8":
        raise ValueError("an int8 model holds quantized copies of its weights and cannot be saved: save the "
                         "float model it came from")
    key_map = model.key_map(model.config, model.pooler is not None)
    state = split_qkv(model.state_dict())
    unknown = [name for name in state if name not in key_map]
    if unknown:
        raise ValueError(f"{type(model).__name__} cannot be saved in the Hugging Face layout: {unknown[0]} has no "
                         f"name there")
    return {prefix + key_map[name]: t for name, t in state.items()}


def save_tensors(tensors: dict[str, torch.Tensor], file: str | Path) -> None:
    """The one writer of safetensors files: every tensor detached, contiguous, on the CPU."""
    save_file({k: t.detach().contiguous().cpu() for k, t in tensors.items()}, str(file), metadata={"format": "pt"})


def save_pretrained(model, folder: str | Path) -> None:
    """Write a ``BertModel`` of any family, on any float path, as config.json + model.safetensors in its
    Hugging Face layout (what transformers' AutoModel loads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors(model)
    model.config.save_json(folder / "config.json")
    save_tensors(tensors, folder / "model.safetensors")

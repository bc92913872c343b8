"""Execution paths: the same weights, run four ways, and the one place that builds each.

    reference   minibert/model.py as written: the readable BERT on padded (B, L) batches
    fast        paths/fast.py: padding removed, fused QKV, the CPU's fastest linear kernel (kernels.py, its
                weights' packed forms kept in weight_forms.py) and attention (attention_kernels.py), the
                choices carried between processes (choices.py)
    int8        paths/int8.py: the fast path with int8 linear layers, one scale per token (CPU, float32, inference)
    compiled    paths/compiled.py: the reference under torch.compile (CUDA: length buckets, CUDA graphs)

``convert(model, path)`` is the only code that builds a twin on another path. A twin

- has a copy of the config, so that changing one model's dropout leaves the other's alone;
- keeps every parameter's ``requires_grad``, the device, the dtype and train/eval mode;
- shares every tensor with the model it came from but a fused QKV: on the fast path Q, K and V are
  one new tensor (a copy of the three); going back, the three are views of the fused one. So a twin
  is cheap to make, and after training either model, convert again rather than using the other (it
  would see the new values of every shared tensor but not of the copied QKV). An int8 twin holds
  quantized copies of its linear layers.

``keep_freed_memory`` (``allocator.py``) makes the C library keep freed memory for the next batch: a setting of
the whole process, which the command line's encoding commands make on the CPU and a program makes by calling it.

``default_path`` is what ``encode``, the command line and training run unless told otherwise: the
fastest path that the tests have held to the reference path, to float rounding, on that device.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil

import torch

from minibert.model import BertModel
from minibert.paths.allocator import keep_freed_memory as keep_freed_memory  # for a program to call
from minibert.paths.compiled import CompiledBertModel
from minibert.paths.fast import FastBertModel
from minibert.paths.int8 import quantize_int8
from minibert.weights import QKV, fuse_qkv, split_qkv

PATHS = ("reference", "fast", "int8", "compiled")
PATH_CLASSES = {"fast": FastBertModel, "int8": FastBertModel, "compiled": CompiledBertModel}


def family_of(model: BertModel) -> type[BertModel]:
    """The reference class a model is a twin of: BertModel, or a family (minibert/families)."""
    paths = tuple(PATH_CLASSES.values())
    return next(c for c in type(model).__mro__ if issubclass(c, BertModel) and not issubclass(c, paths))


@functools.cache
def twin_class(path: str, family: type[BertModel]) -> type[BertModel]:
    """The class of a family's model on a path: the path's forward over the family's modules (for MPNet on
    the fast path, ``FastMPNetModel(FastBertModel, MPNetModel)``; for BERT, FastBertModel itself)."""
    if path == "reference":
        return family
    base = PATH_CLASSES[path]
    if family is BertModel:
        return base
    name = base.__name__.removesuffix("BertModel") + family.__name__
    return type(name, (base, family), {"__module__": __name__, "__doc__": f"{family.__name__} on the {path} path."})


# The devices where the fast path is the default: those where the tests that hold it to the reference
# have run since the fast path last changed. CUDA joins when a GPU run of scripts/gpu_check.sh shows it.
FAST_BY_DEFAULT = ("cpu",)


def default_path(device: str | torch.device) -> str:
    """"fast" where the tests holding it to the reference have run since it last changed (the CPU);
    "reference" elsewhere: on CUDA (with SDPA's fused attention) until a GPU run checks the reworked fast
    path there, and on other devices (MPS, ...), where nothing has checked it."""
    return "fast" if torch.device(device).type in FAST_BY_DEFAULT else "reference"


def has_cpp_compiler() -> bool:
    return any(shutil.which(c) for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c)


def check_path(path: str, device: str | torch.device, dtype: torch.dtype, training: bool = False) -> None:
    """Every refusal rule of the paths, in one place: a ValueError that says why and what to use instead."""
    device = torch.device(device)
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if path == "int8" and (device.type != "cpu" or dtype != torch.float32):
        raise ValueError(f"path 'int8' runs on the CPU in float32, not {str(dtype).removeprefix('torch.')} on "
                         f"{device} (drop the device/dtype, or use path 'fast')")
    if path == "int8" and training:
        raise ValueError("path 'int8' is for inference (quantized copies of the weights): train on 'fast' or "
                         "'reference', then encode the trained model on 'int8'")
    if path == "compiled" and device.type == "cpu" and not has_cpp_compiler():
        raise ValueError("path 'compiled' on the CPU needs a C++ compiler (torch.compile writes C++): "
                         "install g++, or use path 'fast'")


def reference_names(name: str) -> list[str]:
    """A parameter's name(s) on the reference path: a fused ``attention.qkv`` is query, key and value."""
    prefix, _, kind = name.rpartition(".")
    if prefix.endswith(".attention.qkv"):
        head = prefix.removesuffix(".qkv")
        return [f"{head}.{which}.{kind}" for which in QKV]
    return [name]


def requires_grad_flags(model: BertModel) -> dict[str, bool]:
    """reference parameter name -> requires_grad."""
    return {ref: p.requires_grad for name, p in model.named_parameters() for ref in reference_names(name)}


def convert(model: BertModel, path: str, *, cuda_graphs: bool | None = None, bucket: int | None = None) -> BertModel:
    """``model`` on ``path`` (the model itself when it is on that path already).

    Compiled path: ``cuda_graphs`` records CUDA graphs on CUDA (default) or not; ``bucket`` pads lengths
    up to a multiple of it (default 32 on CUDA, where graphs need fixed shapes; on the CPU none, with
    dynamic shapes)."""
    p = next(model.parameters())
    check_path(path, p.device, p.dtype)
    if path == model.path:
        return model
    if model.path == "int8":
        raise ValueError("an int8 model holds quantized copies of the weights: convert the float model it came from")
    state = split_qkv(model.state_dict())  # reference names, the same tensors
    flags = requires_grad_flags(model)
    options = {}
    if path == "compiled":
        graphs = p.is_cuda and cuda_graphs is not False
        if bucket is None:
            bucket = 32 if p.is_cuda else None
        options = {"bucket": bucket, "mode": "reduce-overhead" if graphs else None}
    with torch.device("meta"):  # no initialisation: every tensor comes from `model`
        twin = twin_class(path, family_of(model))(copy.deepcopy(model.config), add_pooler=model.pooler is not None,
                                  attn_implementation=model.attn_implementation, **options)
    twin.load_state_dict(fuse_qkv(state) if path in ("fast", "int8") else state, strict=True, assign=True)
    for name, param in twin.named_parameters():
        wanted = {flags[ref] for ref in reference_names(name)}
        if len(wanted) > 1:
            raise ValueError(f"{name}: query, key and value must be all frozen or all trainable to be fused")
        param.requires_grad_(wanted.pop())
    if hasattr(model, "load_report"):
        twin.load_report = model.load_report
    twin.checkpoint = model.checkpoint  # the same weights: the same checkpoint's
    twin.train(model.training)
    return quantize_int8(twin) if path == "int8" else twin


def cast(model: BertModel, dtype: torch.dtype) -> BertModel:
    """A twin of ``model`` on its path that computes in ``dtype``: copies of its tensors in that dtype, so that
    the model itself keeps its own (``encode(dtype=...)`` runs one call this way). The model itself when it
    has that dtype already."""
    p = next(model.parameters())
    if p.dtype == dtype:
        return model
    check_path(model.path, p.device, dtype)
    if model.path == "int8":
        raise ValueError("an int8 model holds quantized copies of the weights: cast the float model it came from")
    reference = convert(model, "reference")  # the same tensors, under the reference's names
    with torch.device("meta"):
        twin = family_of(model)(copy.deepcopy(model.config), add_pooler=model.pooler is not None,
                                attn_implementation=model.attn_implementation)
    state = {k: t.to(dtype) if t.is_floating_point() else t for k, t in reference.state_dict().items()}
    twin.load_state_dict(state, strict=True, assign=True)
    twin.train(model.training)
    return convert(twin, model.path)

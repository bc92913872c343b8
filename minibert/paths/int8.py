"""The int8 path: the fast path with dynamic int8 linear layers, for CPU inference.

Each weight is stored as int8 with one scale per output row; each input is quantized on the fly with
one scale per batch (PyTorch's dynamic quantization). The layers named in ``keep_float`` stay float:
by default the feed-forward output, whose input (GELU outputs over 4x the width) has outliers that one
scale per batch quantizes badly (``experiments/int8/``). Build it with
``minibert.paths.convert(model, "int8")``; it holds quantized copies, so it cannot be trained or saved.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from minibert.paths.fast import FastBertModel

KEEP_FLOAT = ("ffn_out",)


def quantize_int8(model: FastBertModel, keep_float: tuple[str, ...] = KEEP_FLOAT) -> FastBertModel:
    """``model``'s linear layers swapped, in place, for dynamic int8 ones (but those whose name ends with
    one of ``keep_float``); the model is marked as being on the int8 path."""
    p = next(model.parameters())
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise ValueError(f"int8 quantization starts from a float32 CPU model, not {p.dtype} on {p.device}")
    for name, parent in list(model.named_modules()):
        for child_name, child in parent.named_children():
            if not isinstance(child, nn.Linear) or f"{name}.{child_name}".endswith(keep_float or ("\0",)):
                continue
            plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            plain.load_state_dict(child.state_dict())
            plain.qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            with warnings.catch_warnings():  # torch points to torchao, which minibert does not depend on
                warnings.simplefilter("ignore")
                quantized = torch.ao.nn.quantized.dynamic.Linear.from_float(plain)
            gelu = getattr(child, "gelu", None)  # a FastLinear's fused GELU comes out as its own module
            setattr(parent, child_name, quantized if gelu is None else nn.Sequential(quantized, nn.GELU(gelu)))
    model.path = "int8"
    return model.eval()

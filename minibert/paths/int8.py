"""The int8 path: the fast path with every linear layer (the pooler's too) as an int8 product, for CPU inference.

An int8 linear layer computes x W^T in integers and scales the result back:

- **Weights**: int8, with one scale per output row (the row's largest |w| maps to 127), made once.
- **Inputs**: quantized on the fly, with one scale per *token* (row of the packed (T, C) input): the
  row's largest |x| maps to 127. A transformer's activations have a few outlier values; with one scale
  for the whole batch (PyTorch's dynamic quantization, ONNX Runtime's), one outlier token coarsens
  every other token's grid; per token it costs precision in its own row only. The feed-forward output
  layer's input, GELU's output, is far from symmetric (>= -0.17): there the row's [min, max] maps onto
  -128..127 (a scale and an offset per token), which keeps all 8 bits.
- **Smoothing** (SmoothQuant, Xiao et al., 2023) for the layers fed by a LayerNorm (qkv, ffn_in): there a
  few *channels* are outliers in every token. Channel j of the input is divided by
  s_j = sqrt(max|x_j| / max|W[:, j]|) and column j of the weight multiplied by it (the product is the
  same), which moves part of the channel's range into the weights, where each output row has its own
  scale. max|x_j| is measured once, on a forward pass over random token ids: which channels are
  outliers is a property of the weights, not of the text (``experiments/int8/`` compares with real text).
- **The product** acc = q_x @ q_W is exact (``int8_kernels.int8_product``: oneDNN's int8 linear on the CPU's
  int8 units where it is exact, else ``torch._int_mm`` or the integers multiplied in float32, by speed);
  then, in float32,
  y = (scale_w * acc) * scale_x + bias, or with an offset y = (scale_w * acc) * scale_x + (128 scale_x +
  low_x) * (scale_w * sum_k q_W) + bias. (oneDNN multiplies by scale_w inside its kernel, at no extra pass
  over the output.)

The scheme was chosen on dev sets (``experiments/int8/``). Build it with ``minibert.paths.convert(model,
"int8")``; it holds quantized copies of the weights, so it cannot be trained or saved.
"""

from __future__ import annotations

import torch
from torch import nn

from minibert.paths.fast import FastBertModel
from minibert.paths.int8_kernels import int8_product, pack_int8_weight
from minibert.paths.onednn import with_gelu

TINY = torch.finfo(torch.float32).tiny
SMOOTHING = 0.5  # SmoothQuant's alpha: s_j = max|x_j|^alpha / max|W[:, j]|^(1 - alpha)
SMOOTHED = (".qkv", ".ffn_in")  # the layers fed by a LayerNorm, whose outlier channels smoothing moves


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (q, scale) with x ~ q * scale; the row's largest |x| maps to 127."""
    scale = x.abs().amax(dim=-1, keepdim=True).div_(127).clamp_(min=TINY)
    return x.mul(scale.reciprocal()).round_().to(torch.int8), scale


def quantize_rows_with_offset(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int8 per row: (q, scale, low) with x ~ scale * (q + 128) + low; [min, max] -> -128..127."""
    low, high = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)  # (torch.aminmax is slower)
    scale = (high - low).div_(255).clamp_(min=TINY)
    return (x - low).mul_(scale.reciprocal()).sub_(128).round_().to(torch.int8), scale, low


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (a scale per output row) and int8 inputs (a scale per token, and an
    offset per token when ``offset``), its input channels divided by ``smooth`` first when given."""

    takes_residual = True  # forward(x, residual=...), as FastLinear's

    def __init__(self, linear: nn.Linear, gelu: str | None = None, smooth: torch.Tensor | None = None,
                 offset: bool = False) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        weight = weight if smooth is None else weight * smooth  # column j times s_j, input channel j over s_j
        weight, weight_scale = quantize_rows(weight)
        self.in_features, self.out_features, self.offset = linear.in_features, linear.out_features, offset
        self.register_buffer("weight_t", weight.t().contiguous())  # (in, out): the layout the product wants
        # the same weight in the form the int8 kernel chosen here takes (oneDNN's layout, float32, or None): made
        # once, from weight_t as it is now (an int8 layer is built from a float one, never loaded or changed in place)
        self.packed = pack_int8_weight(self.weight_t)
        self.register_buffer("weight_scale", weight_scale.squeeze(1))  # (out,)
        weight_sum = weight.sum(1, dtype=torch.int32).float() * self.weight_scale if offset else None
        self.register_buffer("weight_sum", weight_sum)  # (out,) scale_w * sum_k q_W, for the offset's share
        bias = linear.bias.detach().float().clone() if linear.bias is not None else torch.zeros(self.out_features)
        self.register_buffer("bias", bias)
        self.register_buffer("inverse_smooth", None if smooth is None else smooth.reciprocal())
        self.gelu = gelu  # a FastLinear's fused GELU, applied after the product

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output, plus ``residual`` when given (residual + y, added in place)."""
        shape = x.shape
        x = x.reshape(-1, self.in_features)
        if self.inverse_smooth is not None:
            x = x * self.inverse_smooth
        if self.offset:
            q, scale, low = quantize_rows_with_offset(x)
        else:
            q, scale = quantize_rows(x)
        # scale_w * sum_k q_x q_W (the weight's scale applied with the product, inside oneDNN's kernel), then
        # times scale_x: in place, one pass each
        acc = int8_product(q, self.weight_t, self.packed, self.weight_scale).mul_(scale)
        if self.offset:
            acc.addcmul_(scale.mul(128).add_(low), self.weight_sum)  # + (128 scale_x + low_x) * scale_w sum_k q_W
        y = with_gelu(acc.add_(self.bias).view(*shape[:-1], self.out_features), self.gelu)
        return y if residual is None else y.add_(residual)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, gelu={self.gelu}, " \
               f"smoothed={self.inverse_smooth is not None}, offset={self.offset}"


def random_ids(config, rows: int = 32, length: int = 24) -> torch.Tensor:
    """Random token ids, the same every time, without the padding id."""
    ids = torch.randint(0, config.vocab_size, (rows, length), generator=torch.Generator().manual_seed(0))
    if config.pad_token_id is not None:
        pad = config.pad_token_id % config.vocab_size
        ids[ids == pad] = (pad + 1) % config.vocab_size
    return ids


@torch.no_grad()
def input_ranges(model: FastBertModel, layers: dict[str, nn.Linear], ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """max |x_j| of each input channel of ``layers`` (name -> layer), over one forward pass of ``model`` on
    ``ids`` (a (B, L) batch without padding)."""
    ranges, hooks = {}, []
    for name, layer in layers.items():
        def record(module, inputs, output, name=name):
            ranges[name] = inputs[0].abs().reshape(-1, inputs[0].shape[-1]).amax(0)
        hooks.append(layer.register_forward_hook(record))
    try:
        model.eval()(ids)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def quantize_int8(model: FastBertModel, keep_float: tuple[str, ...] = (), smoothing: float = SMOOTHING,
                  calibration: torch.Tensor | None = None, smoothed: tuple[str, ...] = SMOOTHED) -> FastBertModel:
    """``model``'s linear layers swapped, in place, for int8 ones (but those whose name ends with one of
    ``keep_float``), those whose name ends with one of ``smoothed`` smoothed (``smoothing``: SmoothQuant's
    alpha, 0 for none) by channel ranges measured on ``calibration`` token ids ((B, L), no padding; by
    default random ids); the model is marked as being on the int8 path."""
    p = next(model.parameters())
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise ValueError(f"int8 quantization starts from a float32 CPU model, not {p.dtype} on {p.device}")
    linears = {f"{name}.{child_name}": (parent, child_name, child) for name, parent in model.named_modules()
               for child_name, child in parent.named_children()
               if isinstance(child, nn.Linear) and not f"{name}.{child_name}".endswith(keep_float or ("\0",))}
    to_smooth = {name: child for name, (_, _, child) in linears.items() if name.endswith(smoothed or ("\0",))}
    ids = random_ids(model.config) if calibration is None else calibration
    ranges = input_ranges(model, to_smooth, ids) if smoothing else {}
    for name, (parent, child_name, child) in linears.items():
        smooth = None
        if name in ranges:
            column_max = child.weight.detach().abs().amax(0).clamp(min=1e-5)  # no channel divided by ~0
            smooth = ranges[name].clamp(min=1e-5) ** smoothing / column_max ** (1 - smoothing)
        offset = name.endswith(".ffn_out")  # its input is GELU's output, >= -0.17: far from symmetric
        setattr(parent, child_name, Int8Linear(child, getattr(child, "gelu", None), smooth, offset))
    model.path = "int8"
    return model.eval()

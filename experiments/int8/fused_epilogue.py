"""What would one input scale per batch for the LayerNorm-fed layers buy the int8 path?

With a scale per token (``minibert.paths.int8``) the int8 product comes out of oneDNN's kernel scaled by the
weight's scale only; the token's scale, the bias and (for ffn_in) GELU are three more passes over the output.
With one scale for the whole batch, oneDNN's int8 linear takes all of them inside its kernel. The LayerNorm-fed
layers (qkv, ffn_in) are where that is most likely to hold accuracy: their inputs are normalised rows, smoothed.
This swaps those two layers for that form (the others stay per token) and measures both sides: STS-B dev
(Spearman, each embedding's cosine to float32) and the speed of an STS-B test encode, against the int8 path
and fast bf16, alternating rounds in one process.

    python experiments/int8/fused_epilogue.py      # needs oneDNN's int8 kernel
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from minibert import SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.paths import keep_freed_memory
from minibert.paths.int8 import TINY, Int8Linear
from minibert.paths.int8_kernels import QLINEAR_OPS, int8_kernel

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_encode import cosine_rows, sts_spearman  # noqa: E402  (scripts/, put on the path above)
from timing import alternating_rounds  # noqa: E402


class PerBatchFused(torch.nn.Module):
    """An ``Int8Linear`` whose input has one scale for the whole batch: oneDNN's kernel applies it, the weight's
    scales, the bias and the GELU."""

    def __init__(self, layer: Int8Linear) -> None:
        super().__init__()
        self.layer = layer
        self.zero_point = torch.tensor(128)
        self.gelu = ("gelu", layer.gelu) if layer.gelu else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer, shape = self.layer, x.shape
        x = x.reshape(-1, layer.in_features) * layer.inverse_smooth
        # (the largest |x| of every row the layer runs on: on a batch that keeps its grid, the padding's too)
        scale = x.abs().amax().div_(127).clamp_(min=TINY)
        unsigned = x.mul(scale.reciprocal()).round_().to(torch.int8).view(torch.uint8).bitwise_xor(128)
        weight, _, zeros = layer.packed
        post_op, algorithm = self.gelu
        y = QLINEAR_OPS_TENSOR(unsigned, scale, self.zero_point, weight, layer.weight_scale, zeros, layer.bias,
                               1.0, 0, torch.float32, post_op, [], algorithm)
        return y.view(*shape[:-1], layer.out_features)


QLINEAR_OPS_TENSOR = getattr(torch.ops.onednn.qlinear_pointwise, "tensor", None) if QLINEAR_OPS else None


def fused_twin(encoder: SentenceEncoder) -> SentenceEncoder:
    twin = encoder.to_path("int8")  # a new int8 model, its qkv and ffn_in then swapped
    for module in list(twin.bert.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, Int8Linear) and child.inverse_smooth is not None:
                setattr(module, child_name, PerBatchFused(child))
    return twin


def main() -> None:
    if QLINEAR_OPS_TENSOR is None or int8_kernel() != "onednn":
        sys.exit("this CPU or torch build does not run oneDNN's int8 linear: nothing to compare")
    keep_freed_memory()
    data = Path(default_data_dir())
    dev = read_sts_tsv(data / "stsb" / "dev.tsv")
    dev_sentences, gold = [p.a for p in dev] + [p.b for p in dev], np.array([p.label for p in dev])
    test = read_sts_tsv(data / "stsb" / "test.tsv")
    test_sentences = [p.a for p in test] + [p.b for p in test]
    fp32 = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    encoders = {"int8 (per token)": fp32.to_path("int8"), "int8, qkv and ffn_in per batch, fused": fused_twin(fp32),
                "fast bf16": fp32.in_dtype(torch.bfloat16)}
    reference = fp32.encode(dev_sentences)
    print(f"STS-B dev: float32 Spearman {sts_spearman(reference, gold):.4f}")
    for name, encoder in encoders.items():
        emb = encoder.encode(dev_sentences)
        cos = cosine_rows(emb, reference)
        print(f"{name:40} Spearman {sts_spearman(emb, gold):.4f}  cosine to float32: min {cos.min():.4f}, "
              f"mean {cos.mean():.5f}")
    times = alternating_rounds({name: lambda e=encoder: e.encode(test_sentences) for name, encoder in encoders.items()},
                               rounds=7)
    rates = {name: len(test_sentences) / float(np.median(t)) for name, t in times.items()}
    print(f"STS-B test encode ({len(test_sentences)} sentences, batch 32, {torch.get_num_threads()} threads), "
          "medians of 7 alternating rounds:")
    for name, rate in rates.items():
        print(f"{name:40} {rate:8.1f} sentences/s  ({rate / rates['fast bf16']:.2f}x fast bf16)")


if __name__ == "__main__":
    main()

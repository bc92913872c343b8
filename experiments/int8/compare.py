"""Which linear layers to quantize to int8, chosen on STS-B dev.

Dynamic int8 quantizes each layer's input with one scale per batch, so a layer whose inputs have a few
large channels loses the small ones. Compared here, by the STS-B dev Spearman of the cosine scores and
by the cosine of each embedding to the float32 one:
- every linear layer int8;
- one kind of layer kept float (ffn_out, attention_out, qkv, ffn_in), or two;
- a data-free SmoothQuant: each channel j of a LayerNorm'd input is divided by
  s_j = a_j^alpha / w_j^(1 - alpha) and the weight's column multiplied by it, with a_j estimated from
  the LayerNorm as k * |gamma_j| + |beta_j| and w_j the column's largest weight.

    python experiments/int8/compare.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minibert import SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.metrics import spearman
from minibert.paths import convert
from minibert.paths.fast import FastBertModel
from minibert.paths.int8 import quantize_int8


class Scale(nn.Module):
    def __init__(self, factor: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("factor", factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@torch.no_grad()
def smoothed(bert: FastBertModel, alpha: float, k: float) -> FastBertModel:
    bert = copy.deepcopy(bert)
    norms = [bert.embeddings.norm] + [b.ffn_norm for b in bert.blocks]  # what feeds each block's qkv
    for i, block in enumerate(bert.blocks):
        for owner, attr, norm in ((block.attention, "qkv", norms[i]), (block, "ffn_in", block.attention_norm)):
            linear = getattr(owner, attr)
            a = norm.weight.abs() * k + norm.bias.abs()
            s = (a ** alpha / linear.weight.abs().amax(0) ** (1 - alpha)).clamp(min=1e-5)
            linear.weight.mul_(s)
            setattr(owner, attr, nn.Sequential(Scale(1 / s), linear))
    return bert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir())
    args = parser.parse_args()
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "dev.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    gold = np.array([p.label for p in pairs])
    encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2", path="reference")
    reference = encoder.encode(sentences)
    fast = convert(encoder.bert, "fast")

    def quantized(keep_float: tuple[str, ...], bert: FastBertModel | None = None) -> FastBertModel:
        return quantize_int8(copy.deepcopy(bert or fast), keep_float=keep_float)  # in place: on a copy

    candidates = {"float32 (fast path)": fast, "all int8": quantized(())}
    for keep in (("ffn_out",), ("attention_out",), ("qkv",), ("ffn_in",), ("ffn_out", "attention_out")):
        candidates[f"int8, {' + '.join(keep)} float"] = quantized(keep)
    for alpha in (0.5, 0.8):
        for k in (1.0, 4.0):
            candidates[f"all int8, smoothed a={alpha} k={k:g}"] = quantized((), smoothed(fast, alpha, k))

    print(f"STS-B dev, {len(sentences)} sentences")
    print(f"{'':38}{'Spearman':>10}{'cos min':>9}{'cos mean':>10}{'sent/s':>8}")
    for name, bert in candidates.items():
        model = SentenceEncoder(bert, encoder.tokenizer, encoder.pooling, encoder.normalize).eval()
        start = time.perf_counter()
        emb = model.encode(sentences)
        rate = len(sentences) / (time.perf_counter() - start)
        a, b = emb[: len(pairs)], emb[len(pairs):]
        rho = spearman((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1), gold)
        cos = (emb * reference).sum(1)  # both unit vectors
        print(f"{name:38}{rho:10.4f}{cos.min():9.4f}{cos.mean():10.4f}{rate:8.0f}")


if __name__ == "__main__":
    main()
